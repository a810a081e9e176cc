"""A service's http or tcp probe as one blocking check, for the launcher's thread that
starts dependents before the supervisor loads (this module imports no trio).

It asks what the supervisor's own probe asks (the same request, judged by the same
:func:`~hearthlink_trio.probes.verdict.judge_answer`), so a service it finds ready is one
the supervisor's first probe would pass.
"""

from __future__ import annotations

import socket

import h11

from hearthlink_trio.config import Service
from hearthlink_trio.probes.verdict import judge_answer

#: The probe kinds checked here; the others wait for the supervisor.
CHECKED_KINDS = frozenset({"http", "tcp"})
READ_BYTES = 64 * 1024
#: A /health answer larger than this fails (it is a few dozen bytes).
MAX_BODY_BYTES = 1024 * 1024


def passes_now(service: Service, timeout: float) -> bool:
    """Does ``service`` pass its http or tcp probe now, within ``timeout`` seconds? False
    for every other probe kind."""
    if service.port is None or service.probe.kind not in CHECKED_KINDS:
        return False
    try:
        infos = socket.getaddrinfo(service.host, service.port, type=socket.SOCK_STREAM)
        family, type_, proto, _, addr = infos[0]
        with socket.socket(family, type_, proto) as sock:
            sock.settimeout(timeout)
            sock.connect(addr)
            if service.probe.kind == "tcp":
                return True
            return _answer_passes(sock, service)
    except (OSError, h11.ProtocolError):
        return False


def _answer_passes(sock: socket.socket, service: Service) -> bool:
    probe = service.probe
    netloc = (
        f"[{service.host}]:{service.port}"
        if ":" in service.host
        else (f"{service.host}:{service.port}")
    )
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=probe.path or "/",
        headers=[
            ("Host", netloc),
            ("User-Agent", "hearthlink-probe"),
            ("Accept", "application/json"),
            ("Connection", "close"),
        ],
    )
    sock.sendall(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
    status, ctype, body = 0, "", bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(READ_BYTES))
        elif isinstance(event, h11.Response):
            status = event.status_code
            for header, value in event.headers:
                if header == b"content-type":
                    ctype = value.decode("latin-1")
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                return False
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
    if not isinstance(event, h11.EndOfMessage):
        return False
    return (
        judge_answer(status, ctype, bytes(body), expected=probe.status, json_body=probe.json)
        is None
    )
