"""Failed requests while a service restarts: hearthlink with ``socket = true`` and without.

    .venv/bin/python bench/zero_downtime.py [--seconds 4] [--rate 200]

For each case, a fresh ``hearthlink run`` supervises the test service
(``tests/fixtures/testsvc.py``: a stdlib HTTP server that takes 0.3 s to start and finishes
its requests on SIGTERM), and a load generator sends ``GET /health`` at ``--rate`` requests
a second from 4 threads, each request on a fresh connection (so a refused connect counts).
One second in, the event happens:

* (a) ``hearthlink restart web``;
* (b) SIGKILL of the service's process, ``initial_backoff = 0``;
* (c) a reload (SIGHUP) after its ``env`` changed;
* (d) ``hearthlink restart web`` of a table with ``replicas = 3``.

It prints one markdown row per case: requests sent, failed, and the p99 and the largest
latency of the requests sent from the event on (a request waiting in the held socket's
backlog shows in the largest; with 4 clients only 4 can wait at once, too few for the p99).
The numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTSVC = ROOT / "tests" / "fixtures" / "testsvc.py"
THREADS = 4


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(root: Path, port: int, *, socket_held: bool, replicas: int, env: str) -> Path:
    lines = [
        "[supervisor]",
        f'data_dir = "{root / "data"}"',
        "stop_timeout = 5.0",
        "[health]",
        "startup_interval = 0.2",
        "steady_interval = 0.5",
        "timeout = 1.0",
        "[restart]",
        "initial_backoff = 0.0",
        "[services.web]",
        f'script = "{TESTSVC}"',
        f"port = {port}",
        f"replicas = {replicas}",
        f'env = {{ TESTSVC_DELAY = "0.3", TESTSVC_GRACEFUL = "1", V = "{env}" }}',
    ]
    if socket_held:
        lines.append("socket = true")
    path = root / "hearthlink.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def hearthlink(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hearthlink_trio", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}


def healthy(config: Path, count: int) -> bool:
    done = hearthlink("status", "--json", "--config", str(config), cwd=config.parent)
    if done.returncode not in (0, 1) or not done.stdout:
        return False
    services = json.loads(done.stdout)["services"]
    return sum(1 for s in services if s["state"] == "healthy") == count


class Load:
    """``rate`` requests a second from THREADS threads, each on a fresh connection."""

    def __init__(self, port: int, rate: float) -> None:
        self.url = f"http://127.0.0.1:{port}/health"
        self.period = THREADS / rate
        self.results: list[tuple[float, float, bool]] = []  # (sent at, latency, ok)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(THREADS)]

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    response.read()
                ok = True
            except Exception:  # a refused, reset or timed-out request alike
                ok = False
            self.results.append((sent, time.monotonic() - sent, ok))
            next_at += self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


def run_case(case: str, *, socket_held: bool, seconds: float, rate: float) -> dict[str, object]:
    replicas = 3 if case == "d" else 1
    with tempfile.TemporaryDirectory(prefix="hl-zd-") as tmp:
        root = Path(tmp)
        port = free_port()
        config = write_config(root, port, socket_held=socket_held, replicas=replicas, env="1")
        if not socket_held and replicas > 1:
            port_note = f"{port}..{port + replicas - 1} (load on the first)"
        else:
            port_note = str(port)
        with open(root / "out.txt", "wb") as out, open(root / "err.txt", "wb") as err:
            sup = subprocess.Popen(
                [sys.executable, "-m", "hearthlink_trio", "run", "--config", str(config)],
                cwd=root,
                stdout=out,
                stderr=err,
                env=clean_env(),
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 30
            while not healthy(config, replicas):
                if time.monotonic() > deadline or sup.poll() is not None:
                    raise RuntimeError((root / "err.txt").read_text()[-2000:])
                time.sleep(0.2)
            load = Load(port, rate)
            load.start()
            time.sleep(1.0)
            event_at = time.monotonic()
            if case in ("a", "d"):
                hearthlink("restart", "web", "--config", str(config), cwd=root)
            elif case == "b":
                status = hearthlink("status", "--json", "--config", str(config), cwd=root)
                pid = json.loads(status.stdout)["services"][0]["pid"]
                os.kill(pid, signal.SIGKILL)
            elif case == "c":
                write_config(root, port, socket_held=socket_held, replicas=replicas, env="2")
                sup.send_signal(signal.SIGHUP)
            time.sleep(max(0.0, seconds - 1.0))
            load.stop()
        finally:
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(sup.pid, signal.SIGKILL)
                sup.wait()
    after = [latency for sent, latency, _ in load.results if sent >= event_at]
    p99 = statistics.quantiles(after, n=100)[98] if len(after) >= 100 else max(after, default=0)
    return {
        "case": case,
        "socket": socket_held,
        "port": port_note,
        "sent": len(load.results),
        "failed": sum(1 for *_, ok in load.results if not ok),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(max(after, default=0) * 1000, 1),
    }


CASES = {
    "a": "restart",
    "b": "SIGKILL, backoff 0",
    "c": "reload changing env",
    "d": "3 replicas restarted",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--cases", default="abcd")
    args = parser.parse_args()
    print(f"load avg at start: {os.getloadavg()}", file=sys.stderr)
    print(
        "| event | socket = true: failed / sent | p99 / max | "
        "socket = false: failed / sent | p99 / max |"
    )
    print("|---|---|---|---|---|")
    for case in args.cases:
        rows = [
            run_case(case, socket_held=held, seconds=args.seconds, rate=args.rate)
            for held in (True, False)
        ]
        print(
            f"| ({case}) {CASES[case]} | {rows[0]['failed']} / {rows[0]['sent']} | "
            f"{rows[0]['p99_ms']} / {rows[0]['max_ms']} ms | "
            f"{rows[1]['failed']} / {rows[1]['sent']} | "
            f"{rows[1]['p99_ms']} / {rows[1]['max_ms']} ms |",
            flush=True,
        )
    print(f"load avg at end: {os.getloadavg()}", file=sys.stderr)


if __name__ == "__main__":
    main()
