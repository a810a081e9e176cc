"""The measures only hearthlink has: its CLI's wall times, the default four-service config,
and the Vault's /health latency under write load."""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from managers import HERE, Hearthlink
from net import free_ports, poll_health, port_free
from procs import (
    BenchError,
    Reaper,
    base_env,
    cpu_seconds,
    descendants,
    group_rss_mib,
    parents,
    progress,
    rss_mib,
    wait_gone,
)
from session import Session

REPO = HERE.parent
DEFAULT_CONFIG = REPO / "config" / "hearthlink.toml"


def wall(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    t0 = time.monotonic()
    out = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    return (time.monotonic() - t0) * 1000, out.returncode


def cli_times(run: Session, times: int) -> dict[str, list[float]]:
    """``hearthlink --version``, ``status`` (against ``run``, a running supervisor) and
    ``check``, each ``times`` times: wall milliseconds of each (a non-zero exit fails)."""
    assert isinstance(run.manager, Hearthlink)
    command = run.manager.command
    config = run.argv[run.argv.index("--config") + 1]
    res: dict[str, list[float]] = {
        "version_ms": [],
        "status_ms": [],
        "status_config_ms": [],
        "check_ms": [],
    }
    # `hearthlink status` as a user types it (the config from $HEARTHLINK_CONFIG, as in a
    # shell where the run was started with it), and with --config FILE.
    by_env = {**run.env, "HEARTHLINK_CONFIG": config}
    cases = {
        "version_ms": ([*command, "--version"], run.env),
        "status_ms": ([*command, "status"], by_env),
        "status_config_ms": ([*command, "status", "--config", config], run.env),
        "check_ms": ([*command, "check", "--config", config], run.env),
    }
    for _ in range(times):
        for key, (argv, env) in cases.items():
            ms, code = wall(argv, env)
            # check on a running supervisor's config: its ports are taken, which check may
            # rightly report (exit 1); the time is what it is either way.
            if code and key != "check_ms":
                raise BenchError(f"{' '.join(argv[-3:])} exited {code}")
            res[key].append(ms)
    return res


#: The conditions of the default stack's row: (package bytecode cached, config cached).
#: ``warm``: both (the benchmark's warm-up wrote the bytecode; the config was checked once).
#: ``first``: neither, as a user's first start from a fresh checkout in a shell with
#: PYTHONDONTWRITEBYTECODE=1 (this machine's shells have it): the package imported from a
#: copy with no __pycache__ (so every start compiles it again; the installed libraries keep
#: the bytecode pip wrote) and an empty XDG_CACHE_HOME. The two between split the cause.
#: Bare runs only where it differs (its services read no config). Every run keeps its
#: condition's data dir from the repeat before, as a user's start does.
CONDITIONS: dict[str, tuple[bool, bool]] = {
    "warm": (True, True),
    "no bytecode": (False, True),
    "no config cache": (True, False),
    "first": (False, False),
}


def _cond_env(cond: str, src: Path, tmp: Path) -> dict[str, str]:
    bytecode, cached = CONDITIONS[cond]
    env = base_env()
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPATH"] = str(src)
    if not cached:
        env["XDG_CACHE_HOME"] = str(tmp / "cache")
    return env


_SECRETS: dict[tuple[Path, str], bytes] = {}


def _stack(
    ports: dict[str, int], data: Path, pythonpath: str
) -> list[tuple[list[str], dict[str, str]]]:
    """The four bundled services' argv and environment, as the supervisor would give them."""
    config = tomllib.loads(DEFAULT_CONFIG.read_text())
    token = "bench-" + secrets.token_hex(12)
    common = {
        "HEARTHLINK_DATA_DIR": str(data),
        "HEARTHLINK_API_TOKEN": token,
        "PYTHONPATH": pythonpath,
        "PYTHONUNBUFFERED": "1",
        **{f"HEARTHLINK_{n.upper()}_URL": f"http://127.0.0.1:{p}" for n, p in ports.items()},
    }
    out = []
    for name, svc in config["services"].items():
        argv = [
            a.replace("{python}", sys.executable)
            .replace("{host}", "127.0.0.1")
            .replace("{port}", str(ports[name]))
            for a in svc["command"]
        ]
        env = {**common, "HEARTHLINK_SERVICE": name}
        for var in svc.get("secrets", {}):
            # One per data dir, kept: the Vault refuses a key its data was not written with.
            key = _SECRETS.setdefault((data, var), secrets.token_bytes(32))
            env[var] = base64.b64encode(key).decode()
        out.append((argv, env))
    return out


def _one_stack_run(
    mode: str,
    cond: str,
    ports: dict[str, int],
    command: list[str],
    reaper: Reaper,
    src: Path,
    data: Path,
) -> dict[str, Any]:
    """One start of the default stack (bare: the four at once; hearthlink: ``run``) on the
    data dir ``data``, launch → all four /health healthy, the CPU each side spent by then,
    then stopped."""
    with tempfile.TemporaryDirectory(prefix=f"hlbench-default-{mode}-") as tmp:
        env = _cond_env(cond, src, Path(tmp))
        env["HEARTHLINK_DATA_DIR"] = str(data)
        procs: list[subprocess.Popen[bytes]] = []
        log = open(Path(tmp) / "run.log", "wb")  # noqa: SIM115
        t0 = time.monotonic()
        try:
            if mode == "bare":
                pythonpath = env.get("PYTHONPATH") or str(REPO / "src")
                for argv, extra in _stack(ports, data, pythonpath):
                    procs.append(
                        subprocess.Popen(
                            argv,
                            env={**env, **extra},
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            else:
                procs.append(
                    subprocess.Popen(
                        [*command, "run"],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        finally:
            log.close()
            for proc in procs:
                reaper.add_manager(proc)
        try:
            answers = poll_health(
                ports,
                deadline=t0 + 60,
                interval=0.005,
                supervisor=procs[0] if mode != "bare" else None,
            )
            one: dict[str, Any] = {
                "healthy_s": max(t for t, _ in answers.values()) - t0,
                "each_s": {n: t - t0 for n, (t, _) in answers.items()},
            }
            tree = parents()
            if mode == "bare":
                services = [p.pid for p in procs]
                side: list[int] = []
            else:
                services = [
                    p for p in descendants(procs[0].pid, tree) if tree.get(p) == procs[0].pid
                ]
                cmd = {p: _cmdline(p) for p in services}
                side = [procs[0].pid, *(p for p in services if "services." not in cmd[p])]
                services = [p for p in services if "services." in cmd[p]]
            one["supervisor_cpu_s"] = sum(cpu_seconds(p) or 0.0 for p in side)
            one["service_cpu_s"] = {_service_name(p): cpu_seconds(p) for p in services}
            for pid in services:
                reaper.add_pid(pid)
            if mode != "bare" and cond == "warm":
                time.sleep(1.0)
                one["supervisor_rss_mib"] = sum(rss_mib(p) or 0.0 for p in side)
                one["service_rss_mib"] = {_service_name(p): group_rss_mib(p) for p in services}
            t1 = time.monotonic()
            for proc in procs:
                proc.send_signal(2)  # SIGINT, as Ctrl-C
            exits = wait_gone([p.pid for p in procs] + services, t1 + 30)
            one["sigint_all_gone_ms"] = (max(exits.values()) - t1) * 1000
            return one
        except BenchError as exc:
            tail = (Path(tmp) / "run.log").read_text(errors="replace")[-1500:]
            raise BenchError(f"default stack ({mode}, {cond}): {exc}\n{tail}") from None
        finally:
            for proc in procs:
                reaper.stop_manager(proc)


def _service_name(pid: int) -> str:
    """``vault`` for ``python -m hearthlink_trio.services.vault …``."""
    mod = next((w for w in _cmdline(pid).split() if "services." in w), str(pid))
    return mod.rsplit(".", 1)[-1]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def default_stack(reaper: Reaper, repeats: int, command: list[str]) -> dict[str, Any]:
    """The bundled four services (on their fixed ports), launch → all four /health healthy:
    started bare all at once and by ``hearthlink run`` (no --config), interleaved, each run
    with its own data dir, in both :data:`CONDITIONS`."""
    try:
        services = tomllib.loads(DEFAULT_CONFIG.read_text()).get("services", {})
        ports = {name: int(svc["port"]) for name, svc in services.items()}
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        return {"skipped": f"cannot read the ports of {DEFAULT_CONFIG}: {exc}"}
    busy = [f"{name} ({port})" for name, port in ports.items() if not port_free(port)]
    if busy:
        return {"skipped": f"ports in use: {', '.join(busy)}"}
    res: dict[str, Any] = {"ports": ports, "ports_checked_free": True, "conditions": {}}
    with tempfile.TemporaryDirectory(prefix="hlbench-src-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(
            REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
        # One data dir per condition and mode, kept from one repeat to the next as a user's
        # is (the first repeat makes it). Its path is one of the config's inputs (through
        # $HEARTHLINK_DATA_DIR), so a fresh path at every start would miss the config cache.
        data = {
            (cond, mode): Path(tmp) / f"data-{cond.replace(' ', '-')}-{mode}"
            for cond in CONDITIONS
            for mode in ("bare", "hearthlink")
        }
        for cond, (_bytecode, cached) in CONDITIONS.items():
            if cached:  # validated once before, as after a first run or `hearthlink check`
                env = _cond_env(cond, src, Path(tmp))
                env["HEARTHLINK_DATA_DIR"] = str(data[cond, "hearthlink"])
                subprocess.run([*command, "check"], env=env, capture_output=True)
        for r in range(repeats):
            for cond, (_bytecode, cached) in CONDITIONS.items():
                for mode in ("bare", "hearthlink"):
                    if mode == "bare" and not cached:
                        continue  # the same as with the config cached
                    one = _one_stack_run(mode, cond, ports, command, reaper, src, data[cond, mode])
                    res["conditions"].setdefault(cond, {}).setdefault(mode, []).append(one)
                    progress(
                        f"  default stack {cond:15s} {mode:10s} run {r + 1}: all four healthy "
                        f"after {one['healthy_s']:.2f}s (supervisor CPU "
                        f"{one['supervisor_cpu_s']:.2f}s)"
                    )
        for cond, (bytecode, cached) in CONDITIONS.items():
            if not cached:
                twin = next(c for c, v in CONDITIONS.items() if v == (bytecode, True))
                res["conditions"][cond]["bare"] = res["conditions"][twin]["bare"]
    return res


WRITERS = r"""
import http.client, json, sys, threading, time
port, token, seconds, n = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
value = json.dumps({"value": "v" * 256})
counts, errors = [0] * n, []
start = threading.Event()
def work(i):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    start.wait()
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        conn.request("PUT", f"/v1/memories/bench/w{i}-{k}", body=value, headers=headers)
        r = conn.getresponse(); r.read()
        if r.status != 200:
            errors.append(f"{r.status}"); return
        k += 1
    counts[i] = k
threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
for t in threads: t.start()
print("go", flush=True)
t0 = time.monotonic(); start.set()
for t in threads: t.join()
print(json.dumps({"writes": sum(counts), "seconds": time.monotonic() - t0, "errors": errors[:3]}))
"""


def _probe(conn: http.client.HTTPConnection) -> float:
    t0 = time.perf_counter()
    conn.request("GET", "/health")
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        raise BenchError(f"vault /health answered {r.status}")
    return (time.perf_counter() - t0) * 1000


def _pct(values: list[float], q: int) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def vault_load(reaper: Reaper, seconds: float, writers: int = 8) -> dict[str, Any]:
    """The Vault alone; /health probed in a loop (one keep-alive connection) idle for
    ``seconds``, then again while ``writers`` clients PUT as fast as they can."""
    port = free_ports(1)[0]
    token = "bench-" + secrets.token_hex(12)
    with tempfile.TemporaryDirectory(prefix="hlbench-vault-") as tmp:
        env = base_env()
        env.update(
            HEARTHLINK_DATA_DIR=tmp,
            HEARTHLINK_API_TOKEN=token,
            HEARTHLINK_VAULT_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        )
        argv = [sys.executable, "-m", "hearthlink_trio.services.vault"]
        log = open(Path(tmp) / "vault.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        reaper.add_manager(proc)
        load: subprocess.Popen[str] | None = None
        try:
            poll_health(
                {"vault": port}, deadline=time.monotonic() + 30, interval=0.01, supervisor=proc
            )
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            idle: list[float] = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                idle.append(_probe(conn))
            load = subprocess.Popen(
                [sys.executable, "-c", WRITERS, str(port), token, str(seconds), str(writers)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
                env=base_env(),
                start_new_session=True,
            )
            reaper.add_manager(load)  # type: ignore[arg-type]
            assert load.stdout is not None
            load.stdout.readline()  # "go"
            busy: list[float] = []
            while load.poll() is None:
                busy.append(_probe(conn))
            out = json.loads(load.stdout.read().strip().splitlines()[-1])
            conn.close()
            if out["errors"]:
                raise BenchError(f"vault writes failed: {out['errors']}")
        except (OSError, ValueError, IndexError) as exc:
            tail = (Path(tmp) / "vault.log").read_text(errors="replace")[-1500:]
            raise BenchError(f"vault: {exc}\n{tail}") from None
        finally:
            if load is not None:
                reaper.stop_manager(load)  # type: ignore[arg-type]
            reaper.stop_manager(proc)
    return {
        "writers": writers,
        "seconds": seconds,
        "writes_per_s": out["writes"] / out["seconds"],
        "health_idle_ms": {"p50": _pct(idle, 50), "p99": _pct(idle, 99), "count": len(idle)},
        "health_load_ms": {"p50": _pct(busy, 50), "p99": _pct(busy, 99), "count": len(busy)},
    }
