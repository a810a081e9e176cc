"""The benchmark's service: a tiny stdlib HTTP/1.1 server that starts as fast as Python can.

``python svc.py --host H --port P`` listens on H:P and answers ``GET /health`` with
``{"status": "healthy", "service": NAME, "pid": PID}`` (keep-alive, so the supervisor's
pooled client reuses its connection). One thread, one ``selectors`` loop: no
``http.server``, no ``argparse``, so a start costs little more than the interpreter's own.

The /health body also carries ``ready`` (the CLOCK_MONOTONIC time it started listening)
and, with ``BENCHSVC_CHILD=1``, ``child``: the pid of a ``sleep 600`` it spawned into its own
process group (the orphan case: what survives a SIGKILL of the supervisor).

It prints ``ready <monotonic> pid <pid>`` once listening and ``bye <monotonic>`` when it
exits on SIGTERM; the benchmark reads both through the supervisor's stdout (the clock is
CLOCK_MONOTONIC, the same in every process of the machine). With ``BENCHSVC_IGNORE_TERM=1``
in its environment it ignores SIGTERM, so only SIGKILL stops it.

``BENCHSVC_CPU=<seconds>`` is the "real" profile: before it listens, the service imports a
few stdlib-heavy modules (``http.server``, ``email``, ``json``, ``decimal``, ``logging``, as
a small web app's framework does) and then burns a loop until its own CPU time
(``time.process_time()``, the interpreter's start-up included) reaches that many seconds,
so every start costs the same CPU whatever the machine's load. On SIGTERM (or SIGINT) it
stops its ``sleep`` child first, as a service that owns children does.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time

NAME = os.environ.get("HEARTHLINK_SERVICE", "benchsvc")
PID = os.getpid()
OK = b""  # the /health answer, made once listening (it says when)


def _make_ok(ready: float, child: int | None) -> bytes:
    extra = "" if child is None else ', "child": %d' % child  # noqa: UP031
    body = (
        '{"status": "healthy", "service": "%s", "pid": %d, "ready": %.6f%s}'  # noqa: UP031
        % (NAME, PID, ready, extra)
    ).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


NOT_FOUND_BODY = b'{"error": "not_found"}'
NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    % len(NOT_FOUND_BODY)
) + NOT_FOUND_BODY
MAX_REQUEST = 16 * 1024


def _args(argv: list[str]) -> tuple[str, int]:
    host, port = "127.0.0.1", 0
    i = 0
    while i < len(argv):
        if argv[i] == "--host":
            host = argv[i + 1]
            i += 2
        elif argv[i] == "--port":
            port = int(argv[i + 1])
            i += 2
        else:
            sys.exit(f"usage: svc.py --host H --port P (unknown argument {argv[i]!r})")
    if not port:
        sys.exit("usage: svc.py --host H --port P")
    return host, port


CHILD: int | None = None


def _on_term(signum: int, frame: object) -> None:
    if CHILD is not None:
        try:  # noqa: SIM105 (no contextlib: the minimal service imports as little as it can)
            os.kill(CHILD, signal.SIGTERM)
        except OSError:
            pass
    os.write(1, b"bye %.6f\n" % time.monotonic())
    os._exit(0)


def _answer(conn: socket.socket, buf: bytearray) -> bool:
    """Answer every complete request in ``buf``; False once the connection should close."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return len(buf) <= MAX_REQUEST
        head = bytes(buf[:end]).lower()
        del buf[: end + 4]
        first = head.split(b"\r\n", 1)[0].split()
        path = first[1] if len(first) > 1 else b""
        conn.sendall(OK if path == b"/health" else NOT_FOUND)
        if first[-1:] == [b"http/1.0"] or b"connection: close" in head:
            return False


def _work(cpu: float) -> None:
    """Cost what a small web app costs before it listens: imports, then a measured loop."""
    import decimal  # noqa: F401
    import email.parser  # noqa: F401
    import http.server  # noqa: F401
    import json  # noqa: F401
    import logging.handlers  # noqa: F401
    import urllib.request  # noqa: F401

    x = 0
    while time.process_time() < cpu:
        for i in range(2000):
            x ^= i * i


def main() -> None:
    global OK, CHILD
    host, port = _args(sys.argv[1:])
    cpu = float(os.environ.get("BENCHSVC_CPU") or 0)
    if cpu > 0:
        _work(cpu)
    child = None
    if os.environ.get("BENCHSVC_CHILD") == "1":
        child = CHILD = os.posix_spawnp("sleep", ["sleep", "600"], os.environ)
    if os.environ.get("BENCHSVC_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, _on_term)
        signal.signal(signal.SIGINT, _on_term)  # PM2 stops its apps with SIGINT
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(256)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    ready = time.monotonic()
    OK = _make_ok(ready, child)
    os.write(1, b"ready %.6f pid %d\n" % (ready, PID))
    while True:
        for key, _ in sel.select():
            if key.data is None:
                try:
                    conn, _addr = listener.accept()
                except (BlockingIOError, ConnectionAbortedError):
                    continue
                conn.setblocking(True)
                conn.settimeout(2.0)
                sel.register(conn, selectors.EVENT_READ, bytearray())
                continue
            conn = key.fileobj  # type: ignore[assignment]
            try:
                chunk = conn.recv(4096)
                keep = bool(chunk)
                if keep:
                    key.data.extend(chunk)
                    keep = _answer(conn, key.data)
            except OSError:
                keep = False
            if not keep:
                sel.unregister(conn)
                conn.close()


if __name__ == "__main__":
    main()
