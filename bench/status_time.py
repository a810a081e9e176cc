"""``hearthlink status`` alone: its wall time and the client's CPU, each way it can be asked.

    .venv/bin/python bench/status_time.py [--times 30]

Runs the benchmark's hearthlink config of four minimal services (``Hearthlink.prepare``, as
``cli_times`` does), waits until all four are healthy, then asks ``hearthlink status``
``--times`` times each way, interleaved: with ``--config FILE`` (through the argument
parser) and as the exact command lines ``status`` and ``status --json`` with the file in
``$HEARTHLINK_CONFIG`` (answered before the parser is imported). Prints, per way, the median
and range of the wall time and the median user+sys CPU of the client (from ``wait4``: less
noisy than the wall time on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from managers import Hearthlink, make_services
from net import free_ports


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and user+sys CPU milliseconds of one run of ``argv`` (a non-zero exit fails)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = (time.monotonic() - started) * 1000
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(argv)} failed: {err}")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=int, default=30)
    args = parser.parse_args()
    manager = Hearthlink()
    with tempfile.TemporaryDirectory(prefix="hl-status-") as tmp:
        argv, env = manager.prepare(Path(tmp), make_services(free_ports(4)))
        config = argv[argv.index("--config") + 1]
        sup = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            status = [*manager.command, "status"]
            deadline = time.monotonic() + 30
            while True:
                out = subprocess.run(
                    [*status, "--json", "--config", config], env=env, capture_output=True, text=True
                )
                if out.returncode == 0 and all(
                    s.get("state") == "healthy" for s in json.loads(out.stdout)["services"]
                ):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"the services did not get healthy: {out.stderr}")
                time.sleep(0.1)
            by_env = {**env, "HEARTHLINK_CONFIG": config}
            ways = {
                "status --config FILE": ([*status, "--config", config], env),
                "status": (status, by_env),
                "status --json": ([*status, "--json"], by_env),
            }
            samples: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
            for _ in range(args.times):
                for way, (command, way_env) in ways.items():
                    samples[way].append(timed(command, way_env))
        finally:
            os.killpg(sup.pid, signal.SIGTERM)
            sup.wait(30)
    for way, runs in samples.items():
        walls = [wall for wall, _ in runs]
        cpu = statistics.median(c for _, c in runs)
        print(
            f"{way:22s} wall {statistics.median(walls):6.1f} ms "
            f"({min(walls):.0f}-{max(walls):.0f})  client CPU {cpu:6.1f} ms"
        )


if __name__ == "__main__":
    main()
