"""Malformed HTTP on the control socket of a real ``hearthlink run``: each gets a JSON answer
or nothing, no action is taken on a request cut short, and the supervisor's stderr never
holds a traceback."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.stack import Running, running, write_config

SLEEP = shutil.which("sleep") or "/bin/sleep"
WEBSOCKET = (
    b"GET /v1/health HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
H2C = (
    b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
)
#: The HTTP/2 connection preface and an empty SETTINGS frame.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")


@pytest.fixture
def supervisor() -> Iterator[tuple[Running, Path]]:
    """A running supervisor of one service, and its control socket; stopped by SIGTERM
    at the end, which must give exit 0 and a stderr without a traceback."""
    with tempfile.TemporaryDirectory(prefix="hl-") as tmp:  # short: the socket's path
        root = Path(tmp)
        config = write_config(
            root / "hearthlink.toml",
            {
                "supervisor": {"data_dir": str(root / "data"), "stop_timeout": 2.0},
                "services.idle": {"command": [SLEEP, "60"], "probe": "none"},
            },
        )
        sock = root / "data" / "run" / "hearthlink.sock"
        with running(config) as sup:
            sup.wait_line(r"idle service is healthy")
            wait_for(sock.exists, what="the control socket")
            yield sup, sock
            sup.signal(signal.SIGTERM)
            assert sup.wait() == 0
            assert "Traceback" not in sup.stderr(), sup.stderr()


def exchange(sock: Path, data: bytes, *, read: bool = True) -> bytes:
    """Send ``data`` on a new connection; everything answered until the server closes or
    is quiet for 2 s (nothing when ``read`` is false: the client leaves at once)."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(sock))
        conn.sendall(data)
        if not read:
            return b""
        conn.settimeout(2.0)
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
        return answer


def head_and_json(answer: bytes) -> tuple[bytes, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    return head.split(b"\r\n")[0], json.loads(body[:length])


def test_websocket_upgrade_gets_the_json_error(supervisor: tuple[Running, Path]) -> None:
    _, sock = supervisor
    status, body = head_and_json(exchange(sock, WEBSOCKET))
    assert status.startswith(b"HTTP/1.1 400")
    assert body["error"] == "websocket_not_supported"


def test_h2c_upgrade_is_ignored_and_answered_in_http11(supervisor: tuple[Running, Path]) -> None:
    _, sock = supervisor
    answer = exchange(sock, H2C)
    assert b"101" not in answer.split(b"\r\n")[0]
    status, body = head_and_json(answer)
    assert status.startswith(b"HTTP/1.1 200")
    assert body["status"] == "healthy"


def test_http2_preface_is_refused(supervisor: tuple[Running, Path]) -> None:
    _, sock = supervisor
    status, body = head_and_json(exchange(sock, PREFACE))
    assert status.startswith(b"HTTP/1.1 505")
    assert body["error"] == "http_version_not_supported"


def test_a_huge_declared_body_is_refused_and_nothing_done(
    supervisor: tuple[Running, Path],
) -> None:
    sup, sock = supervisor
    request = b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n"
    status, body = head_and_json(exchange(sock, request + b"x" * 1024))
    assert status.startswith(b"HTTP/1.1 413")
    assert body["error"] == "body_too_large"
    # A body cut short by the client leaving is not acted on either.
    cut = b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"
    exchange(sock, cut, read=False)
    # A request that comes whole afterwards is served: the earlier ones did nothing.
    whole = b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    status, _ = head_and_json(exchange(sock, whole))
    assert status.startswith(b"HTTP/1.1 202")
    sup.wait_line(r"Config reloaded")
    assert len([line for line in sup.stderr().splitlines() if "Config reloaded" in line]) == 1


def test_clients_that_leave_early_leave_no_traceback(supervisor: tuple[Running, Path]) -> None:
    _, sock = supervisor
    for _ in range(40):
        exchange(sock, b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n", read=False)
        exchange(sock, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", read=False)
        exchange(sock, b"POST /v1/services/idle/restart HTTP/1.1\r\nHost: x\r\n", read=False)
    status, body = head_and_json(exchange(sock, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status.startswith(b"HTTP/1.1 200") and body["status"] == "healthy"
