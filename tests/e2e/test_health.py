"""The health prober against real HTTP servers on loopback."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from hearthlink_trio.probes.http import HttpProber as Prober
from tests.helpers import free_port


class Answer:
    """What the test server answers; tests change it between probes."""

    status = 200
    ctype = "application/json"
    body: bytes = json.dumps({"status": "healthy"}).encode()
    delay = 0.0


@contextmanager
def server(answer: type[Answer], port: int | None = None) -> Iterator[tuple[str, list[int]]]:
    connections: list[int] = []
    sockets: list[socket.socket] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def setup(self) -> None:
            super().setup()
            connections.append(self.client_address[1])
            sockets.append(self.connection)

        def do_GET(self) -> None:
            time.sleep(answer.delay)
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.ctype)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/health", connections
    finally:
        httpd.shutdown()
        httpd.server_close()
        for sock in sockets:  # kept-alive connections die with the server, as in a process
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        thread.join(5)


TIMEOUT = 0.5


async def probe(prober: Prober, url: str) -> str | None:
    return await prober.probe(url, TIMEOUT)


async def test_pass_and_every_failure_reason() -> None:
    class A(Answer):
        pass

    with server(A) as (url, connections):
        async with Prober() as prober:
            assert await probe(prober, url) is None
            assert await probe(prober, url) is None
            assert len(connections) == 1  # the connection is kept alive between probes
            A.status = 503
            assert await probe(prober, url) == "HTTP 503"
            A.status, A.ctype = 200, "text/html"
            assert await probe(prober, url) == "not JSON (Content-Type text/html)"
            A.ctype, A.body = "application/json", b"{not json"
            assert await probe(prober, url) == "invalid JSON body"
            A.body = json.dumps({"status": "starting"}).encode()
            assert await probe(prober, url) == "status 'starting'"
            A.body = json.dumps(["healthy"]).encode()
            assert await probe(prober, url) == "status None"


async def test_refused_and_timeout() -> None:
    async with Prober() as prober:
        assert await probe(prober, f"http://127.0.0.1:{free_port()}/health") == (
            "Connection refused"
        )

        class Slow(Answer):
            delay = 1.0

        with server(Slow) as (url, _):
            began = trio.current_time()
            assert await prober.probe(url, 0.3) == "timed out after 0.3s"
            assert trio.current_time() - began < 0.9


async def test_an_http_probe_with_its_own_status_and_no_json() -> None:
    class NoContent(Answer):
        status = 204
        body = b""
        ctype = "text/plain"

    async with Prober() as prober:
        with server(NoContent) as (url, _):
            assert await prober.probe(url, TIMEOUT, status=204, json_body=False) is None
            assert await prober.probe(url, TIMEOUT) == "HTTP 204"
            assert await prober.probe(url, TIMEOUT, status=200, json_body=False) == "HTTP 204"


async def test_an_unresolvable_host_is_named_as_such() -> None:
    # A name under the reserved .invalid domain never resolves.
    async with Prober() as prober:
        reason = await prober.probe("http://no-such-host.invalid:8080/health", 5.0)
    assert reason is not None
    assert reason.startswith("cannot resolve host: "), reason
    assert "Unknown error" not in reason


async def test_a_restarted_server_is_probed_on_a_fresh_connection() -> None:
    port = free_port()
    async with Prober() as prober:
        with server(Answer, port) as (url, _):
            assert await probe(prober, url) is None
        # The kept connection now points at a closed server; a new one is listening.
        with server(Answer, port) as (url, connections):
            assert await probe(prober, url) is None
            assert len(connections) == 1
