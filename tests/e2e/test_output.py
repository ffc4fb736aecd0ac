"""What a person and a script see: colour, JSON schemas, the per-VM event
log and shell completion, from the real CLI (doctor's KVM verdict: test_kvm.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import jsonschema
from harness import Cli, git, run_on_tty

# SGR sequences (colour); erasing a progress line is not colour.
COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def test_colour_only_on_a_tty_and_never_with_no_color(cli: Cli, repo: Path) -> None:
    env = dict(os.environ) | cli.env
    env.pop("NO_COLOR", None)
    cli.env.pop("NO_COLOR", None)
    # A warning (public address) and -v progress events give something to colour.
    args = ("-v", "create", "--host", "0.0.0.0")

    r = cli(*args, cwd=repo)
    assert "warning" in r.stderr and "created VM" in r.stderr
    assert not COLOUR.search(r.stderr + r.stdout)
    cli("destroy", "--force", cwd=repo)

    code, out = run_on_tty(cli, *args, cwd=repo, env=env)
    assert code == 0, out
    assert COLOUR.search(out)
    cli("destroy", "--force", cwd=repo)

    code, out = run_on_tty(cli, *args, cwd=repo, env=env | {"NO_COLOR": "1"})
    assert code == 0 and "created VM" in out and not COLOUR.search(out), out
    cli("destroy", "--force", cwd=repo)

    code, out = run_on_tty(cli, "--no-color", *args, cwd=repo, env=env)
    assert code == 0 and "created VM" in out and not COLOUR.search(out), out
    cli("destroy", "--force", cwd=repo)


def schema(cli: Cli, repo: Path, kind: str) -> dict:  # type: ignore[type-arg]
    s = cli("schema", kind, cwd=repo).json()
    jsonschema.Draft202012Validator.check_schema(s)
    return s


def test_json_outputs_validate_against_the_published_schemas(cli: Cli, repo: Path) -> None:
    git(repo, "branch", "other")
    created = cli("create", "--json", cwd=repo).json()
    jsonschema.validate(created, schema(cli, repo, "create"))
    cli("create", "--branch", "other", cwd=repo)
    jsonschema.validate(cli("status", "--json", cwd=repo).json(), schema(cli, repo, "status"))
    listed = cli("list", "--json", cwd=repo).json()
    jsonschema.validate(listed, schema(cli, repo, "list"))
    assert len(listed["vms"]) == 2 and listed["schema_version"] == 1
    doctor = cli("doctor", "--json", cwd=repo, check=False)
    assert doctor.returncode in (0, 18)
    jsonschema.validate(doctor.json(), schema(cli, repo, "doctor"))
    # Events as JSON lines on stderr: one object per line, each valid.
    r = cli("--log-format", "json", "-d", "destroy", "--force", "other", cwd=repo)
    events = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    event_schema = schema(cli, repo, "event")
    for ev in events:
        jsonschema.validate(ev, event_schema)
    assert "vm.destroyed" in {ev["kind"] for ev in events}
    # A wrong document does not validate: the schema really constrains.
    bad = dict(created, state=42)
    try:
        jsonschema.validate(bad, schema(cli, repo, "create"))
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("a status with state=42 validated")
    cli("destroy", "--force", cwd=repo)


def test_a_failed_start_is_recorded_in_the_vm_event_log(
    cli: Cli, repo: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-flake"
    broken.mkdir()
    (broken / "flake.nix").write_text(
        "{ outputs = { self }: { legacyPackages.x86_64-linux.agent-vm-runner = derivation {"
        ' name = "run-agent-vm"; system = "x86_64-linux"; builder = "/bin/sh";'
        ' args = [ "-c" "echo cannot-build-this; exit 1" ]; }; }; }\n'
    )
    cli.env["AGENT_VM_FLAKE"] = f"path:{broken}"
    name = cli("create", "--json", cwd=repo).json()["name"]
    r = cli("start", cwd=repo, check=False)  # quiet by default: no -v
    assert r.returncode == 8
    log = cli.state_dir / "vms" / name / "events.log"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = [ev["kind"] for ev in events]
    for kind in ("vm.created", "vm.starting", "build.started", "build.failed", "vm.stopped"):
        assert kind in kinds, kinds
    assert kinds.index("build.started") < kinds.index("build.failed") < kinds.index("vm.stopped")
    assert all(ev["vm"] == name for ev in events)
    # Debug-level events are in the file even though the terminal was quiet.
    assert "build.started" not in r.stderr
    cli("destroy", "--force", cwd=repo)


def complete(cli: Cli, repo: Path, line: str, tmp_path: Path) -> list[str]:
    out = tmp_path / "completions"
    env = (
        dict(os.environ)
        | cli.env
        | {
            "_ARGCOMPLETE": "1",
            "_ARGCOMPLETE_SHELL": "bash",
            "COMP_LINE": line,
            "COMP_POINT": str(len(line)),
            "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
            "_ARGCOMPLETE_IFS": "\n",
        }
    )
    res = subprocess.run(
        line.split()[:1], cwd=repo, env=env, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    # argcomplete appends a space to a unique, finished word.
    return [w.rstrip() for w in out.read_text().split("\n")] if out.exists() else []


def test_completion_offers_vm_names_and_branches(cli: Cli, repo: Path, tmp_path: Path) -> None:
    git(repo, "branch", "feature/completion")
    a = cli("create", "--json", cwd=repo).json()["name"]
    b = cli("create", "--branch", "feature/completion", "--json", cwd=repo).json()["name"]
    prefix = f"{cli.binary} --state-dir {cli.state_dir}"
    got = complete(cli, repo, f"{prefix} status ", tmp_path)
    assert a in got and b in got, got
    got = complete(cli, repo, f"{prefix} create --branch feat", tmp_path)
    assert got == ["feature/completion"], got
    got = complete(cli, repo, f"{prefix} sta", tmp_path)
    assert set(got) >= {"start", "status"}, got
    got = complete(cli, repo, f"{prefix} create --mem", tmp_path)
    assert "--memory" in got, got
    cli("destroy", "--force", a, cwd=repo)
    cli("destroy", "--force", b, cwd=repo)
