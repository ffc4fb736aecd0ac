"""The only way into the engine: a unix socket in the VM's 0700 state dir.

mitmproxy listens on TCP only (its issue #7072), and a loopback port is
reachable by every local user and process. So it listens on an ephemeral
127.0.0.1 port, and the bridge, in the same process, is its only legitimate
client: each connection on `egress/proxy.sock` (the relay QEMU starts per
guest connection) becomes one TCP connection whose source port the bridge
binds *before* connecting and records. The addon drops every client whose
source port is not in that set. Another user can connect to the port but
is cut off at once; it cannot reach the socket at all (the directory is
0700), and no credential exists that could leak through a command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

CHUNK = 65536


class Bridge:
    def __init__(
        self,
        socket_path: Path,
        target: tuple[str, int],
        on_close: Callable[[int, int], None],
    ) -> None:
        self.socket_path = socket_path
        self.target = target
        self.on_close = on_close  # (source port, bytes both ways)
        self.own_ports: set[int] = set()
        self._server: asyncio.AbstractServer | None = None

    def is_ours(self, peer: tuple[str, int] | None) -> bool:
        return peer is not None and peer[0] == "127.0.0.1" and peer[1] in self.own_ports

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        old = os.umask(0o077)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path))
        finally:
            os.umask(old)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        port = 0
        total = [0]
        try:
            # Bound first: the port is known (and ours) before mitmproxy can
            # see the connection.
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            self.own_ports.add(port)
            await loop.sock_connect(sock, self.target)
            up_reader, up_writer = await asyncio.open_connection(sock=sock)
        except OSError:
            self.own_ports.discard(port)
            sock.close()
            writer.close()
            return
        try:
            await asyncio.gather(
                _pump(reader, up_writer, total),
                _pump(up_reader, writer, total),
            )
        finally:
            self.own_ports.discard(port)
            for w in (writer, up_writer):
                w.close()
            self.on_close(port, total[0])


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, total: list[int]) -> None:
    try:
        while data := await src.read(CHUNK):
            total[0] += len(data)
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (ConnectionError, OSError):
        dst.close()
