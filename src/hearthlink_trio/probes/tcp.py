"""The tcp probe: the service accepts a connection on its port."""

from __future__ import annotations

import socket

import trio

from hearthlink_trio.probes.http import reason_of


async def probe_tcp(host: str, port: int, timeout: float) -> str | None:
    """None once a connection to ``host:port`` is accepted within ``timeout``, else why not."""
    with trio.move_on_after(timeout):
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, type_, proto, _, addr = infos[0]
            with trio.socket.socket(family, type_, proto) as sock:
                await sock.connect(addr)
        except OSError as exc:
            return reason_of(exc)
        return None
    return f"timed out after {timeout:g}s"
