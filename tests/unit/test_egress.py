"""egress: allowlist patterns, the proxy's decisions, placeholders, secrets,
the decision log, and the CLI verbs (no proxy runs here: tests/e2e's
test_egress_engine.py runs the real one)."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from agent_vm import store
from agent_vm.egress import netlog, secrets, setup
from agent_vm.egress.layout import EgressPaths
from agent_vm.egress.patterns import PatternError, parse, read_file
from agent_vm.egress.policy import (
    LoadedSecret,
    Policy,
    connect_verdict,
    deny_page,
    placeholder,
    request_verdict,
)
from agent_vm.models import DEFAULT_ALLOW, EgressConfig, Network, NetworkDecision, VmConfig
from agent_vm.paths import StateLayout
from test_cli import assert_error
from unit_fakes import make_repo, run_cli

# --- patterns ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "port", "hit"),
    [
        ("api.example.com", "api.example.com", 443, True),
        ("api.example.com", "api.example.com", 80, True),
        ("api.example.com", "API.Example.com.", 443, True),
        ("api.example.com", "api.example.com", 8443, False),
        ("api.example.com", "x.api.example.com", 443, False),
        ("api.example.com", "example.com", 443, False),
        ("*.github.com", "api.github.com", 443, True),
        ("*.github.com", "a.b.github.com", 443, True),
        ("*.github.com", "github.com", 443, False),
        ("*.github.com", "evilgithub.com", 443, False),
        ("*.github.com", "github.com.evil.net", 443, False),
        ("example.com:8443", "example.com", 8443, True),
        ("example.com:8443", "example.com", 443, False),
        ("*.example.com:22", "git.example.com", 22, True),
        ("*.example.com:22", "git.example.com", 443, False),
        ("192.0.2.7:22", "192.0.2.7", 22, True),
    ],
)
def test_pattern_matching(pattern: str, host: str, port: int, hit: bool) -> None:
    assert parse(pattern).matches(host, port) is hit


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("*", "only as a leading"),
        ("*.com", "at least two labels"),
        ("a.*.com", "only as a leading"),
        ("example.com:0", "1-65535"),
        ("example.com:99999", "1-65535"),
        ("example.com:https", "1-65535"),
        ("exa mple.com", "not a host name"),
        ("-bad.com", "not a host name"),
        ("*.192.0.2.1", "cannot have a wildcard"),
        ("", "not a host name"),
    ],
)
def test_bad_patterns_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(PatternError, match=why):
        parse(text)


def test_patterns_print_in_their_normal_form() -> None:
    assert [str(parse(p)) for p in ["API.example.COM.", "*.X.org:8080", "10.0.0.1"]] == [
        "api.example.com",
        "*.x.org:8080",
        "10.0.0.1",
    ]


def test_an_allow_file_is_one_pattern_a_line() -> None:
    text = "# models\napi.anthropic.com\n\n  *.github.com  # code\ngithub.com:22\n"
    assert read_file(text) == ["api.anthropic.com", "*.github.com", "github.com:22"]


# --- the proxy's decisions -----------------------------------------------------------------

VALUE = "sk-real-value-123"


def policy(**over: object) -> Policy:
    base: dict[str, object] = {
        "vm": "main-1234abcd",
        "allow": (parse("plain.example"), parse("*.github.com")),
        "secrets": (
            LoadedSecret("API_KEY", (parse("api.example"),), "x-api-key", VALUE),
            LoadedSecret("GH_TOKEN", (parse("api.github.com"),), None, "ghp-value"),
        ),
        "state_dir": None,
    }
    return Policy(**(base | over))  # type: ignore[arg-type]


def ask(p: Policy, host: str, *, scheme: str = "https", port: int = 443, **kw: object) -> object:
    args: dict[str, object] = {"url": f"{scheme}://{host}/", "header_values": [], "body": b""}
    return request_verdict(p, scheme=scheme, host=host, port=port, **(args | kw))  # type: ignore[arg-type]


def test_a_connect_is_allowed_only_to_the_list_and_the_secrets_domains() -> None:
    p = policy()
    assert connect_verdict(p, "plain.example", 443).decision == "allowed"
    assert connect_verdict(p, "api.github.com", 443).decision == "allowed"
    assert connect_verdict(p, "api.example", 443).decision == "allowed"  # a secret's domain
    denied = connect_verdict(p, "evil.example", 443)
    assert denied.denied and "not on VM main-1234abcd's allowlist" in denied.reason
    assert connect_verdict(p, "plain.example", 22).denied


def test_tls_is_terminated_only_where_a_secret_goes() -> None:
    p = policy()
    assert p.intercept("api.example", 443) and p.intercept("api.github.com", 443)
    assert not p.intercept("plain.example", 443) and not p.intercept("x.github.com", 443)


def test_a_secret_with_a_header_is_set_on_every_request_to_its_domain() -> None:
    v = ask(policy(), "api.example")
    assert v.decision == "injected" and v.secrets == ["API_KEY"]  # type: ignore[attr-defined]
    assert v.set_headers == [("x-api-key", VALUE)]  # type: ignore[attr-defined]


def test_the_placeholder_becomes_the_value_only_at_the_secrets_domain() -> None:
    bearer = [f"Bearer {placeholder('GH_TOKEN')}"]
    v = ask(policy(), "api.github.com", header_values=bearer)
    assert v.decision == "injected"  # type: ignore[attr-defined]
    assert v.replacements == [(placeholder("GH_TOKEN"), "ghp-value")]  # type: ignore[attr-defined]
    # Without the placeholder (and no --header) nothing is added.
    assert ask(policy(), "api.github.com").decision == "allowed"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "where",
    [
        {"header_values": ["token agent-vm-placeholder-GH_TOKEN"]},
        {"url": "https://plain.example/?k=agent-vm-placeholder-GH_TOKEN"},
        {"body": b'{"key": "agent-vm-placeholder-GH_TOKEN"}'},
    ],
)
def test_a_placeholder_sent_anywhere_else_is_refused(where: dict[str, object]) -> None:
    v = ask(policy(), "plain.example", **where)
    assert v.denied  # type: ignore[attr-defined]
    assert "placeholder of secret GH_TOKEN" in v.reason  # type: ignore[attr-defined]


def test_a_secret_never_goes_over_plain_http() -> None:
    v = ask(policy(), "api.example", scheme="http", port=80)
    assert v.denied and "HTTPS only" in v.reason  # type: ignore[attr-defined]


def test_an_unlisted_request_is_refused_before_anything_else() -> None:
    v = ask(policy(), "evil.example", header_values=[placeholder("API_KEY")])
    assert v.denied and "allowlist" in v.reason  # type: ignore[attr-defined]


def test_the_403_names_the_vm_the_host_and_the_command_that_allows_it() -> None:
    p = policy(state_dir="/srv/agent vm")
    page = deny_page(
        p, "CONNECT", "evil.example", 8443, "evil.example:8443 is not on the allowlist"
    )
    assert "VM main-1234abcd refused CONNECT evil.example:8443" in page
    assert (
        "agent-vm --state-dir '/srv/agent vm' update main-1234abcd --add-allow evil.example:8443"
        in page
    )
    # Default ports need no :port.
    assert policy().allow_command("x.example", 443) == (
        "agent-vm update main-1234abcd --add-allow x.example"
    )


# --- secrets ------------------------------------------------------------------------------


@pytest.fixture
def egress(tmp_path: Path) -> EgressPaths:
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir(mode=0o700)
    return EgressPaths(vm_dir)


def test_from_env_stores_the_value_0600_and_never_in_the_index(
    egress: EgressPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_KEY", VALUE + "\n")
    secrets.add(egress, "API_KEY", ["api.example"], "x-api-key", None, "MY_KEY")
    stored = egress.secret_value("API_KEY")
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(egress.secrets_dir.stat().st_mode) == 0o700
    assert VALUE not in egress.secrets_index.read_text()
    (s,) = secrets.load(egress).secrets
    assert secrets.value_of(egress, s) == VALUE


def test_from_file_is_read_at_each_start(egress: EgressPaths, tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("first\n")
    secrets.add(egress, "TOKEN", ["api.example"], None, f, None)
    (s,) = secrets.load(egress).secrets
    f.write_text("rotated\n")
    assert secrets.value_of(egress, s) == "rotated"
    assert not egress.secret_value("TOKEN").exists()


def test_adding_again_replaces_and_remove_deletes_the_value(
    egress: EgressPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("V", "one")
    secrets.add(egress, "K", ["a.example"], None, None, "V")
    secrets.add(egress, "K", ["b.example"], "authorization", None, "V")
    (s,) = secrets.load(egress).secrets
    assert (s.domains, s.header) == (["b.example"], "authorization")
    secrets.remove(egress, "K")
    assert secrets.load(egress).secrets == [] and not egress.secret_value("K").exists()


@pytest.mark.parametrize(
    ("value", "why"),
    [("", "empty"), ("a\r\nX-Evil: 1", "line break"), ("a\x07b", "control character")],
)
def test_a_value_that_would_break_the_header_is_refused(
    egress: EgressPaths, monkeypatch: pytest.MonkeyPatch, value: str, why: str
) -> None:
    monkeypatch.setenv("V", value)
    with pytest.raises(Exception, match=why):
        secrets.add(egress, "K", ["a.example"], None, None, "V")


# --- setup: what start writes ----------------------------------------------------------


def vm_cfg(**over: object) -> VmConfig:
    base: dict[str, object] = {
        "name": "main-1234abcd",
        "branch": "main",
        "repo": "/r",
        "commit": "0" * 40,
        "workspace": "/w",
        "workspace_owned": True,
        "ssh_port": 2222,
        "agent_port": 8000,
        "network": Network.ALLOW,
        "allow": ["plain.example"],
        "created_at": datetime.now(UTC),
    }
    return VmConfig.model_validate(base | over)


def test_prepare_writes_the_engine_config_and_the_guest_env_without_values(
    egress: EgressPaths, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("V", VALUE)
    secrets.add(egress, "API_KEY", ["api.example"], "x-api-key", None, "V")
    setup.prepare(egress.vm_dir, vm_cfg(), tmp_path / "state")
    config = store.load(egress.config, EgressConfig)
    assert config.allow == ["plain.example"] and config.state_dir == str(tmp_path / "state")
    env = egress.guest_env.read_text()
    assert "https_proxy=http://10.0.2.100:3128\n" in env
    assert f"API_KEY={placeholder('API_KEY')}\n" in env
    assert VALUE not in env and VALUE not in egress.config.read_text()


def test_prepare_refuses_a_secret_file_that_is_gone(egress: EgressPaths, tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("x\n")
    secrets.add(egress, "T", ["api.example"], None, f, None)
    f.unlink()
    with pytest.raises(Exception, match="secret T: cannot read the secret file"):
        setup.prepare(egress.vm_dir, vm_cfg(), tmp_path / "state")


@pytest.mark.parametrize(
    ("whole", "add", "remove", "result"),
    [
        (None, [], [], None),
        (["x.example"], [], [], ["x.example"]),
        (None, ["New.example"], [], ["a.example", "new.example"]),
        (None, ["a.example"], [], ["a.example"]),
        (None, [], ["a.example"], []),
        ([], ["b.example"], [], ["b.example"]),
    ],
)
def test_update_edits_the_allowlist(
    whole: list[str] | None, add: list[str], remove: list[str], result: list[str] | None
) -> None:
    from agent_vm.lifecycle import Changes

    ch = Changes(allow=whole, add_allow=add, remove_allow=remove)
    assert setup.edit_allowlist(["a.example"], ch) == result


# --- the decision log ------------------------------------------------------------------------


def entry(decision: str, when: datetime, host: str = "h.example") -> NetworkDecision:
    return NetworkDecision.model_validate(
        {
            "time": when,
            "method": "GET",
            "host": host,
            "port": 443,
            "decision": decision,
            "reason": "r",
        }
    )


def test_counts_since_the_start_and_torn_lines_are_skipped(tmp_path: Path) -> None:
    log = tmp_path / "network.log"
    now = datetime.now(UTC)
    netlog.append(log, entry("allowed", now - timedelta(hours=1)))
    netlog.append(log, entry("injected", now))
    netlog.append(log, entry("denied", now))
    netlog.append(log, entry("allowed", now))
    with open(log, "a") as f:
        f.write('{"time": "2026-')  # a crash mid-line
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert netlog.counts_since(log, now - timedelta(minutes=1)) == netlog.Counts(2, 1)
    assert len(list(netlog.read(log))) == 4


def test_rendering_escapes_control_characters_in_guest_strings() -> None:
    line = netlog.render(entry("denied", datetime.now(UTC), host="evil\x1b[2J.example"))
    assert "\x1b" not in line and "evil\\x1b[2J.example:443" in line
    # Nor can a guest-chosen name forge a further line of the log.
    forged = netlog.render(entry("denied", datetime.now(UTC), host="a\n2026-01-01 allowed b"))
    assert "\n" not in forged and "a\\x0a2026-01-01 allowed b" in forged


# --- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(make_repo(tmp_path / "repo"))
    return tmp_path / "state"


def _vm(state: Path) -> tuple[str, Path]:
    layout = StateLayout(state)
    (name,) = store.vm_names(layout)
    return name, layout.vm(name).dir


def test_a_new_vm_is_locked_down_by_default(
    capsys: pytest.CaptureFixture[str], state: Path
) -> None:
    assert run_cli(capsys, "--state-dir", str(state), "create").code == 0
    _name, vm_dir = _vm(state)
    cfg = store.load(vm_dir / "vm.json", VmConfig)
    assert cfg.network == Network.ALLOW and cfg.allow == list(DEFAULT_ALLOW)


def test_allow_and_allow_file_together(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path
) -> None:
    f = tmp_path / "allow.txt"
    f.write_text("# more\n*.github.com\n")
    res = run_cli(
        capsys,
        "--state-dir",
        str(state),
        "create",
        "--allow",
        "api.anthropic.com",
        "--allow-file",
        str(f),
    )
    assert res.code == 0
    _, vm_dir = _vm(state)
    assert store.load(vm_dir / "vm.json", VmConfig).allow == ["api.anthropic.com", "*.github.com"]
    res = run_cli(
        capsys,
        "--state-dir",
        str(state),
        "update",
        "--add-allow",
        "github.com:22",
        "--remove-allow",
        "*.github.com",
    )
    assert res.code == 0 and "applies on next start" in res.out
    assert store.load(vm_dir / "vm.json", VmConfig).allow == ["api.anthropic.com", "github.com:22"]


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["create", "--allow", "*.com"], 2, ["--allow", "at least two labels"]),
        (["create", "--allow-file", "/nonexistent/x"], 2, ["--allow-file"]),
        (["update", "--remove-allow", "nothere.example"], 2, ["not on the allowlist"]),
        (["secret", "add", "K", "--domain", "a.example"], 2, ["--from-file"]),
        (
            ["secret", "add", "K", "--domain", "a.example", "--from-env", "NOPE_UNSET"],
            2,
            ["NOPE_UNSET", "not set"],
        ),
        (["secret", "add", "1BAD", "--domain", "a.example", "--from-env", "HOME"], 2, ["name"]),
        (["secret", "add", "K", "--domain", "*", "--from-env", "HOME"], 2, ["--domain"]),
        (
            [
                "secret",
                "add",
                "K",
                "--domain",
                "a.example",
                "--header",
                "bad header",
                "--from-env",
                "HOME",
            ],
            2,
            ["header"],
        ),
        (["secret", "remove", "NOPE"], 3, ["no secret named 'NOPE'"]),
        (
            ["secret", "add", "a", "b", "c", "--domain", "x.example", "--from-env", "HOME"],
            2,
            ["[BRANCH] NAME"],
        ),
        (["logs", "--json"], 2, ["--json goes with --network"]),
    ],
)
def test_bad_egress_input_is_one_line(
    capsys: pytest.CaptureFixture[str], state: Path, argv: list[str], code: int, words: list[str]
) -> None:
    if argv[0] != "create":
        assert run_cli(capsys, "--state-dir", str(state), "create").code == 0
    assert_error(run_cli(capsys, "--state-dir", str(state), *argv), code, *words)


def test_secret_add_list_remove(
    capsys: pytest.CaptureFixture[str], state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_cli(capsys, "--state-dir", str(state), "create").code == 0
    _name, vm_dir = _vm(state)
    monkeypatch.setenv("ANTHROPIC_KEY_ON_HOST", VALUE)
    res = run_cli(
        capsys,
        "--state-dir",
        str(state),
        "secret",
        "add",
        "main",
        "ANTHROPIC_API_KEY",
        "--domain",
        "api.anthropic.com",
        "--header",
        "x-api-key",
        "--from-env",
        "ANTHROPIC_KEY_ON_HOST",
    )
    assert res.code == 0, res.err
    assert "the guest sees ANTHROPIC_API_KEY=agent-vm-placeholder-ANTHROPIC_API_KEY" in res.out
    assert VALUE not in res.out + res.err
    listed = run_cli(capsys, "--state-dir", str(state), "secret", "list", "--json")
    assert json.loads(listed.out)["secrets"][0]["domains"] == ["api.anthropic.com"]
    assert VALUE not in listed.out
    plain = run_cli(capsys, "--state-dir", str(state), "secret", "list")
    assert plain.out == "ANTHROPIC_API_KEY: api.anthropic.com, header x-api-key (stored)\n"
    res = run_cli(capsys, "--state-dir", str(state), "secret", "remove", "ANTHROPIC_API_KEY")
    assert res.code == 0 and not (vm_dir / "egress" / "secrets" / "ANTHROPIC_API_KEY").exists()


def test_logs_network_prints_the_decisions(capsys: pytest.CaptureFixture[str], state: Path) -> None:
    assert run_cli(capsys, "--state-dir", str(state), "create").code == 0
    _, vm_dir = _vm(state)
    (vm_dir / "egress").mkdir()
    netlog.append(vm_dir / "egress" / "network.log", entry("denied", datetime.now(UTC)))
    res = run_cli(capsys, "--state-dir", str(state), "logs", "--network", "--json")
    assert res.code == 0 and json.loads(res.out)["decision"] == "denied"
    res = run_cli(capsys, "--state-dir", str(state), "logs", "--network")
    assert "denied   GET h.example:443: r" in res.out


# --- status ------------------------------------------------------------------------------------


def test_status_shows_the_proxy_and_says_why_the_guest_reaches_nothing_without_it(
    tmp_path: Path,
) -> None:
    """A running allow VM (a sleeping stand-in for QEMU) with a proxy (another
    stand-in naming the VM dir, as the engine does): counts since the start;
    the proxy gone: fail closed, said so."""
    import sys

    from agent_vm import procs, status
    from agent_vm.lifecycle import Context
    from agent_vm.models import EngineRuntime, Runtime, VmState
    from unit_fakes import spawn_exec, vm_config, write_vm

    layout = StateLayout(tmp_path / "state")
    cfg = vm_config("eg-0123abcd", network=Network.ALLOW)
    vm = write_vm(layout, cfg)
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    qemu = spawn_exec([*sleep, f"{vm.dir}/qemu.pid"])
    engine = spawn_exec([*sleep, str(vm.dir)])
    try:
        started = datetime.now(UTC) - timedelta(seconds=30)
        rt = Runtime(
            state=VmState.RUNNING,
            pid=qemu.pid,
            pid_start_time=procs.start_time(qemu.pid),
            started_at=started,
        )
        write_vm(layout, cfg, rt)
        paths = EgressPaths(vm.dir)
        paths.dir.mkdir()
        store.save(
            paths.engine_runtime,
            EngineRuntime(
                pid=engine.pid, pid_start_time=procs.start_time(engine.pid), started_at=started
            ),
        )
        netlog.append(paths.log, entry("denied", started - timedelta(hours=1)))  # an earlier run
        netlog.append(paths.log, entry("allowed", datetime.now(UTC)))
        netlog.append(paths.log, entry("denied", datetime.now(UTC)))
        ctx = Context(layout=layout)
        st = status.status(ctx, vm, probe=False)
        assert st.network == "allow" and st.egress is not None
        assert (st.egress.proxy_running, st.egress.allowed, st.egress.denied) == (True, 1, 1)
        assert "proxy running; 1 allowed, 1 denied since start" in status.render_status(st)

        engine.kill()
        engine.wait()
        st = status.status(ctx, vm, probe=False)
        assert st.egress is not None and not st.egress.proxy_running
        assert "reaches nothing (fail closed)" in (st.egress.reason or "")
        assert "PROXY DOWN" in status.render_status(st)
    finally:
        for p in (qemu, engine):
            p.kill()
            p.wait()


def test_an_allowlist_change_needs_no_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent_vm import lifecycle, state

    layout = StateLayout(tmp_path / "state")
    from unit_fakes import vm_config, write_vm

    vm = write_vm(layout, vm_config("eg-0123abcd", network=Network.ALLOW, allow=["a.example"]))
    monkeypatch.setattr(state, "alive", lambda rt, d: True)
    ctx = lifecycle.Context(layout=layout)
    cfg, restart = lifecycle.update(ctx, vm, lifecycle.Changes(add_allow=["b.example"]))
    assert cfg.allow == ["a.example", "b.example"] and restart is False
    _, restart = lifecycle.update(ctx, vm, lifecycle.Changes(settings={"memory_mib": 4096}))
    assert restart is True


def test_the_engine_exits_at_once_when_its_runner_is_already_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent_vm.egress import engine

    seen: list[int] = []

    def gone(parent: int) -> bool:
        seen.append(parent)
        return False

    monkeypatch.setattr(engine.procs, "die_with_parent", gone)
    monkeypatch.setenv(engine.PARENT_ENV, "4242")
    assert engine.main([str(tmp_path)]) == 0
    assert seen == [4242]  # the runner's own pid, not whoever is our parent now
    assert "the runner that started this proxy is gone" in capsys.readouterr().err
