"""Failed requests while a service restarts: hearthlink with ``socket = true`` and without,
circus with its own socket, supervisord.

    .venv/bin/python bench/zero_downtime.py [--seconds 4] [--rate 200] [--peers]

For each case, a fresh ``hearthlink run`` (with ``--peers``: ``circusd``, ``supervisord``
from ``bench/.peers-venv``, see ``bench/managers.py``) supervises the test service
(``tests/fixtures/testsvc.py``: a stdlib HTTP server that takes 0.3 s to start and finishes
its requests on SIGTERM), and a load generator sends ``GET /health`` at ``--rate`` requests
a second from 4 threads, each request on a fresh connection (so a refused connect counts).
One second in, the event happens:

* (a) ``hearthlink restart web`` (circus: ``circusctl reload web``, its graceful restart that
  starts the new process before stopping the old; supervisord: ``supervisorctl restart``);
* (b) SIGKILL of the service's process, ``initial_backoff = 0``;
* (c) a reload (SIGHUP) after its ``env`` changed (circus: ``circusctl reloadconfig``;
  supervisord: ``supervisorctl update``);
* (d) the restart of (a) with 3 processes (hearthlink ``replicas = 3``; circus
  ``numprocesses = 3``; supervisord ``numprocs = 3``, on three ports: the load goes to the
  first).

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


def free_base() -> int:
    """A free port ending in 0 whose next two are free too (below the ephemeral range)."""
    import random
    import socket

    while True:
        base = random.randrange(20000, 30000, 10)
        try:
            for port in range(base, base + 3):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base


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
    return _row(case, load, event_at)


def _row(case: str, load: Load, event_at: float) -> dict[str, object]:
    after = [latency for sent, latency, _ in load.results if sent >= event_at]
    p99 = statistics.quantiles(after, n=100)[98] if len(after) >= 100 else max(after, default=0)
    return {
        "case": case,
        "sent": len(load.results),
        "failed": sum(1 for *_, ok in load.results if not ok),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(max(after, default=0) * 1000, 1),
    }


def peer_case(
    manager: str, case: str, *, venv: Path, seconds: float, rate: float
) -> dict[str, object]:
    """As :func:`run_case`, under circus (its own socket) or supervisord."""
    replicas = 3 if case == "d" else 1
    with tempfile.TemporaryDirectory(prefix=f"zd-{manager}-") as tmp:
        root = Path(tmp)
        port = free_base() if manager == "supervisord" and replicas > 1 else free_port()
        _, argv, ctl = _peer_config(manager, root, port, replicas, "1", venv)
        with open(root / "out.txt", "wb") as out:
            daemon = subprocess.Popen(
                argv, cwd=root, stdout=out, stderr=out, env=clean_env(), start_new_session=True
            )
        try:
            deadline = time.monotonic() + 30
            while not _answers(port):
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise RuntimeError((root / "out.txt").read_text()[-2000:])
                time.sleep(0.1)
            time.sleep(0.5)  # every process up
            load = Load(port, rate)
            load.start()
            time.sleep(1.0)
            event_at = time.monotonic()
            if case in ("a", "d"):
                verb = ["reload", "web"] if manager == "circus" else ["restart", "web:*"]
                _control(ctl, verb)
            elif case == "b":
                os.kill(_pid_on(port), signal.SIGKILL)
            elif case == "c":
                _peer_config(manager, root, port, replicas, "2", venv)
                _control(ctl, ["reloadconfig" if manager == "circus" else "update"])
            time.sleep(max(0.0, seconds - 1.0))
            load.stop()
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
    return _row(case, load, event_at)


def _peer_config(
    manager: str, root: Path, port: int, n: int, env: str, venv: Path
) -> tuple[Path, list[str], list[str]]:
    service_env = {"TESTSVC_DELAY": "0.3", "TESTSVC_GRACEFUL": "1", "V": env}
    if manager == "circus":
        endpoint = f"ipc://{root / 'ctl.sock'}"
        lines = [
            "[circus]",
            f"endpoint = {endpoint}",
            f"pubsub_endpoint = ipc://{root / 'pub.sock'}",
            "statsd = false",
            "check_delay = 1.0",
            "",
            "[socket:web]",
            "host = 127.0.0.1",
            f"port = {port}",
            "",
            "[watcher:web]",
            f"cmd = {sys.executable}",
            f"args = {TESTSVC} --host 127.0.0.1 --port {port} --fd $(circus.sockets.web)",
            "use_sockets = true",
            f"numprocesses = {n}",
            "respawn = true",
            "warmup_delay = 0",
            "graceful_timeout = 5",
            "copy_env = true",
            "",
            "[env:web]",
            *[f"{k} = {v}" for k, v in service_env.items()],
            "",
        ]
        config = root / "circus.ini"
        config.write_text("\n".join(lines))
        argv = [str(venv / "bin" / "circusd"), "--log-level", "warning", str(config)]
        return config, argv, [str(venv / "bin" / "circusctl"), "--endpoint", endpoint]
    sock = root / "supervisor.sock"
    env_line = ",".join(f'{k}="{v}"' for k, v in service_env.items())
    # No shared socket in supervisord: one port each, port + process_num (port ends in 0).
    port_arg = str(port) if n == 1 else f"{port // 10}%(process_num)d"
    lines = [
        "[supervisord]",
        f"logfile={root / 'supervisord.log'}",
        f"pidfile={root / 'supervisord.pid'}",
        "[unix_http_server]",
        f"file={sock}",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "[supervisorctl]",
        f"serverurl=unix://{sock}",
        "[program:web]",
        f"command={sys.executable} {TESTSVC} --host 127.0.0.1 --port {port_arg}",
        f"numprocs={n}",
        "process_name=%(program_name)s-%(process_num)d",
        "autorestart=true",
        "startsecs=0",
        "stopwaitsecs=5",
        f"environment={env_line}",
    ]
    config = root / "supervisord.conf"
    config.write_text("\n".join(lines) + "\n")
    argv = [str(venv / "bin" / "supervisord"), "-n", "-c", str(config)]
    return config, argv, [str(venv / "bin" / "supervisorctl"), "-c", str(config)]


def _control(ctl: list[str], verb: list[str]) -> None:
    done = subprocess.run([*ctl, *verb], capture_output=True, text=True, timeout=60)
    if done.returncode != 0 or "ERROR" in done.stdout:
        raise RuntimeError(f"{' '.join(verb)}: {done.stdout}{done.stderr}")


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            response.read()
        return True
    except OSError:
        return False


def _pid_on(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        return int(json.loads(response.read())["pid"])


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
    parser.add_argument("--peers", action="store_true", help="circus and supervisord too")
    parser.add_argument(
        "--peers-venv",
        type=Path,
        default=ROOT / "bench" / ".peers-venv",
        help="where circusd and supervisord are (bench/managers.py makes it)",
    )
    args = parser.parse_args()
    columns = ["hearthlink socket = true", "hearthlink socket = false"]
    if args.peers:
        columns += ["circus (its socket)", "supervisord"]
    print(f"load avg at start: {os.getloadavg()}", file=sys.stderr)
    print("| event | " + " | ".join(f"{c}: failed / sent, p99 / max" for c in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for case in args.cases:
        rows = [
            run_case(case, socket_held=held, seconds=args.seconds, rate=args.rate)
            for held in (True, False)
        ]
        if args.peers:
            rows += [
                peer_case(m, case, venv=args.peers_venv, seconds=args.seconds, rate=args.rate)
                for m in ("circus", "supervisord")
            ]
        cells = [f"{r['failed']} / {r['sent']}, {r['p99_ms']} / {r['max_ms']} ms" for r in rows]
        print(f"| ({case}) {CASES[case]} | " + " | ".join(cells) + " |", flush=True)
    print(f"load avg at end: {os.getloadavg()}", file=sys.stderr)


if __name__ == "__main__":
    main()
