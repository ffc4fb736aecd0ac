"""quarantine: the host reads a workspace only as data, with its own git
directory and a scrubbed environment. Every hazard a guest can plant is
tried here with real git; the markers prove nothing ran."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import hostile_git
import pytest
from agent_vm import diff, pull, quarantine, unsaved
from agent_vm.errors import GitError
from agent_vm.quarantine import SETTINGS, Quarantine
from unit_fakes import LAUNCHES, Box, commit, git, make_repo, tree_state, workspace_vm


@pytest.fixture
def box(tmp_path: Path) -> Box:
    b = workspace_vm(tmp_path)
    LAUNCHES.clear()  # creating the workspace is not reading it
    return b


@pytest.fixture
def marker_dir(tmp_path: Path) -> Path:
    return hostile_git.make_marker_dir(tmp_path)


@pytest.fixture
def victim(tmp_path: Path, marker_dir: Path) -> Path:
    """Another repository of the host user's, with a config that shows any
    git run in it."""
    repo = make_repo(tmp_path / "victim")
    commit(repo, "secret", "victim's own\n")
    git(repo, "config", "core.fsmonitor", f"touch {marker_dir}/victim-fsmonitor; false #")
    return repo


def opened(box: Box) -> quarantine.Quarantine:
    with quarantine.opened(box.vm, box.layout.quarantine_lock(box.vm.name), box.cfg) as (q, _):
        return q


# --- the command lines -----------------------------------------------------------------


def test_every_git_gets_only_our_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "GIT_DIR": "/workspace/.git",
        "GIT_CONFIG_PARAMETERS": "'core.fsmonitor'='touch /x'",
        "GIT_EXTERNAL_DIFF": "touch /x",
        "GIT_SSH_COMMAND": "touch /x",
        "GIT_CONFIG_GLOBAL": "/home/u/.gitconfig",
        "HOME": "/home/u",
    }.items():
        monkeypatch.setenv(name, value)
    q = Quarantine(Path("/state/vms/v/quarantine"))
    argv = q.argv("status", work_tree=Path("/ws"), index=Path("/state/vms/v/quarantine/i"))
    assert argv[:2] == ["env", "-i"]
    i = argv.index("git")
    env = dict(a.split("=", 1) for a in argv[2:i])
    assert env == {
        "PATH": os.environ["PATH"],
        "HOME": "/state/vms/v/quarantine/home",
        "XDG_CONFIG_HOME": "/state/vms/v/quarantine/home",
        "GIT_DIR": "/state/vms/v/quarantine/git",
        "GIT_INDEX_FILE": "/state/vms/v/quarantine/i",
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
    assert argv[i : i + 3] == ["git", "--git-dir=/state/vms/v/quarantine/git", "--work-tree=/ws"]
    settings = argv[i + 3 : -1]
    assert settings == [a for s in SETTINGS for a in ("-c", s)]
    assert argv[-1] == "status"
    for must in (
        "core.fsmonitor=false",
        "core.hooksPath=/dev/null",
        "protocol.allow=never",
        "submodule.recurse=false",
        "core.pager=cat",
    ):
        assert must in SETTINGS


def check_launches(box: Box) -> None:
    """No program ran in the workspace or with it as its repository; every
    git was the quarantine's (scrubbed, our git dir) or the source's."""
    ws = str(box.ws)
    q = Quarantine(box.vm.quarantine)
    assert LAUNCHES, "nothing ran?"
    for launch in LAUNCHES:
        argv = launch.argv
        assert not Path(launch.cwd).is_relative_to(ws), launch
        assert "git" in argv, launch  # only git runs here
        for arg in argv:
            assert not arg.startswith(f"--git-dir={ws}"), launch
            assert arg not in (ws, f"{ws}/.git"), launch
            assert not arg.startswith(f"GIT_DIR={ws}"), launch
        if argv[:2] == ["env", "-i"]:
            assert launch.cwd == str(q.root)
            i = argv.index("git")
            env = dict(a.split("=", 1) for a in argv[2:i])
            assert env["GIT_DIR"] == str(q.git_dir) and env["HOME"] == str(q.home)
            assert env["GIT_CONFIG_GLOBAL"] == "/dev/null" and "GIT_CONFIG_PARAMETERS" not in env
            assert argv[i + 1] == f"--git-dir={q.git_dir}"
            tree = [a for a in argv if a.startswith("--work-tree=")]
            if tree:  # the work tree is read only by `add`, into a private index
                assert tree == [f"--work-tree={ws}"] and "add" in argv
                assert env["GIT_INDEX_FILE"].startswith(str(q.root))
        else:
            assert argv[:3] == ["git", "-C", str(box.repo)], launch


def test_a_hostile_workspace_runs_nothing_on_the_host(
    box: Box, tmp_path: Path, marker_dir: Path
) -> None:
    commit(box.ws, "agent.txt", "the agent's\n")
    hostile_git.plant(box.ws, marker_dir)
    # The plants are live: ordinary git in a copy of the workspace runs them.
    assert hostile_git.prove(box.ws, tmp_path, marker_dir) >= hostile_git.PROVEN
    LAUNCHES.clear()

    rep, patch = diff.report(box.layout, box.vm, box.cfg)
    assert [c.subject for c in rep.commits] == ["add agent.txt"]
    assert b"+clean me" in patch and b"+process me" in patch  # filters did not run
    diff.report(box.layout, box.vm, box.cfg, stat=True)
    pulled = pull.pull(box.layout, box.vm, box.cfg, include_uncommitted=True)
    assert pulled.commit is not None
    assert unsaved.unsaved_work(box.layout, box.vm, box.cfg) == []
    assert git(box.repo, "cat-file", "-p", "agent/main:a.cl") == "clean me"
    assert hostile_git.markers(marker_dir) == set()
    check_launches(box)


# --- the workspace's .git, read without following anything -------------------------------


def refused(box: Box, *words: str) -> None:
    for run in (
        lambda: diff.report(box.layout, box.vm, box.cfg),
        lambda: pull.pull(box.layout, box.vm, box.cfg),
    ):
        with pytest.raises(GitError) as exc:
            run()
        assert exc.value.exit_code == 10
        for w in words:
            assert w in exc.value.message, exc.value.message
    (reason,) = unsaved.unsaved_work(box.layout, box.vm, box.cfg)
    assert reason.startswith("a repository that cannot be verified"), reason


def test_dot_git_that_is_a_link_to_another_repository(
    box: Box, victim: Path, marker_dir: Path
) -> None:
    before = tree_state(victim)
    (box.ws / ".git").rename(box.ws / "real.git")
    (box.ws / ".git").symlink_to(victim / ".git")
    refused(box, ".git: is a symbolic link")
    assert tree_state(victim) == before
    assert hostile_git.markers(marker_dir) == set()
    check_launches(box)


def test_dot_git_that_is_a_gitdir_file(box: Box, victim: Path, marker_dir: Path) -> None:
    before = tree_state(victim)
    (box.ws / ".git").rename(box.ws / "real.git")
    (box.ws / ".git").write_text(f"gitdir: {victim}/.git\n")
    refused(box, "'gitdir:'")
    assert tree_state(victim) == before
    assert hostile_git.markers(marker_dir) == set()


@pytest.mark.parametrize("part", ["objects", "refs", "objects/pack"])
def test_a_part_of_dot_git_that_is_a_link(box: Box, victim: Path, part: str) -> None:
    before = tree_state(victim)
    target = box.ws / ".git" / part
    target.mkdir(exist_ok=True)
    target.rename(target.with_name("moved"))
    target.symlink_to(victim / ".git" / part)
    refused(box, f".git/{part}: is a symbolic link")
    assert tree_state(victim) == before


def test_missing_dot_git_and_linked_gitdir(box: Box) -> None:
    (box.ws / ".git" / "commondir").write_text("/elsewhere\n")
    refused(box, "commondir exists")
    (box.ws / ".git" / "commondir").unlink()
    (box.ws / ".git").rename(box.ws / "gone")
    refused(box, ".git: is missing")


def test_a_fifo_never_makes_us_wait(box: Box) -> None:
    os.mkfifo(box.ws / ".git" / "refs" / "heads" / "fifo")
    done: list[object] = []
    t = threading.Thread(
        target=lambda: done.append(unsaved.unsaved_work(box.layout, box.vm, box.cfg)),
        daemon=True,
    )
    t.start()
    t.join(timeout=60)
    assert done, "a FIFO in refs/ made the check hang"
    assert done == [
        [
            "a repository that cannot be fully verified (refs/heads/fifo is not a regular file "
            "(not followed))"
        ]
    ]
    (box.ws / ".git" / "refs" / "heads" / "fifo").unlink()
    (box.ws / ".git" / "HEAD").unlink()
    os.mkfifo(box.ws / ".git" / "HEAD")
    refused(box, "HEAD: not a regular file")


def test_links_and_junk_among_the_refs_are_reported_not_followed(box: Box, victim: Path) -> None:
    heads = box.ws / ".git" / "refs" / "heads"
    (heads / "stolen").symlink_to(victim / ".git" / "refs" / "heads" / "main")
    (heads / "junk").write_text("not an id\n")
    (box.ws / ".git" / "packed-refs").write_text(
        "# pack-refs with: peeled\n"
        f"{git(box.repo, 'rev-parse', 'HEAD')} refs/heads/packed\n"
        "zzzz refs/heads/bad\n"
    )
    rep, _ = diff.report(box.layout, box.vm, box.cfg)
    assert sorted(rep.problems) == [
        "1 malformed line(s) in packed-refs",
        "malformed ref 'refs/heads/junk'",
        "refs/heads/stolen is a symbolic link (not followed)",
    ]
    (reason,) = unsaved.unsaved_work(box.layout, box.vm, box.cfg)
    assert reason.startswith("a repository that cannot be fully verified (") and "2 more" in reason


def test_alternates_are_never_read(box: Box, victim: Path) -> None:
    """A ref naming a commit that only another repository has: the
    quarantine never reads that repository's objects, so it is missing."""
    alt = box.ws / ".git" / "objects" / "info" / "alternates"
    alt.parent.mkdir(exist_ok=True)
    alt.write_text(f"{victim}/.git/objects\n")
    stolen = git(victim, "rev-parse", "HEAD")
    (box.ws / ".git" / "refs" / "heads" / "stolen").write_text(stolen + "\n")
    assert unsaved.unsaved_work(box.layout, box.vm, box.cfg) == [
        "1 object(s) its refs or reflogs name that are missing (cannot verify)"
    ]
    assert opened(box).object_types([stolen]) == {}
    rep, _ = diff.report(box.layout, box.vm, box.cfg)
    assert rep.commits == []


def test_a_loose_object_that_lies_about_its_name_is_refused(box: Box) -> None:
    sha = commit(box.ws, "f")
    blob = git(box.ws, "rev-parse", "HEAD:f")
    path = box.ws / ".git" / "objects" / blob[:2] / blob[2:]
    other = git(box.ws, "rev-parse", "HEAD:README")
    data = (box.ws / ".git" / "objects" / other[:2] / other[2:]).read_bytes()
    path.chmod(0o644)
    path.write_bytes(data)
    rep, _ = diff.report(box.layout, box.vm, box.cfg)
    assert f"object {blob} refused: {blob}: content does not match its name" in rep.problems
    assert [c.commit for c in rep.commits] == [sha]


def test_the_guest_index_is_never_read(box: Box) -> None:
    (box.ws / ".git" / "index").write_bytes(b"DIRC" + os.urandom(1 << 20))
    (box.ws / "README").write_text("changed\n")
    rep, _ = diff.report(box.layout, box.vm, box.cfg)
    assert [(f.status, f.path) for f in rep.uncommitted] == [("M", "README")]


def test_a_nested_repository_pointing_elsewhere_is_only_a_gitlink(
    box: Box, victim: Path, marker_dir: Path
) -> None:
    before = tree_state(victim)
    (box.ws / "sub").mkdir()
    (box.ws / "sub" / ".git").write_text(f"gitdir: {victim}/.git\n")
    rep, patch = diff.report(box.layout, box.vm, box.cfg)
    assert [(f.status, f.path) for f in rep.uncommitted] == [("A", "sub")]
    assert b"+Subproject commit" in patch
    assert tree_state(victim) == before
    assert hostile_git.markers(marker_dir) == set()
    check_launches(box)


def test_packs_are_indexed_by_the_quarantine_and_kept_in_step(box: Box) -> None:
    first = commit(box.ws, "a")
    git(box.ws, "gc", "-q")
    rep, _ = diff.report(box.layout, box.vm, box.cfg)
    assert [c.commit for c in rep.commits] == [first]
    ours = Quarantine(box.vm.quarantine).objects / "pack"
    packs = sorted(p.name for p in ours.iterdir())
    (guest_pack,) = (box.ws / ".git" / "objects" / "pack").glob("*.pack")
    assert f"{guest_pack.stem}.idx" in packs  # git names a pack by its content
    LAUNCHES.clear()
    diff.report(box.layout, box.vm, box.cfg)
    assert not [x for x in LAUNCHES if "index-pack" in x.argv]  # known packs are not re-read
    second = commit(box.ws, "b")
    git(box.ws, "gc", "-q")  # a new pack replaces the old one
    rep, _ = diff.report(box.layout, box.vm, box.cfg)
    assert [c.commit for c in rep.commits] == [second, first]
    assert sorted(p.name for p in ours.iterdir()) != packs and len(list(ours.iterdir())) == 2


def test_a_corrupt_pack_is_refused(box: Box) -> None:
    commit(box.ws, "a")
    git(box.ws, "gc", "-q")
    (pack,) = (box.ws / ".git" / "objects" / "pack").glob("*.pack")
    pack.chmod(0o644)
    data = bytearray(pack.read_bytes())
    data[40] ^= 0xFF
    pack.write_bytes(bytes(data))
    (reason, *_) = unsaved.unsaved_work(box.layout, box.vm, box.cfg)
    assert reason.startswith(
        f"a repository that cannot be fully verified (pack {pack.name} refused"
    )


def test_the_quarantine_is_private_and_outside_the_workspace(box: Box) -> None:
    q = opened(box)
    assert not q.root.is_relative_to(box.ws) and q.root.parent == box.vm.dir
    assert q.root.stat().st_mode & 0o777 == 0o700
    config = (q.git_dir / "config").read_text()
    assert "fsmonitor = false" in config and "hooksPath = /dev/null" in config
    assert not (q.git_dir / "hooks").exists()


# --- a bundle made by the guest -------------------------------------------------------------


def test_a_bundle_is_verified_and_its_refs_read_as_data(box: Box, tmp_path: Path) -> None:
    sha = commit(box.ws, "agent")
    git(box.ws, "tag", "v1")
    bundle = tmp_path / "ws.bundle"
    git(box.ws, "bundle", "create", "-q", str(bundle), "HEAD", "--all")
    source = quarantine.BundleSource(
        lambda dest: bool(shutil.copy(bundle, dest)), box.repo, box.cfg.commit
    )
    with quarantine.opened(
        box.vm, box.layout.quarantine_lock(box.vm.name), box.cfg, source=source
    ) as (q, snap):
        assert snap.head == sha and snap.work_tree is None and snap.problems == []
        assert snap.refs["refs/heads/main"] == sha and "refs/tags/v1" in snap.refs
        assert q.object_types([sha]) == {sha: "commit"}
    assert not [x for x in LAUNCHES if str(box.ws) in " ".join(x.argv)]


def test_a_bundle_that_does_not_verify_is_refused(box: Box, tmp_path: Path) -> None:
    bundle = tmp_path / "bad.bundle"
    bundle.write_bytes(b"# v2 git bundle\n" + b"z" * 40 + b" refs/heads/x\n\nPACKjunk")
    with (
        pytest.raises(GitError, match=r"the guest's bundle is refused"),
        quarantine.opened(
            box.vm,
            box.layout.quarantine_lock(box.vm.name),
            box.cfg,
            source=quarantine.BundleSource(
                lambda dest: bool(shutil.copy(bundle, dest)), box.repo, box.cfg.commit
            ),
        ),
    ):
        pass
