"""The guest attacks through its workspace; the agent's work comes out through
diff and pull (issue 9). One VM per host user runs everything in sequence
(for the unprivileged user, also what `up` must give one: the guest user has
their uid and gid, what it makes is theirs on the host, the state dir is
private):

* the reviewed path: an agent commit, an uncommitted edit and a new file
  made in the guest show in `diff`; `pull` makes agent/<branch> in the
  source repository while the user's checkout (HEAD, index bytes, working
  tree, stash) stays byte-identical; `push` hands a new source commit to
  the guest as origin/<branch>; after `pull --include-uncommitted`,
  `destroy` needs no --force;
* the attacks: the guest plants core.fsmonitor, filters with
  .gitattributes, hooks and core.hooksPath, include.path, diff.external,
  textconv, core.pager, aliases (tests/hostile/plant.sh), and then makes
  .git a link to, a gitdir: file for, refs a link into, and alternates
  point at another host repository; every command that touches the
  workspace runs after each step, and no marker ever appears on the host
  and no other repository changes. That the plants are live is shown by
  ordinary git run in a copy of the workspace, which does run them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import hostile_git
from harness import Cli, Result, Unprivileged, git, make_repo, unprivileged_cli

AGENT_WORK = (
    "cd /workspace && printf 'agent work\\n' >agent.txt && git add agent.txt"
    " && git -c user.name=agent -c user.email=agent@vm commit -q -m 'agent: add agent.txt'"
    " && printf 'edited in the guest\\n' >>README && printf 'new\\n' >new-file.txt"
)


@dataclass
class World:
    cli: Cli
    repo: Path
    victim: Path
    markers: Path
    scratch: Path
    user: str | None
    # The unprivileged host user's (uid, gid): the guest user must have them.
    ids: tuple[int, int] | None = None

    def guest(self, script: str, *args: str) -> str:
        return self.cli("shell", "--", "sh", "-c", script, "guest", *args, cwd=self.repo).stdout

    def git(self, repo: Path, *args: str) -> str:
        """git on the host, in a repository of the user's (git refuses another
        user's repository)."""
        return git(repo, *args, user=self.user)

    def run(self, *args: str, code: int = 0) -> str:
        r = self.cli(*args, cwd=self.repo, check=False)
        assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
        return r.stdout + r.stderr


def tree_state(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = os.readlink(p)
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def checkout_state(w: World) -> dict[str, object]:
    """The user's checkout: what pull and everything else must leave alone."""
    repo = w.repo
    return {
        "HEAD": (repo / ".git" / "HEAD").read_bytes(),
        "index": (repo / ".git" / "index").read_bytes(),
        "worktree": {k: v for k, v in tree_state(repo).items() if not k.startswith(".git")},
        "stash": w.git(repo, "stash", "list"),
        "FETCH_HEAD": (repo / ".git" / "FETCH_HEAD").exists(),
    }


def scenario(w: World) -> None:
    w.run("up")
    st = json.loads(w.run("status", "--json"))
    ws = Path(st["workspace"])
    if w.ids:
        # The guest user is the host user, so what it makes is theirs, and
        # agent-vm made the state dir private.
        assert w.guest("id -u; id -g").split() == [str(i) for i in w.ids]
        assert w.cli.state_dir.stat().st_mode & 0o077 == 0

    # --- the reviewed path -------------------------------------------------------------
    w.guest(AGENT_WORK)
    if w.ids:
        assert (ws / "new-file.txt").stat().st_uid == w.ids[0]
    out = w.run("diff")
    assert "agent: add agent.txt" in out, out
    assert "  M README" in out and "  A new-file.txt" in out
    assert "+edited in the guest" in out and "+new" in out and "+agent work" in out
    assert "new-file.txt" in w.run("diff", "--stat")
    rep = json.loads(w.run("diff", "--json"))
    assert [c["subject"] for c in rep["commits"]] == ["agent: add agent.txt"]

    upstream = _user_commits_and_dirties(w)
    before = checkout_state(w)
    out = w.run("pull")
    assert "pulled 1 commit(s) into agent/main" in out and "2 file(s) uncommitted" in out
    assert w.git(w.repo, "log", "-1", "--format=%s", "agent/main").strip() == "agent: add agent.txt"
    assert checkout_state(w) == before
    out = w.run("destroy", code=13)
    assert "uncommitted changes to 2 file(s)" in out and "agent-vm pull" in out

    assert "as origin/main" in w.run("push")
    seen = w.guest("git -C /workspace rev-parse refs/remotes/origin/main").strip()
    assert seen == upstream

    # --- the attacks ---------------------------------------------------------------------
    w.guest(hostile_git.PLANT.read_text(), "/workspace", str(w.markers))
    proven = hostile_git.prove(ws, w.scratch, w.markers, w.user)
    assert proven >= _live_plants(w), proven
    victim_before = tree_state(w.victim)
    _every_command(w)
    assert checkout_state(w) == before

    source_before = tree_state(w.repo)
    victim_git = w.victim / ".git"
    stolen = w.git(w.victim, "rev-parse", "HEAD").strip()
    # As root the share is mapped-xattr: a link the guest makes is a plain
    # file on the host (its target is the file's content), never a link.
    mapped = _mapped_xattr(w)
    for attack, undo, words in (
        (
            f"mv .git .git-real && ln -s '{victim_git}' .git",
            "rm .git && mv .git-real .git",
            "/.git is a file" if mapped else ".git: is a symbolic link",
        ),
        (
            f"mv .git .git-real && printf 'gitdir: %s\\n' '{victim_git}' >.git",
            "rm .git && mv .git-real .git",
            "'gitdir:'",
        ),
        (
            f"mv .git/refs .git/refs-real && ln -s '{victim_git}/refs' .git/refs",
            "rm .git/refs && mv .git/refs-real .git/refs",
            ".git/refs: is " + ("not a directory" if mapped else "a symbolic link"),
        ),
        (
            f"mv .git/objects .git/objects-real && ln -s '{victim_git}/objects' .git/objects",
            "rm .git/objects && mv .git/objects-real .git/objects",
            ".git/objects: is " + ("not a directory" if mapped else "a symbolic link"),
        ),
    ):
        w.guest(f"cd /workspace && {attack}")
        out = _every_command(w)
        assert out["diff"].returncode == out["pull"].returncode == 10, out
        assert words in out["diff"].stderr and words in out["pull"].stderr, out
        assert "cannot be verified" in out["destroy"].stderr
        w.guest(f"cd /workspace && {undo}")
    # Alternates naming the other repository, and a ref to a commit only it has.
    w.guest(
        "cd /workspace && mkdir -p .git/objects/info"
        f" && printf '%s\\n' '{victim_git}/objects' >.git/objects/info/alternates"
        f" && printf '%s\\n' {stolen} >.git/refs/heads/stolen"
    )
    assert "missing (cannot verify)" in _every_command(w)["destroy"].stderr
    w.guest("cd /workspace && rm .git/objects/info/alternates .git/refs/heads/stolen")
    assert tree_state(w.victim) == victim_before
    assert tree_state(w.repo) == source_before

    # --- taking everything: then destroy needs no --force ---------------------------------
    out = w.run("pull", "--include-uncommitted")
    assert "files not committed in the workspace are commit" in out
    for name in ("new-file.txt", ".gitattributes", "a.cl"):
        w.git(w.repo, "cat-file", "-e", f"agent/main:{name}")
    w.run("destroy")
    assert not ws.exists()
    assert hostile_git.markers(w.markers) == set()
    assert checkout_state(w) == before
    assert tree_state(w.victim) == victim_before


def _user_commits_and_dirties(w: World) -> str:
    """A new commit on the source branch (for push), then the user's own
    uncommitted edit, staged file and stash: the checkout pull must not touch."""
    write(w, "upstream.txt", "from the user\n")
    w.git(w.repo, "add", "upstream.txt")
    w.git(w.repo, "commit", "-q", "-m", "upstream")
    write(w, "stashed.txt", "stash me\n")
    w.git(w.repo, "add", "stashed.txt")
    w.git(w.repo, "stash", "-q")
    write(w, "README", "the user's uncommitted edit\n")
    write(w, "staged.txt", "staged\n")
    w.git(w.repo, "add", "staged.txt")
    return w.git(w.repo, "rev-parse", "main").strip()


def write(w: World, name: str, text: str) -> None:
    (w.repo / name).write_text(text)
    if w.user:
        shutil.chown(w.repo / name, w.user, w.user)


def _mapped_xattr(w: World) -> bool:
    """The VM runs as root: 9p's mapped-xattr keeps the guest's modes and
    file types in xattrs, not in the host's inodes."""
    return os.getuid() == 0 and w.user is None


def _live_plants(w: World) -> set[str]:
    """What the copy's git must run. With mapped-xattr the files the guest
    makes are mode 0600 on the host, so no planted hook is even executable
    there; every other plant is read from config and runs."""
    if _mapped_xattr(w):
        return {m for m in hostile_git.PROVEN if not m.startswith("hook-")}
    return hostile_git.PROVEN


def _every_command(w: World) -> dict[str, Result]:
    """Every verb that could touch the workspace (some refuse, none crashes,
    destroy refuses); none may run a plant."""
    out = {}
    for args in (
        ["diff", "--stat"],
        ["diff", "--json"],
        ["diff"],
        ["pull"],
        ["push"],
        ["status", "--json"],
        ["list"],
        ["destroy"],
    ):
        r = w.cli(*args, cwd=w.repo, check=False)
        assert r.returncode != 1 and "Traceback" not in r.stderr, (args, r.stderr)
        out[args[0]] = r
    assert out["destroy"].returncode == 13, out["destroy"]
    assert hostile_git.markers(w.markers) == set()
    return out


def test_quarantine_as_root_or_the_invoking_user(cli: Cli, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    victim = _victim(tmp_path, None)
    scenario(World(cli, repo, victim, hostile_git.make_marker_dir(tmp_path), tmp_path, None))


def test_quarantine_as_an_unprivileged_user(
    agent_vm_bin: str,
    e2e_flake: Path,
    guest_dir: Path,
    unprivileged: Unprivileged,
    user_tmp: Path,
) -> None:
    cli = unprivileged_cli(agent_vm_bin, e2e_flake, guest_dir, unprivileged, user_tmp / "state")
    repo = make_repo(user_tmp / "repo", user=cli.user)
    victim = _victim(user_tmp, cli.user)
    scratch = user_tmp / "scratch"
    scratch.mkdir()
    if cli.user:
        shutil.chown(scratch, cli.user, cli.user)
    ids = (unprivileged.uid, unprivileged.gid)
    markers = hostile_git.make_marker_dir(user_tmp)
    scenario(World(cli, repo, victim, markers, scratch, cli.user, ids))


def _victim(parent: Path, user: str | None) -> Path:
    """Another repository of the same host user, whose own config shows any
    git run in it."""
    victim = make_repo(parent / "victim", user=user)
    (victim / "secret").write_text("the victim's own\n")
    if user:
        shutil.chown(victim / "secret", user, user)
    git(victim, "add", "secret", user=user)
    git(victim, "commit", "-q", "-m", "secret", user=user)
    git(
        victim,
        "config",
        "core.fsmonitor",
        f"touch {parent}/markers/victim-fsmonitor; false #",
        user=user,
    )
    return victim
