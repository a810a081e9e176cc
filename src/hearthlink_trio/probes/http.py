"""The HTTP health probe: one prober for every service, one kept-alive connection each.

httpx's connection pool scans every pooled connection on each request and each response
close (``has_expired`` → a ``select()`` per idle socket, and an O(N²) list comprehension in
httpcore 1.0.x), so a probe cost grew with the number of services. Here each probed URL owns
at most one idle HTTP/1.1 connection (h11 over a trio socket), found by a dict lookup: a
probe costs the same for 4 services as for 100.
"""

from __future__ import annotations

import os
import socket
from types import TracebackType
from urllib.parse import urlsplit

import h11
import trio

from hearthlink_trio.probes.verdict import judge_answer

READ_BYTES = 64 * 1024
#: A /health answer larger than this is refused (it is a few dozen bytes).
MAX_BODY_BYTES = 1024 * 1024


class _Target:
    """A probed URL, parsed once."""

    __slots__ = ("host", "port", "request")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.request = h11.Request(
            method="GET",
            target=path,
            headers=[
                ("Host", parts.netloc),
                ("User-Agent", "hearthlink-probe"),
                ("Accept", "application/json"),
            ],
        )


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        # Resolver errors carry negative EAI_* codes that os.strerror does not know.
        return f"cannot resolve host: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.errno:
        # "Connection refused", "Connection reset by peer", … (the original design's
        # wording); trio's own message adds the address, which the line already names.
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


class HttpProber:
    """Probes ``/health`` URLs. A probe passes on HTTP 200 with a JSON body whose
    ``status`` is ``"healthy"``, within the timeout.
    """

    def __init__(self) -> None:
        self._targets: dict[str, _Target] = {}
        self._idle: dict[str, tuple[trio.SocketStream, h11.Connection]] = {}

    async def __aenter__(self) -> HttpProber:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every kept connection."""
        idle, self._idle = self._idle, {}
        with trio.CancelScope(shield=True):
            for stream, _ in idle.values():
                await trio.aclose_forcefully(stream)

    async def _connect(self, target: _Target) -> trio.SocketStream:
        infos = await trio.socket.getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM
        )  # numeric hosts resolve at once, without a thread
        family, type_, proto, _, addr = infos[0]
        sock = trio.socket.socket(family, type_, proto)
        try:
            await sock.connect(addr)
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)

    def forget(self, url: str) -> None:
        """Close the kept connection to ``url`` (its process is gone, or the service is)."""
        kept = self._idle.pop(url, None)
        if kept is not None:
            kept[0].socket.close()

    async def probe(
        self, url: str, timeout: float, *, status: int = 200, json_body: bool = True
    ) -> str | None:
        """None if healthy, else a short reason (``Connection refused``, ``HTTP 503``…).

        Healthy is HTTP ``status`` and, with ``json_body``, a JSON body whose ``status`` is
        ``"healthy"``.
        """
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = _Target(url)
        with trio.move_on_after(timeout):
            while True:
                kept = self._idle.pop(url, None)
                if kept is None:
                    try:
                        stream = await self._connect(target)
                    except OSError as exc:
                        return reason_of(exc)
                    conn = h11.Connection(h11.CLIENT)
                else:
                    stream, conn = kept
                    conn.start_next_cycle()
                try:
                    result = await exchange(stream, conn, target.request, status, json_body)
                except (trio.BrokenResourceError, OSError, h11.ProtocolError) as exc:
                    await trio.aclose_forcefully(stream)
                    if kept is not None:
                        continue  # the server had closed the kept connection: once more, anew
                    return reason_of(exc.__cause__ or exc)
                except BaseException:  # cancelled (timeout, shutdown): never leak the socket
                    await trio.aclose_forcefully(stream)
                    raise
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    self._idle[url] = (stream, conn)
                else:
                    await trio.aclose_forcefully(stream)
                return result
        return f"timed out after {timeout:g}s"


async def exchange(
    stream: trio.SocketStream,
    conn: h11.Connection,
    request: h11.Request,
    expected: int,
    json_body: bool,
) -> str | None:
    """Send ``request`` on ``stream`` and judge the answer: None if it is HTTP ``expected``
    (and, with ``json_body``, a JSON body whose ``status`` is ``"healthy"``), else why not.

    Raises:
        trio.BrokenResourceError, OSError, h11.ProtocolError: the exchange broke off.
    """
    await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
    status, ctype, body = 0, "", bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(READ_BYTES))
        elif isinstance(event, h11.Response):
            status = event.status_code
            for header, header_value in event.headers:
                if header == b"content-type":
                    ctype = header_value.decode("latin-1")
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                raise h11.LocalProtocolError("health answer too large")
        elif isinstance(event, h11.EndOfMessage):
            break
        elif isinstance(event, h11.ConnectionClosed):
            raise trio.BrokenResourceError("connection closed before the answer")
    return judge_answer(status, ctype, bytes(body), expected=expected, json_body=json_body)
