"""Measure `hearthlink run` on the example config (examples/hello.toml), from outside.

    .venv/bin/python bench/example_config.py [--repeats 5]

Per run: launch → both services answering /health and logged healthy; SIGKILL of `hello` →
a new process answering and logged healthy (the config's default 1 s initial backoff);
the supervisor's RSS; SIGINT → supervisor exited with both services gone. Prints medians
and min–max. Each run uses its own temporary data dir; every process is gone at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "hello.toml"
PORTS = {"hello": 18080, "world": 18081}


def answering_pid(port: int) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.2)
        conn.request("GET", "/")
        body = json.loads(conn.getresponse().read())
        conn.close()
    except (OSError, ValueError):
        return None
    return int(body["pid"])


def wait(predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.002)
    raise TimeoutError


def one_run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "HEARTHLINK_DATA_DIR": data_dir}
        err_path = Path(data_dir) / "stderr.jsonl"
        with open(err_path, "w") as err:
            began = time.monotonic()
            sup = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hearthlink_trio",
                    "run",
                    "--config",
                    str(CONFIG),
                    "--log-format",
                    "json",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        try:

            def healthy(count: int) -> bool:
                lines = err_path.read_text().splitlines()
                return sum(json.loads(x)["event"] == "healthy" for x in lines) >= count

            wait(lambda: all(answering_pid(p) for p in PORTS.values()))
            answering = time.monotonic() - began
            wait(lambda: healthy(2))
            logged = time.monotonic() - began
            time.sleep(0.5)
            with open(f"/proc/{sup.pid}/status") as f:
                rss = next(int(x.split()[1]) for x in f if x.startswith("VmRSS")) / 1024
            old = answering_pid(PORTS["hello"])
            assert old is not None
            killed = time.monotonic()
            os.kill(old, signal.SIGKILL)
            new = wait(lambda: (pid := answering_pid(PORTS["hello"])) and pid != old and pid)
            recovered = time.monotonic() - killed
            wait(lambda: healthy(3))
            recovered_logged = time.monotonic() - killed
            pids = [answering_pid(p) for p in PORTS.values()]
            stopping = time.monotonic()
            sup.send_signal(signal.SIGINT)
            sup.wait(15)
            wait(lambda: not any(pid and Path(f"/proc/{pid}").exists() for pid in pids))
            stopped = time.monotonic() - stopping
            assert new and sup.returncode == 0
        finally:
            if sup.poll() is None:
                sup.kill()
                sup.wait()
    return {
        "launch → both answering (s)": answering,
        "launch → both logged healthy (s)": logged,
        "SIGKILL → new process answering (s)": recovered,
        "SIGKILL → logged healthy again (s)": recovered_logged,
        "SIGINT → exited, all gone (s)": stopped,
        "supervisor RSS (MiB)": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.repeats)]
    print(f"examples/hello.toml, {args.repeats} runs, {os.cpu_count()} cores: median (min–max)")
    for key in runs[0]:
        values = [run[key] for run in runs]
        print(f"- {key}: {statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})")


if __name__ == "__main__":
    main()
