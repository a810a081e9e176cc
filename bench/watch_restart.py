"""Measure a watch restart: a file saved -> the watched service answering from its new process.

    .venv/bin/python bench/watch_restart.py [--repeats 7]

Side by side, the service's own start: bench/svc.py spawned bare, until it answers. The
watched run is one ``hearthlink run`` on a temporary project whose service (bench/svc.py)
watches ``*.py`` in it; each repeat saves ``app.py`` as an editor does (a temporary file
renamed over it), then polls ``/health`` every 2 ms until a new pid answers. The changes are
gathered for 200 ms before the restart, so that is the floor above the service's own start.
Prints medians and min–max; every process is gone at the end.
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

SVC = Path(__file__).resolve().parent / "svc.py"
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


def own_start(repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        port = free_port()
        began = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, str(SVC), "--host", "127.0.0.1", "--port", str(port)],
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


def watch_restarts(repeats: int) -> list[float]:
    with tempfile.TemporaryDirectory() as root:
        project = Path(root) / "proj"
        project.mkdir()
        (project / "app.py").write_text("v0\n")
        port = free_port()
        config = Path(root) / "hearthlink.toml"
        config.write_text(
            f'[supervisor]\ndata_dir = "{root}/data"\n'
            f'[services.web]\nscript = "{SVC}"\nport = {port}\ncwd = "{project}"\n'
            'watch = ["*.py"]\n'
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
            for n in range(repeats):
                time.sleep(1.0)  # settled: not a write of its own start
                saved = time.monotonic()
                save(project / "app.py", f"v{n + 1}\n")
                old = pid
                pid = wait(lambda: (p := answering_pid(port)) and p != old and p)  # noqa: B023
                times.append(time.monotonic() - saved)
        finally:
            sup.send_signal(signal.SIGINT)
            sup.wait(15)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rows = {
        "bench/svc.py started bare -> answering (s)": own_start(args.repeats),
        "app.py saved -> new process answering (s)": watch_restarts(args.repeats),
    }
    print(f"{args.repeats} repeats, {os.cpu_count()} cores: median (min–max)")
    for key, values in rows.items():
        print(f"- {key}: {statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})")


if __name__ == "__main__":
    main()
