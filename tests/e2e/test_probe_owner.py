"""The probe that only one process may pass: the one that accepted its connection."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from functools import partial

import trio

from hearthlink_trio.probes.owner import probe_owned

#: A server on the passed listening socket (fd 3), answering every GET with its pid.
SERVER = """
import json, os, select, socket
listener = socket.socket(fileno=3)
print("ready", flush=True)
while True:
    select.select([listener], [], [])
    try:  # the socket is shared (and non-blocking): the other process may have taken it
        conn, _ = listener.accept()
    except BlockingIOError:
        continue
    conn.setblocking(True)
    with conn:
        conn.recv(65536)
        body = json.dumps({"status": "healthy", "pid": os.getpid()}).encode()
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n"
                     b"Content-Length: %d\\r\\nConnection: close\\r\\n\\r\\n%s" % (len(body), body))
"""


def start_child(listener: socket.socket) -> subprocess.Popen[str]:
    code = f"import os; os.dup2({listener.fileno()}, 3); exec(compile({SERVER!r}, 's', 'exec'))"
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        pass_fds=(listener.fileno(),),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


def test_only_the_process_that_accepted_passes() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    served_here: list[int] = []
    stop = threading.Event()

    def other_process() -> None:
        # This process accepts on the same socket too: the "old" one.
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, BlockingIOError):
                continue
            conn.settimeout(5)
            with conn:
                conn.recv(65536)
                body = json.dumps({"status": "healthy"}).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                )
                served_here.append(1)

    thread = threading.Thread(target=other_process, daemon=True)
    thread.start()
    child = start_child(listener)
    sleeper = subprocess.Popen(["sleep", "30"])
    url = f"http://127.0.0.1:{port}/health"
    try:
        for _ in range(5):
            # The child must accept one itself: answers from this process do not count.
            assert (
                trio.run(partial(probe_owned, "127.0.0.1", port, child.pid, 5.0, url=url)) is None
            )
            assert trio.run(probe_owned, "127.0.0.1", port, child.pid, 5.0) is None
        # No process of the sleeper's group ever accepts: it never passes, however many
        # answers the others give.
        before = len(served_here)
        reason = trio.run(partial(probe_owned, "127.0.0.1", port, sleeper.pid, 0.5, url=url))
        assert reason is not None and reason.startswith("not accepted by the new process")
        assert len(served_here) > before
    finally:
        stop.set()
        thread.join(5)
        for proc in (child, sleeper):
            proc.kill()
            proc.wait()
        listener.close()
