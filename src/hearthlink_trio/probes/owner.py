"""Probes that only one process may pass: the one that accepted the probe's connection.

On a socket the supervisor holds, every process of the service accepts on the same port,
so during a rolling restart the old process may answer a probe meant for the new one. Here
the probe connects, waits until some process has accepted the connection, and looks the
server side of it up: its socket inode (``/proc/net/tcp``, the entry whose remote port is
the probe's own local port) must be among the open files of the new process or of its
process group. Accepted by another process, the connection is closed and the probe tries
again, until the new process accepts one or the time is up.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

import h11
import trio

from hearthlink_trio.probes.http import exchange, reason_of
from hearthlink_trio.process.procfs import all_pids, proc_stat, socket_holder, tcp_sockets

#: How often the accepting process is looked for while the connection waits to be accepted.
ACCEPT_POLL_SECONDS = 0.005
#: Pause between two tries when another process accepted (it answers fast: retry soon).
RETRY_SECONDS = 0.01
ESTABLISHED = "01"


def server_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the server side of the loopback connection from ``client_port`` to
    ``server_port``; None while no process has accepted it (the kernel shows inode 0)."""
    for sock in tcp_sockets():
        if (
            sock.state == ESTABLISHED
            and sock.local_port == server_port
            and sock.remote_port == client_port
        ):
            return None if sock.inode == "0" else sock.inode
    return None


def group_pids(pid: int) -> list[int]:
    """``pid`` and every process in its process group (a service leads its own group)."""
    found = [pid]
    for other in all_pids():
        if other != pid and (stat := proc_stat(other)) is not None and stat.pgid == pid:
            found.append(other)
    return found


def holds_inode(pids: Iterable[int], inode: str) -> bool:
    """Has one of ``pids`` the socket ``inode`` open?"""
    return socket_holder([inode], pids) is not None


async def _accepted_by(sock: trio.socket.SocketType, port: int, pid: int) -> bool:
    """Wait until the connection ``sock`` is accepted; True if ``pid`` (or its group) did."""
    client_port = sock.getsockname()[1]
    while True:
        inode = server_inode(port, client_port)
        if inode is not None:
            return holds_inode(group_pids(pid), inode)
        await trio.sleep(ACCEPT_POLL_SECONDS)


async def probe_owned(
    host: str,
    port: int,
    pid: int,
    timeout: float,
    *,
    url: str | None = None,
    status: int = 200,
    json_body: bool = True,
) -> str | None:
    """None once process ``pid`` itself accepts a connection to ``host:port`` (and, with
    ``url``, answers it as the http probe requires) within ``timeout``, else why not."""
    request = None
    if url is not None:
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = h11.Request(
            method="GET",
            target=target,
            headers=[("Host", parts.netloc), ("User-Agent", "hearthlink-probe")],
        )
    reason = "accepted by another process"
    with trio.move_on_after(timeout):
        while True:
            try:
                infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                family, type_, proto, _, addr = infos[0]
                sock = trio.socket.socket(family, type_, proto)
            except OSError as exc:
                return reason_of(exc)
            stream = trio.SocketStream(sock)
            try:
                try:
                    await sock.connect(addr)
                except OSError as exc:
                    return reason_of(exc)
                if await _accepted_by(sock, port, pid):
                    if request is None:
                        return None
                    conn = h11.Connection(h11.CLIENT)
                    try:
                        return await exchange(stream, conn, request, status, json_body)
                    except (trio.BrokenResourceError, OSError, h11.ProtocolError) as exc:
                        return reason_of(exc.__cause__ or exc)
            finally:
                await trio.aclose_forcefully(stream)
            await trio.sleep(RETRY_SECONDS)
    return f"not accepted by the new process within {timeout:g}s ({reason})"
