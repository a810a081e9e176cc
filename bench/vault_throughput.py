"""Vault throughput and memory: write/read records per second with 1 KiB values, and RSS.

Starts the real Vault (``python -m hearthlink_trio.services.vault``) on a fresh temporary
data dir, then over HTTP with keep-alive connections:

- writes ``--records`` new records (1 KiB string values), then reads each one back;
- with ``--concurrency N`` the work is spread over N client threads;
- reports records/s for each phase, the time from launch to the first healthy /health,
  and the Vault's RSS (VmRSS, what ``ps -o rss`` shows) idle after start and after the run.

Every write and every read is a durable transaction (SQLite WAL with synchronous=FULL)
plus a synced audit line, so the numbers are bounded by fsync latency of the disk.

    .venv/bin/python bench/vault_throughput.py [--records 2000] [--concurrency 1] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

MODULE = "hearthlink_trio.services.vault"
TOKEN = "bench-token"
VALUE = "v" * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def run_phase(url: str, names: list[str], concurrency: int, *, write: bool) -> float:
    """Seconds to write (or read) every record in ``names`` over ``concurrency`` clients."""
    shares = [names[i::concurrency] for i in range(concurrency)]
    errors: list[str] = []

    def work(share: list[str]) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=url, headers=headers, trust_env=False, timeout=30) as client:
            for name in share:
                if write:
                    response = client.put(f"/v1/memories/bench/{name}", json={"value": VALUE})
                else:
                    response = client.get(f"/v1/memories/bench/{name}")
                if response.status_code != 200:
                    errors.append(f"{name}: {response.status_code} {response.text[:100]}")
                    return

    threads = [threading.Thread(target=work, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(errors[0])
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vault-bench-") as tmp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}
        env.update(
            HEARTHLINK_DATA_DIR=tmp,
            HEARTHLINK_API_TOKEN=TOKEN,
            HEARTHLINK_VAULT_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        )
        launched = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", MODULE, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = launched + 20
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=0.5, trust_env=False).is_success:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() > deadline or proc.poll() is not None:
                    raise RuntimeError("the Vault did not become healthy")
                time.sleep(0.01)
            ready = time.perf_counter() - launched
            rss_idle = rss_mib(proc.pid)
            names = [f"r{i:06d}" for i in range(args.records)]
            write_s = run_phase(url, names, args.concurrency, write=True)
            read_s = run_phase(url, names, args.concurrency, write=False)
            rss_after = rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        size = sum(p.stat().st_size for p in (Path(tmp) / "vault").iterdir())

    result: dict[str, Any] = {
        "records": args.records,
        "value_bytes": len(VALUE),
        "concurrency": args.concurrency,
        "ready_s": round(ready, 3),
        "write_per_s": round(args.records / write_s),
        "read_per_s": round(args.records / read_s),
        "rss_idle_mib": round(rss_idle, 1),
        "rss_after_mib": round(rss_after, 1),
        "data_bytes": size,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.records} records of {len(VALUE)} B, {args.concurrency} client(s): "
            f"write {result['write_per_s']}/s, read {result['read_per_s']}/s; "
            f"healthy after {result['ready_s']}s; RSS {result['rss_idle_mib']} MiB idle, "
            f"{result['rss_after_mib']} MiB after"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
