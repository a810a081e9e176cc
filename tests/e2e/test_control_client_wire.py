"""The control client against a real Unix socket that answers with exactly the bytes a test
wrote (bodies in pieces, lines split across chunks, answers that break off or are not
HTTP), and against a real supervisor for what must reach it intact."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hearthlink_trio.control.client import ControlClient
from hearthlink_trio.control.errors import ControlError
from tests.stack import Stack, run_command, running


@contextmanager
def answering(path: Path, *pieces: bytes, close: bool = True) -> Iterator[list[bytes]]:
    """A server on ``path`` for one connection: reads the request head, sends ``pieces``
    (one ``sendall`` each), then closes the connection (or, without ``close``, keeps it open
    until the test ends). Yields the request heads it read."""
    requests: list[bytes] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            requests.append(head)
            for piece in pieces:
                conn.sendall(piece)
            if not close:
                done.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield requests
    finally:
        done.set()
        thread.join(10)
        listener.close()
        assert not thread.is_alive()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_a_body_in_pieces_is_read_whole(tmp_path: Path) -> None:
    body = json.dumps({"status": "healthy", "services": [{"name": "x" * 5000}]}).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    path = tmp_path / "s.sock"
    with answering(path, head % len(body), body[:10], body[10:4000], body[4000:]) as requests:
        health = ControlClient(path, timeout=5).health()
    assert health["services"][0]["name"] == "x" * 5000
    assert requests[0].startswith(b"GET /v1/health HTTP/1.1\r\n")
    assert b"host: hearthlink\r\n" in requests[0].lower()


def test_a_post_says_it_has_no_body(tmp_path: Path) -> None:
    body = b'{"service": "web", "action": "restart", "result": "restarting"}'
    path = tmp_path / "s.sock"
    answer = b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with answering(path, answer) as requests:
        assert ControlClient(path).restart("web")["result"] == "restarting"
    assert requests[0].startswith(b"POST /v1/services/web/restart HTTP/1.1\r\n")
    assert b"content-length: 0\r\n" in requests[0].lower()


def test_stream_lines_split_across_chunks_come_out_whole(tmp_path: Path) -> None:
    lines = [{"type": "snapshot", "services": []}, {"type": "supervisor", "line": "a" * 300}]
    text = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    path = tmp_path / "s.sock"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    # Cut inside the first line, and again inside the second: a line is never one chunk.
    pieces = [_chunk(text[:7]), _chunk(text[7:60]), _chunk(text[60:]), b"0\r\n\r\n"]
    with answering(path, head, *pieces):
        assert list(ControlClient(path).events()) == lines


def test_a_stream_that_breaks_off_just_ends(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    # The supervisor goes away after one line and half of the next.
    with answering(path, head, _chunk(b'{"type": "snapshot"}\n{"type"')):
        assert list(ControlClient(path).events()) == [{"type": "snapshot"}]


def test_an_answer_cut_short_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with (
        answering(path, b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"status"'),
        pytest.raises(ControlError, match=r"^talking to the supervisor on .*s\.sock: "),
    ):
        ControlClient(path).health()


def test_an_answer_that_is_not_http_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with (
        answering(path, b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
        pytest.raises(ControlError, match=r"^talking to the supervisor on "),
    ):
        ControlClient(path).health()


def test_no_answer_in_time_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with (
        answering(path, close=False),
        pytest.raises(ControlError, match=r"did not answer within 0\.2s$"),
    ):
        ControlClient(path, timeout=0.2).health()


def test_a_name_that_cannot_stand_in_a_request_line_still_gets_its_answer(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path)
    stack.services["idle"] = {"command": ["sleep", "600"], "probe": "none"}
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("^idle service is healthy$")
        for name in ("é", "a b"):
            for action in ("restart", "stop", "start"):
                odd = run_command(action, name, "--config", str(config), cwd=tmp_path)
                assert (odd.returncode, odd.stdout) == (1, ""), odd.stderr
                assert odd.stderr.startswith(f"no service named {name!r}"), odd.stderr
