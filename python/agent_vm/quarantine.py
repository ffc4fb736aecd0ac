"""The quarantine: the one place the host reads a workspace.

A workspace is written by the guest, including its `.git`: git executes
commands named in a repository's own config (core.fsmonitor, filters,
hooks, pagers, diff drivers…), follows `gitdir:` files and alternates, and
runs a child git inside every submodule it looks at. So no host process
ever runs git *in* a workspace. Instead each VM has a private git directory
in its state dir (`<vm>/quarantine/git`), made and configured by agent-vm
only, and everything git needs from the workspace is brought in as data:

* objects: loose objects are copied after checking that their content
  hashes to their name; packs are streamed through `git index-pack` in the
  quarantine, which verifies every object and writes its own index;
* refs, HEAD, reflogs, shallow: parsed here (`gitdata`), only well-formed
  ids and ref names are kept; nothing is written back into the workspace;
* the work tree: read by the quarantine's git through `--work-tree` with a
  private temporary index built from the workspace's HEAD (the guest's
  index is never read), so "uncommitted" is work tree vs HEAD.

Every file of the workspace's `.git` is opened without following links
(O_NOFOLLOW, relative to a directory opened the same way), so a `.git`, a
`.git/objects` or a `.git/refs` that is a symbolic link or a `gitdir:` file
is refused, never followed. Every git run here has a scrubbed environment
(`env -i`: no inherited GIT_*, no system or global config, an empty HOME)
and the settings in `SETTINGS` on its command line.

Where the objects and refs come from is a `Source` (`source_for` picks it):
`ShareSource` reads the shared workspace directory; `BundleSource` takes a
bundle the guest made of a workspace on its own disk (`--workspace-mode
disk`; guestbundle.py carries it over SSH); `RecordedSource` is what that
bundle said when the VM was suspended.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from . import gitdata, gitops, guestbundle, snapshot, state, store, tools
from .errors import GitError, NotRunning
from .fsutil import ensure_private_dir, file_lock
from .models import VmConfig, VmState, WorkspaceMode
from .paths import VmPaths

# Settings on every quarantine git's command line. They win over any
# config file; the quarantine's own config holds the same values. (No
# external diff or textconv exists without config; every diff is run with
# --no-ext-diff --no-textconv as well.)
SETTINGS = (
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "core.pager=cat",
    "core.untrackedCache=false",
    "core.attributesFile=/dev/null",
    "core.excludesFile=/dev/null",
    "core.autocrlf=false",
    "core.symlinks=true",
    "core.quotePath=true",
    "protocol.allow=never",
    "submodule.recurse=false",
    "diff.submodule=short",
    "status.submoduleSummary=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "commit.gpgSign=false",
    "advice.addEmbeddedRepo=false",
)

# Never an external diff, a textconv driver or a child git in a submodule.
SAFE_DIFF = ("--no-ext-diff", "--no-textconv", "--no-color", "--submodule=short")

# A guest can make a git command wait on a FIFO or read a huge file: bound
# every run rather than hang destroy.
GIT_TIMEOUT = 600.0

# What one file of a workspace's .git may weigh before we refuse to read it.
SMALL_FILE = 64 * 1024
LIST_FILE = 256 * 1024 * 1024
# How many entries a walk of refs/ or logs/ may meet.
MAX_ENTRIES = 1_000_000

COPY_CHUNK = 1 << 20


class Unreadable(Exception):
    """A piece of the workspace cannot be read as data (a link, a gitdir:
    file, a missing or malformed piece); `opened` reports it as a GitError."""


@dataclass(frozen=True)
class Quarantine:
    """A private git directory and the only way git is run on workspace data."""

    root: Path
    object_format: str = "sha1"

    @property
    def git_dir(self) -> Path:
        return self.root / "git"

    @property
    def home(self) -> Path:
        # HOME and XDG_CONFIG_HOME: an empty directory, so no user config.
        return self.root / "home"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home),
            "GIT_DIR": str(self.git_dir),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_SYSTEM": "/dev/null",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_ATTR_NOSYSTEM": "1",
            "GIT_OPTIONAL_LOCKS": "0",
            "GIT_NO_REPLACE_OBJECTS": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_PROTOCOL_FROM_USER": "0",
            "GIT_PAGER": "cat",
            "PAGER": "cat",
            "LC_ALL": "C",
            "TZ": "UTC",
        }
        env.update(extra or {})
        return env

    def argv(
        self,
        *args: str,
        work_tree: Path | None = None,
        index: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """`env -i` clears everything we inherited; only `env()` remains."""
        extra = dict(env or {})
        if index is not None:
            extra["GIT_INDEX_FILE"] = str(index)
        full = self.env(extra)
        tree = [f"--work-tree={work_tree}"] if work_tree is not None else []
        settings = [a for s in SETTINGS for a in ("-c", s)]
        return [
            "env",
            "-i",
            *(f"{k}={v}" for k, v in full.items()),
            "git",
            f"--git-dir={self.git_dir}",
            *tree,
            *settings,
            *args,
        ]

    def git(
        self,
        *args: str,
        work_tree: Path | None = None,
        index: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdin: IO[bytes] | None = None,
        check: bool = True,
    ) -> tools.Result:
        tools.resolve("git")  # a missing git is MissingTool, not env's exit 127
        res = tools.run(
            self.argv(*args, work_tree=work_tree, index=index, env=env),
            cwd=self.root,
            stdin=stdin,
            check=False,
            timeout=GIT_TIMEOUT,
        )
        if check and not res.ok:
            why = (res.stderr.strip().splitlines() or [f"exit code {res.returncode}"])[-1]
            raise GitError(f"git {args[0]} failed on the workspace's data: {why}")
        return res

    def git_input(self, args: Sequence[str], lines: Sequence[str]) -> tools.Result:
        """Run with `lines` on stdin (ids for --stdin and --batch-check)."""
        with tempfile.TemporaryFile(dir=self.root) as f:
            f.write("".join(f"{line}\n" for line in lines).encode())
            f.seek(0)
            return self.git(*args, stdin=f)

    def ensure(self) -> None:
        """Make the git directory if it is missing (created on first use, so
        VMs made before the quarantine existed get one too)."""
        ensure_private_dir(self.root)
        ensure_private_dir(self.home)
        if (self.git_dir / "HEAD").exists():
            return
        self.git(
            "init", "--quiet", "--bare", "--template=", f"--object-format={self.object_format}"
        )
        with open(self.git_dir / "config", "a") as f:
            f.write("[agent-vm]\n\tnote = made by agent-vm; see quarantine.py\n")
            for setting in SETTINGS:
                key, value = setting.split("=", 1)
                section, name = key.rsplit(".", 1)
                head, _, sub = section.partition(".")
                f.write(f'[{head} "{sub}"]\n' if sub else f"[{head}]\n")
                f.write(f"\t{name} = {value}\n")

    @property
    def objects(self) -> Path:
        return self.git_dir / "objects"

    def has_loose(self, oid: str) -> bool:
        return (self.objects / oid[:2] / oid[2:]).exists()

    def object_types(self, ids: Sequence[str]) -> dict[str, str]:
        """id -> type for the ids present in the quarantine."""
        if not ids:
            return {}
        res = self.git_input(["cat-file", "--batch-check=%(objectname) %(objecttype)"], ids)
        types = {}
        for line in res.stdout.splitlines():
            oid, _, kind = line.partition(" ")
            if kind != "missing" and gitdata.is_object_id(oid, self.object_format):
                types[oid] = kind
        return types

    def peel_commits(self, ids: Sequence[str]) -> dict[str, str]:
        """id -> the commit it is or points at (tags peeled), for those that do."""
        if not ids:
            return {}
        res = self.git_input(
            ["cat-file", "--batch-check=%(objectname) %(objecttype)"],
            [f"{i}^{{commit}}" for i in ids],
        )
        out = {}
        for oid, line in zip(ids, res.stdout.splitlines(), strict=False):
            commit, _, kind = line.partition(" ")
            if kind == "commit":
                out[oid] = commit
        return out

    def tree_of(self, commit: str | None) -> str:
        if commit is None:
            return self.empty_tree()
        return self.git("rev-parse", "--verify", f"{commit}^{{tree}}").stdout.strip()

    def set_shallow(self, ids: set[str]) -> None:
        path = self.git_dir / "shallow"
        present = sorted(i for i, t in self.object_types(sorted(ids)).items() if t == "commit")
        if present:
            path.write_text("".join(f"{i}\n" for i in present))
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def changed_files(self, a: str, b: str) -> list[str]:
        """Paths that differ between two trees."""
        if a == b:
            return []
        res = self.git("diff", *SAFE_DIFF, "--no-renames", "--name-only", "-z", a, b)
        return [n for n in res.stdout.split("\0") if n]

    def empty_tree(self) -> str:
        return self.git("hash-object", "-t", "tree", "/dev/null").stdout.strip()

    def files_tree(self, snap: Snapshot, head: str | None) -> str:
        """The tree of the workspace's files (uncommitted ones too): read
        from its work tree, carried by a bundle, or else HEAD's."""
        if snap.work_tree is not None:
            return self.worktree_tree(snap.work_tree, head)
        return snap.files if snap.files is not None else self.tree_of(head)

    def import_commit(self, repo: Path, commit: str) -> None:
        """`commit` and its tree, without history, from the source repository
        (trusted): the prerequisite of a guest's bundle."""
        if self.object_types([commit]):
            return
        ids = gitops.in_source(
            repo, "rev-list", "--objects", "--no-object-names", "--no-walk", commit
        )
        with tempfile.TemporaryDirectory(dir=self.root) as tmp, tempfile.TemporaryFile() as f:
            f.write(ids.stdout.encode())
            f.seek(0)
            name = gitops.pack_objects(repo, Path(tmp) / "base", f)
            with open(Path(tmp) / f"base-{name}.pack", "rb") as pack:
                self.git("index-pack", "--stdin", stdin=pack)

    def worktree_tree(self, work_tree: Path, head: str | None) -> str:
        """The tree of everything in `work_tree` (tracked or not, ignored files
        left out), built on a temporary index made from `head`.

        git reads the files and `.gitignore`/`.gitattributes` as data: no
        filter or diff driver exists in the quarantine's config.
        """
        fd, name = tempfile.mkstemp(dir=self.root, prefix="index.")
        os.close(fd)
        index = Path(name)
        index.unlink()  # git wants to create it; the name is ours
        try:
            self.git("read-tree", head if head is not None else "--empty", index=index)
            res = self.git("add", "--all", work_tree=work_tree, index=index, check=False)
            if not res.ok:
                why = (res.stderr.strip().splitlines() or ["failed"])[-1]
                raise GitError(f"the workspace's files cannot be read: {why}")
            return self.git("write-tree", index=index).stdout.strip()
        finally:
            with contextlib.suppress(FileNotFoundError):
                index.unlink()


@dataclass
class Snapshot:
    """What a workspace's repository says, as data checked by the quarantine."""

    head: str | None = None  # the commit HEAD names; None: unborn
    head_ref: str | None = None  # the branch HEAD is on; None: detached
    refs: dict[str, str] = field(default_factory=dict)  # full ref name -> id
    reflogs: dict[str, set[str]] = field(default_factory=dict)  # log name -> ids
    worktree_heads: dict[str, str] = field(default_factory=dict)  # linked worktree -> id
    shallow: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)  # what could not be verified
    work_tree: Path | None = None  # where the files are, when there are any
    files: str | None = None  # or the tree of them a bundle carried

    head_missing: bool = False  # HEAD names a commit the objects lack

    def require_head(self) -> str | None:
        """HEAD's commit (None: unborn); GitError when the objects lack it."""
        if self.head_missing:
            raise GitError(
                f"the workspace's HEAD names {self.head}, a commit its repository does not have",
                hint="; ".join(self.problems) or None,
            )
        return self.head

    def all_ids(self) -> list[str]:
        ids = set(self.refs.values()) | set(self.worktree_heads.values())
        for logged in self.reflogs.values():
            ids |= logged
        if self.head is not None:
            ids.add(self.head)
        return sorted(ids)


class Source(Protocol):
    """Where a workspace's objects and refs come from."""

    def load(self, q: Quarantine) -> Snapshot:
        """Bring the objects into `q`; return the refs, parsed as data."""
        ...


class _Dir:
    """A directory opened without following links; children opened the same way."""

    def __init__(self, fd: int, where: str) -> None:
        self.fd = fd
        self.where = where

    @classmethod
    def open(cls, path: Path) -> _Dir:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise Unreadable(f"{path}: {_why(exc, path.is_symlink())}") from None
        return cls(fd, str(path))

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> _Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def kind(self, name: str) -> str | None:
        """'dir', 'file', 'link', 'other' or None (missing), without following."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return "link"
        if stat.S_ISDIR(st.st_mode):
            return "dir"
        return "file" if stat.S_ISREG(st.st_mode) else "other"

    def _open(self, name: str, flags: int) -> int:
        try:
            return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | flags, dir_fd=self.fd)
        except OSError as exc:
            why = _why(exc, self.kind(name) == "link")
            raise Unreadable(f"{self.where}/{name}: {why}") from None

    def sub(self, name: str) -> _Dir:
        return _Dir(self._open(name, os.O_DIRECTORY), f"{self.where}/{name}")

    def open_file(self, name: str) -> int:
        """A regular file's descriptor (O_NONBLOCK: a FIFO cannot make us wait)."""
        fd = self._open(name, os.O_NONBLOCK)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise Unreadable(f"{self.where}/{name}: not a regular file")
        return fd

    def read(self, name: str, limit: int) -> bytes:
        fd = self.open_file(name)
        try:
            if os.fstat(fd).st_size > limit:
                raise Unreadable(f"{self.where}/{name}: larger than {limit} bytes")
            with os.fdopen(fd, "rb", closefd=False) as f:
                return f.read(limit + 1)[:limit]
        finally:
            os.close(fd)

    def entries(self) -> list[str]:
        return sorted(os.listdir(self.fd))


def _why(exc: OSError, is_link: bool) -> str:
    if is_link or exc.errno == errno.ELOOP:
        return "is a symbolic link (never followed)"
    if exc.errno == errno.ENOENT:
        return "is missing"
    if exc.errno == errno.ENOTDIR:
        return "is not a directory"
    return exc.strerror or str(exc)


class ShareSource:
    """The shared workspace directory: `.git` read as data, files via --work-tree."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace

    def load(self, q: Quarantine) -> Snapshot:
        with _Dir.open(self.workspace) as ws:
            dotgit = ws.kind(".git")
            if dotgit == "file":
                raise Unreadable(
                    f"{self.workspace}/.git is a file (a 'gitdir:' link to another "
                    "repository is never followed)"
                )
            with ws.sub(".git") as gd:
                snap = _read_git_dir(gd, q.object_format)
                with gd.sub("objects") as objects:
                    snap.problems += _import_objects(objects, q)
        snap.work_tree = self.workspace
        return snap


class BundleSource:
    """The workspace on the guest's own disk (`--workspace-mode disk`): a
    bundle the guest made (guestbundle.py carries it into `fetch`'s file),
    verified and unpacked by the quarantine's git, its ref list parsed as
    data. The bundle's prerequisite, the base commit, comes from the source
    repository (trusted). The files travel as a commit of the work tree
    (guestbundle.WORKTREE_REF); `refs` keeps the ref list once loaded (what
    a suspend records, see `record`)."""

    def __init__(self, fetch: Callable[[Path], bool], repo: Path, base: str) -> None:
        self.fetch = fetch  # writes the bundle into the file; False: nothing new
        self.repo = repo
        self.base = base
        self.refs: dict[str, str] = {}

    def load(self, q: Quarantine) -> Snapshot:
        q.import_commit(self.repo, self.base)
        bundle = q.root / "guest.bundle"
        bundle.unlink(missing_ok=True)
        try:
            if not self.fetch(bundle):
                return _from_bundle_refs(q, {}, self.base)
            verify = q.git("bundle", "verify", "--quiet", str(bundle), check=False)
            if not verify.ok:
                why = (verify.stderr.strip().splitlines() or ["it does not verify"])[-1]
                raise Unreadable(f"the guest's bundle is refused: {why}")
            listed = q.git("bundle", "unbundle", str(bundle)).stdout
        finally:
            bundle.unlink(missing_ok=True)
        problems: list[str] = []
        for line in listed.splitlines():
            oid, _, name = line.partition(" ")
            if not gitdata.is_object_id(oid, q.object_format):
                problems.append(f"malformed line in the bundle's ref list: {line!r}")
            elif name == "HEAD" or gitdata.is_valid_ref_name(name):
                self.refs[name] = oid
            else:
                problems.append(f"malformed ref {name!r} in the bundle")
        snap = _from_bundle_refs(q, self.refs, self.base)
        snap.problems += problems
        return snap


class RecordedSource:
    """A suspended disk-mode VM: the ref list its guest's bundle gave when it
    was suspended (models.Snapshot.workspace); the objects are in the
    quarantine since. The guest cannot have changed anything since."""

    def __init__(self, refs: Mapping[str, str], repo: Path, base: str) -> None:
        self.refs = dict(refs)
        self.repo = repo
        self.base = base

    def load(self, q: Quarantine) -> Snapshot:
        q.import_commit(self.repo, self.base)
        return _from_bundle_refs(q, self.refs, self.base)


def _from_bundle_refs(q: Quarantine, refs: Mapping[str, str], base: str) -> Snapshot:
    """A bundle's refs as a Snapshot. No refs: nothing beyond the base. A
    bundle names no symbolic HEAD: its branch is the one branch at HEAD's
    commit, if only one is."""
    snap = Snapshot(head=refs.get("HEAD", base if not refs else None))
    for name, oid in refs.items():
        if name == guestbundle.WORKTREE_REF:
            snap.files = q.tree_of(oid)
        elif name.startswith(guestbundle.REFLOG_PREFIX):
            snap.reflogs.setdefault("guest", set()).add(oid)
        elif name != "HEAD":
            snap.refs[name] = oid
    at_head = [n for n, i in snap.refs.items() if n.startswith("refs/heads/") and i == snap.head]
    snap.head_ref = at_head[0] if len(at_head) == 1 else None
    return snap


def source_for(vm: VmPaths, cfg: VmConfig) -> Source:
    """Where this VM's workspace is read from: its shared directory; for a
    disk workspace, the running guest, or what it held when suspended."""
    if cfg.workspace_mode != WorkspaceMode.DISK:
        return ShareSource(Path(cfg.workspace))
    rt = store.load_runtime(vm)
    if rt.state == VmState.RUNNING and state.alive(rt, vm.dir):
        return _from_the_guest(vm, cfg, rt.ssh_port or cfg.ssh_port)
    if rt.state == VmState.SUSPENDED and snapshot.exists(vm):
        recorded = snapshot.load(vm).workspace
        if recorded is not None:
            return RecordedSource(recorded, Path(cfg.repo), cfg.commit)
    raise NotRunning(
        f"VM {vm.name} is {rt.state.value}, and its workspace is on its own disk, "
        "which agent-vm reads only through the running guest",
        hint=f"'agent-vm start {vm.name}' first",
    )


def _from_the_guest(vm: VmPaths, cfg: VmConfig, port: int) -> BundleSource:
    return BundleSource(
        lambda dest: guestbundle.fetch(vm, cfg, port, dest), Path(cfg.repo), cfg.commit
    )


def record(vm: VmPaths, lock: Path, cfg: VmConfig, port: int) -> dict[str, str]:
    """Read a running disk-mode VM's workspace (SSH on `port`) into its
    quarantine and return the bundle's ref list, for the snapshot a suspend
    is about to take."""
    source = _from_the_guest(vm, cfg, port)
    with opened(vm, lock, cfg, source):
        return dict(source.refs)


def _read_git_dir(gd: _Dir, fmt: str) -> Snapshot:
    for pointer in ("commondir", "reftable"):
        if gd.kind(pointer) is not None:
            raise Unreadable(f"{gd.where}/{pointer} exists: its refs are kept elsewhere")
    snap = Snapshot()
    head = gitdata.parse_ref_file(gd.read("HEAD", SMALL_FILE), fmt)
    if head is None:
        raise Unreadable(f"{gd.where}/HEAD is malformed")
    if gd.kind("packed-refs") is not None:
        packed = gitdata.parse_packed_refs(gd.read("packed-refs", LIST_FILE), fmt)
        snap.refs.update(packed.refs)
        if packed.rejected:
            snap.problems.append(f"{packed.rejected} malformed line(s) in packed-refs")
    symrefs: dict[str, str] = {}
    with gd.sub("refs") as refs:
        for name, data in _walk(refs, "refs", snap.problems):
            value = gitdata.parse_ref_file(data, fmt)
            if value is None or not gitdata.is_valid_ref_name(name):
                snap.problems.append(f"malformed ref {name!r}")
            elif isinstance(value, gitdata.SymRef):
                symrefs[name] = value.target
            else:
                snap.refs[name] = value
    if isinstance(head, gitdata.SymRef):
        snap.head_ref = head.target
        snap.head = _resolve(head.target, snap.refs, symrefs)
    else:
        snap.head = head
    _read_logs(gd, snap, fmt)
    if gd.kind("shallow") is not None:
        snap.shallow, bad = gitdata.parse_id_list(gd.read("shallow", LIST_FILE), fmt)
        if bad:
            snap.problems.append(f"{bad} malformed line(s) in shallow")
    if gd.kind("worktrees") is not None:
        _read_worktrees(gd, snap, fmt, symrefs)
    return snap


def _resolve(target: str, refs: dict[str, str], symrefs: dict[str, str]) -> str | None:
    for _ in range(5):
        if target in refs:
            return refs[target]
        if target not in symrefs:
            return None
        target = symrefs[target]
    return None


def _read_logs(gd: _Dir, snap: Snapshot, fmt: str) -> None:
    if gd.kind("logs") is None:
        return
    with gd.sub("logs") as logs:
        if logs.kind("HEAD") is not None:
            _add_log(snap, "HEAD", logs.read("HEAD", LIST_FILE), fmt)
        if logs.kind("refs") is not None:
            with logs.sub("refs") as refs:
                for name, data in _walk(refs, "refs", snap.problems, limit=LIST_FILE):
                    _add_log(snap, name, data, fmt)


def _add_log(snap: Snapshot, name: str, data: bytes, fmt: str) -> None:
    ids, bad = gitdata.parse_reflog(data, fmt)
    snap.reflogs[name] = ids
    if bad:
        snap.problems.append(f"{bad} malformed line(s) in the reflog of {name}")


def _read_worktrees(gd: _Dir, snap: Snapshot, fmt: str, symrefs: dict[str, str]) -> None:
    """Linked worktrees keep their own HEAD and HEAD reflog in .git/worktrees/<id>/."""
    with gd.sub("worktrees") as wts:
        for wid in wts.entries():
            if wts.kind(wid) == "dir":
                with wts.sub(wid) as wt:
                    _read_worktree(wt, wid, snap, fmt, symrefs)


def _read_worktree(wt: _Dir, wid: str, snap: Snapshot, fmt: str, symrefs: dict[str, str]) -> None:
    head = gitdata.parse_ref_file(wt.read("HEAD", SMALL_FILE), fmt)
    if isinstance(head, gitdata.SymRef):
        resolved = _resolve(head.target, snap.refs, symrefs)
        if resolved is not None:
            snap.worktree_heads[wid] = resolved
    elif head is not None:
        snap.worktree_heads[wid] = head
    else:
        snap.problems.append(f"linked worktree {wid!r} has a malformed HEAD")
    if wt.kind("logs") == "dir":
        with wt.sub("logs") as logs:
            if logs.kind("HEAD") is not None:
                _add_log(snap, f"worktrees/{wid}/HEAD", logs.read("HEAD", LIST_FILE), fmt)


def _walk(
    d: _Dir, prefix: str, problems: list[str], limit: int = SMALL_FILE
) -> Iterator[tuple[str, bytes]]:
    """(name, content) of every regular file below `d`; links and other
    oddities are reported in `problems`, never followed."""
    count = 0
    stack: list[tuple[_Dir, str]] = [(d, prefix)]
    opened: list[_Dir] = []
    try:
        while stack:
            cur, name = stack.pop()
            for entry in cur.entries():
                count += 1
                if count > MAX_ENTRIES:
                    problems.append(f"more than {MAX_ENTRIES} entries under {prefix}/")
                    return
                full = f"{name}/{entry}"
                kind = cur.kind(entry)
                if kind == "dir":
                    sub = cur.sub(entry)
                    opened.append(sub)
                    stack.append((sub, full))
                elif kind == "file":
                    if entry.endswith(".lock"):
                        continue  # a git process's lock file, not a ref
                    try:
                        yield full, cur.read(entry, limit)
                    except Unreadable as exc:
                        problems.append(str(exc))
                elif kind is not None:
                    what = "a symbolic link" if kind == "link" else "not a regular file"
                    problems.append(f"{full} is {what} (not followed)")
    finally:
        for sub in opened:
            sub.close()


def _import_objects(objects: _Dir, q: Quarantine) -> list[str]:
    """Copy the workspace's objects into the quarantine, verified."""
    problems: list[str] = []
    hexlen = gitdata.HEX_LENGTH[q.object_format]
    for fan in objects.entries():
        if len(fan) != 2 or not gitdata.is_object_id(fan + "0" * (hexlen - 2), q.object_format):
            continue  # info/, pack/ and anything else the guest put there
        if objects.kind(fan) != "dir":
            problems.append(f"objects/{fan} is not a directory (not followed)")
            continue
        with objects.sub(fan) as d:
            for rest in d.entries():
                oid = fan + rest
                if not gitdata.is_object_id(oid, q.object_format) or q.has_loose(oid):
                    continue
                try:
                    _copy_loose(d, rest, oid, q)
                except (Unreadable, gitdata.BadObject) as exc:
                    problems.append(f"object {oid} refused: {exc}")
    if objects.kind("pack") is not None:
        with objects.sub("pack") as packs:
            problems += _import_packs(packs, q, hexlen)
    return problems


def _copy_loose(d: _Dir, name: str, oid: str, q: Quarantine) -> None:
    fd = d.open_file(name)
    dest_dir = q.objects / oid[:2]
    dest_dir.mkdir(mode=0o700, exist_ok=True)
    tmp_fd, tmp = tempfile.mkstemp(dir=q.objects, prefix="incoming-")
    try:
        with os.fdopen(fd, "rb") as src, os.fdopen(tmp_fd, "wb") as out:

            def chunks() -> Iterator[bytes]:
                while chunk := src.read(COPY_CHUNK):
                    out.write(chunk)
                    yield chunk

            gitdata.verify_loose_object(chunks(), oid, q.object_format)
        os.replace(tmp, dest_dir / oid[2:])
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _import_packs(packs: _Dir, q: Quarantine, hexlen: int) -> list[str]:
    """index-pack each pack we do not have yet; drop ours the guest no longer has.

    A pack's last bytes are the checksum of its content, which is the name
    index-pack gives it: a pack already imported is recognised without
    reading it. A guest that fakes that checksum only hides its own objects.
    """
    problems: list[str] = []
    ours = q.objects / "pack"
    ours.mkdir(mode=0o700, exist_ok=True)
    keep: set[str] = set()
    for name in packs.entries():
        if not name.endswith(".pack"):
            continue
        try:
            fd = packs.open_file(name)
        except Unreadable as exc:
            problems.append(str(exc))
            continue
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(fd).st_size
            trailer = os.pread(fd, hexlen // 2, max(0, size - hexlen // 2)).hex()
            if (ours / f"pack-{trailer}.idx").exists():
                keep.add(trailer)
                continue
            res = q.git("index-pack", "--stdin", stdin=f, check=False)
        if res.ok and res.stdout.startswith("pack\t"):
            keep.add(res.stdout.split("\t", 1)[1].strip())
        else:
            why = (res.stderr.strip().splitlines() or ["failed"])[-1]
            problems.append(f"pack {name} refused: {why}")
    for old in ours.glob("pack-*"):
        if old.name.split(".")[0].removeprefix("pack-") not in keep:
            old.unlink()
    return problems


@contextlib.contextmanager
def opened(
    vm: VmPaths, lock: Path, cfg: VmConfig, source: Source | None = None
) -> Iterator[tuple[Quarantine, Snapshot]]:
    """The VM's quarantine, locked, with the workspace's current state loaded."""
    q = Quarantine(vm.quarantine, gitops.object_format(Path(cfg.repo)))
    with file_lock(lock, f"the quarantine of VM {vm.name}", wait=60.0):
        q.ensure()
        try:
            snap = (source or source_for(vm, cfg)).load(q)
        except Unreadable as exc:
            raise GitError(
                f"VM {vm.name}'s workspace cannot be read safely: {exc}",
                hint="agent-vm never follows links or runs git in a workspace",
            ) from None
        # A one-commit clone's history ends at its base: git must know where.
        q.set_shallow(snap.shallow | {cfg.commit})
        if snap.head is not None and q.object_types([snap.head]).get(snap.head) != "commit":
            snap.head_missing = True
        yield q, snap
