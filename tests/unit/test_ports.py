"""ports: the first port that is free on the host *and* unused by every other
VM; a pinned port that is taken, or an exhausted range, is a typed error."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_vm import ports
from agent_vm.errors import PortUnavailable
from agent_vm.models import Runtime, VmState
from agent_vm.paths import StateLayout
from agent_vm.ports import taken_by_vms as taken_ports
from unit_fakes import vm_config, write_vm


@pytest.fixture
def listener() -> Iterator[int]:
    """A port some other program is listening on (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_listening_port_is_not_free(listener: int) -> None:
    assert not ports.is_free("127.0.0.1", listener)


def test_a_closed_port_is_free() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert ports.is_free("127.0.0.1", port)


def test_a_wildcard_listener_takes_the_port_on_loopback() -> None:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        assert not ports.is_free("127.0.0.1", s.getsockname()[1])


def test_allocation_skips_a_port_bound_by_a_real_socket(listener: int) -> None:
    got = ports.allocate("127.0.0.1", listener, taken=())
    assert got != listener and got > listener
    assert ports.is_free("127.0.0.1", got)


def test_allocation_never_returns_a_port_of_another_vm(listener: int) -> None:
    taken = {listener + 1, listener + 2, listener + 3}
    got = ports.allocate("127.0.0.1", listener, taken=taken)
    assert got not in taken and got != listener and got > listener + 3


def test_allocation_takes_the_start_when_free() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert ports.allocate("127.0.0.1", port, taken=[]) == port


def test_pinned_port_in_use_by_a_process(listener: int) -> None:
    with pytest.raises(PortUnavailable) as exc:
        ports.require("127.0.0.1", listener, set(), "SSH")
    assert exc.value.exit_code == 12
    assert exc.value.message == f"SSH port {listener} on 127.0.0.1 is in use by another process"
    assert exc.value.hint is not None


def test_pinned_port_of_another_vm() -> None:
    with pytest.raises(PortUnavailable) as exc:
        ports.require("127.0.0.1", 40000, {40000}, "agent")
    assert exc.value.message == "agent port 40000 is already used by another VM"


def test_pinned_port_that_is_free() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert ports.require("127.0.0.1", port, {port + 1}, "SSH") == port


def test_range_exhausted_is_a_typed_error() -> None:
    with pytest.raises(PortUnavailable) as exc:
        ports.allocate("127.0.0.1", 65534, taken={65534, 65535})
    assert exc.value.exit_code == 12
    assert exc.value.message == "no free port from 65534 to 65535 on 127.0.0.1"


def test_range_exhausted_by_real_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every port from the start on bound: allocation ends with an error,
    it does not wrap around or return a busy port."""
    socks = []
    try:
        for port in (65533, 65534, 65535):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()  # someone else has it: just as taken
                continue
            s.listen()
            socks.append(s)
        with pytest.raises(PortUnavailable):
            ports.allocate("127.0.0.1", 65533, taken=())
    finally:
        for s in socks:
            s.close()


def test_taken_ports_are_every_other_vms_reserved_and_live_ports(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path)
    write_vm(layout, vm_config("a-00000000", ssh_port=2222, agent_port=8000))
    write_vm(
        layout,
        vm_config("b-00000000", ssh_port=2223, agent_port=8001),
        Runtime(state=VmState.RUNNING, ssh_port=2300, agent_port=8100),
    )
    broken = write_vm(layout, vm_config("c-00000000", ssh_port=2224, agent_port=8002))
    broken.runtime.write_text("{corrupt")
    assert taken_ports(layout) == {2222, 8000, 2223, 8001, 2300, 8100, 2224, 8002}
    assert taken_ports(layout, exclude="b-00000000") == {2222, 8000, 2224, 8002}


def test_allocation_against_other_vms(tmp_path: Path, listener: int) -> None:
    layout = StateLayout(tmp_path)
    write_vm(layout, vm_config("a-00000000", ssh_port=listener + 1, agent_port=listener + 2))
    got = ports.allocate("127.0.0.1", listener, taken_ports(layout))
    assert got not in (listener, listener + 1, listener + 2)
