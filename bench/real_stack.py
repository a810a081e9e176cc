"""The real-stack example under `hearthlink run`: launch → every service healthy, and
SIGKILL of PostgreSQL → PostgreSQL healthy again (and the app answering again).

Needs root and Debian's postgresql and redis-server. Runs examples/stack.toml on free ports
with a fresh data dir under /var/tmp (the first run includes initdb; later repeats reuse the
cluster, as a user's second start does):

    sudo .venv/bin/python bench/real_stack.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "stack.toml"
SERVICES = ("initdb", "postgres", "redis", "migrate", "worker", "app")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stack_config(workdir: Path, data: Path) -> tuple[Path, dict[str, int]]:
    ports = {"postgres": free_port(), "redis": free_port(), "app": free_port()}
    text = EXAMPLE.read_text().replace("/var/tmp/hearthlink-stack", str(data))
    for default, name in ((55432, "postgres"), (56379, "redis"), (58080, "app")):
        text = text.replace(str(default), str(ports[name]))
    shutil.copytree(EXAMPLE.parent / "stack", workdir / "stack", dirs_exist_ok=True)
    config = workdir / "stack.toml"
    config.write_text(text)
    return config, ports


def status(config: Path) -> dict[str, dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "hearthlink_trio", "status", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        return {}
    return {s["name"]: s for s in json.loads(out.stdout)["services"]}


def wait(predicate, timeout: float = 120.0, interval: float = 0.005) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(interval)
    raise TimeoutError("the stack did not get there in time")


def app_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def one_run(config: Path, ports: dict[str, int]) -> dict[str, float]:
    began = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hearthlink_trio",
            "run",
            "--config",
            str(config),
            "--log-format",
            "json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    try:
        healthy: set[str] = set()
        for line in proc.stderr:
            event = json.loads(line)
            if event["event"] in ("healthy", "completed"):
                healthy.add(str(event.get("service")))
            if healthy >= set(SERVICES):
                break
        ready = time.monotonic()
        answering = wait(lambda: app_answers(ports["app"]))
        pid = int(status(config)["postgres"]["pid"])  # type: ignore[arg-type]
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        for line in proc.stderr:
            event = json.loads(line)
            if event["event"] == "healthy" and event.get("service") == "postgres":
                break
        pg_back = time.monotonic()
        app_back = wait(lambda: app_answers(ports["app"]))
        return {
            "launch_to_all_healthy_s": ready - began,
            "launch_to_app_answering_s": answering - began,
            "pg_kill_to_pg_healthy_s": pg_back - killed,
            "pg_kill_to_app_answering_s": app_back - killed,
        }
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("redis-server") is None:
        print("needs root and Debian's postgresql and redis-server", file=sys.stderr)
        return 2
    data = Path(tempfile.mkdtemp(prefix="hearthlink-bench-stack-", dir="/var/tmp"))
    workdir = Path(tempfile.mkdtemp(prefix="hearthlink-bench-stack-"))
    try:
        config, ports = stack_config(workdir, data)
        runs = [one_run(config, ports) for _ in range(args.repeats)]
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"examples/stack.toml, {args.repeats} runs (the first one with initdb), "
        f"{os.cpu_count()} cores"
    )
    print("| measure | first run | median of the rest | min–max |")
    print("|---|---|---|---|")
    for key in runs[0]:
        values = [run[key] for run in runs]
        rest = values[1:] or values
        print(
            f"| {key} | {values[0]:.2f} s | {statistics.median(rest):.2f} s | "
            f"{min(values):.2f}–{max(values):.2f} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
