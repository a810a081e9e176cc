"""Measure a watch restart: a file saved -> the watched service answering from its new process.

    .venv/bin/python bench/watch_restart.py [--repeats 7] [--socket]

Side by side, the service's own start: bench/svc.py spawned bare, until it answers. The
watched run is one ``hearthlink run`` on a temporary project whose service (bench/svc.py)
watches ``*.py`` in it; each repeat saves ``app.py`` as an editor does (a temporary file
renamed over it), then polls ``/health`` every 2 ms until a new pid answers. The changes are
gathered for 200 ms before the restart, so that is the floor above the service's own start.
With ``--socket`` the service is tests/fixtures/testsvc.py with ``socket = true`` (it
accepts the socket hearthlink holds; bench/svc.py does not), so the restart is rolling, and
a client loop (a fresh connection per request, back to back) counts the requests that
failed meanwhile. Prints medians and min–max; every process is gone at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

SVC = Path(__file__).resolve().parent / "svc.py"
TESTSVC = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "testsvc.py"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answering_pid(port: int) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.2)
        conn.request("GET", "/health")
        body = json.loads(conn.getresponse().read())
        conn.close()
    except (OSError, ValueError):
        return None
    return int(body["pid"])


def wait(predicate: Callable[[], T | None], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.002)
    raise TimeoutError


def own_start(repeats: int, script: Path) -> list[float]:
    times = []
    for _ in range(repeats):
        port = free_port()
        began = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, str(script), "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait(lambda: answering_pid(port))  # noqa: B023
            times.append(time.monotonic() - began)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(5)
    return times


def save(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_text(text)
    os.replace(temporary, path)


class ClientLoop:
    """Fresh connections to /health back to back, in a thread; counts what failed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answered = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/health")
                conn.getresponse().read()
                conn.close()
                self.answered += 1
            except OSError as exc:
                self.failed.append(repr(exc))
            self._stop.wait(0.002)

    def __enter__(self) -> ClientLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(15)


def watch_restarts(repeats: int, *, socket: bool) -> tuple[list[float], int, int]:
    """The save -> new process answering times, and the requests answered and failed."""
    with tempfile.TemporaryDirectory() as root:
        project = Path(root) / "proj"
        project.mkdir()
        (project / "app.py").write_text("v0\n")
        port = free_port()
        config = Path(root) / "hearthlink.toml"
        script = TESTSVC if socket else SVC
        config.write_text(
            f'[supervisor]\ndata_dir = "{root}/data"\n'
            f'[services.web]\nscript = "{script}"\nport = {port}\ncwd = "{project}"\n'
            'watch = ["*.py"]\n'
            + ('socket = true\nenv = { TESTSVC_GRACEFUL = "1" }\n' if socket else "")
        )
        sup = subprocess.Popen(
            [sys.executable, "-m", "hearthlink_trio", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        times = []
        try:
            pid = wait(lambda: answering_pid(port))
            with ClientLoop(port) as client:
                for n in range(repeats):
                    time.sleep(1.0)  # settled: not a write of its own start
                    saved = time.monotonic()
                    save(project / "app.py", f"v{n + 1}\n")
                    old = pid
                    pid = wait(lambda: (p := answering_pid(port)) and p != old and p)  # noqa: B023
                    times.append(time.monotonic() - saved)
                time.sleep(1.0)  # the last old process stopped
        finally:
            sup.send_signal(signal.SIGINT)
            sup.wait(15)
    return times, client.answered, len(client.failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--socket", action="store_true", help="socket = true (rolling)")
    args = parser.parse_args()
    script = TESTSVC if args.socket else SVC
    restarts, answered, failed = watch_restarts(args.repeats, socket=args.socket)
    rows = {
        f"{script.name} started bare -> answering (s)": own_start(args.repeats, script),
        "app.py saved -> new process answering (s)": restarts,
    }
    socket = "socket = true (rolling)" if args.socket else "no held socket"
    print(f"{args.repeats} repeats, {socket}, {os.cpu_count()} cores: median (min–max)")
    for key, values in rows.items():
        print(f"- {key}: {statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})")
    print(f"- client loop meanwhile: {answered} requests answered, {failed} failed")


if __name__ == "__main__":
    main()
