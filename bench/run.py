#!/usr/bin/env python3
"""The side-by-side benchmark: the performance budgets for hearthlink, next to bare and the peers.

The same N services (``bench/svc.py``, in two profiles: ``minimal`` and ``real``, ~0.1 s of
CPU before it listens) under ``bare`` (spawned and waited for, no supervision), ``hearthlink
run``, supervisord, circus and honcho (from PyPI, into ``bench/.peers-venv``) and PM2 (from
npm, into ``bench/.pm2``), interleaved round-robin within each repeat, measured from
outside::

    .venv/bin/python bench/run.py --repeats 3   # the README's run (~15 min)
    .venv/bin/python bench/run.py --quick       # N = 4, 2 repeats

Prints a markdown table on stdout and writes every sample as JSON to ``--out``
(``bench/results/latest.json``). Progress goes to stderr. Every process it starts is gone
when it ends, on Ctrl-C and on errors too (see ``procs.Reaper``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hl_only
import measures
import report
from managers import (
    HERE,
    PM2,
    PROFILES,
    Bare,
    Circus,
    Hearthlink,
    Honcho,
    Manager,
    Supervisord,
    ensure_peers,
    make_services,
    pm2_status,
)
from net import free_ports
from procs import T0, BenchError, Reaper, base_env, progress
from session import session

PROFILE_NAMES = list(PROFILES)
PROCESS_COMPOSE = (
    "not run: a Go binary released on GitHub only; this machine reaches neither GitHub's "
    "release downloads nor the Go module proxy"
)

#: Imports every module of the package (but its __main__), so that their bytecode is cached.
WARM_UP = """
import importlib, pkgutil, hearthlink_trio
for mod in pkgutil.walk_packages(hearthlink_trio.__path__, "hearthlink_trio."):
    if not mod.name.endswith("__main__"):
        try:
            importlib.import_module(mod.name)
        except Exception as exc:
            print(f"warm-up: {mod.name}: {exc}")
"""


def warm_up() -> None:
    """Cache the bytecode of the supervisor and the services before measuring anything."""
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", WARM_UP],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    for line in (out.stdout + out.stderr).splitlines()[-5:]:
        progress(f"  {line}")
    progress(f"warm-up (bytecode cache) took {time.monotonic() - t0:.1f}s")


def launch_timeout(n: int) -> float:
    return 20.0 + n * 0.3


def one_session(
    m: Manager,
    n: int,
    rep: int,
    profile: str,
    opts: argparse.Namespace,
    reaper: Reaper,
    out: dict[str, Any],
) -> None:
    """One launch of N services of ``profile`` under ``m``: launch; at the smallest N also
    the supervisor side's memory, the CLI times (hearthlink) and a crash; then SIGTERM →
    all gone. Samples go to ``out`` under ``<profile>:<measure>``."""
    with (
        tempfile.TemporaryDirectory(prefix=f"hlbench-{m.name}-") as tmp,
        session(m, make_services(free_ports(n), profile=profile), Path(tmp), reaper) as run,
    ):

        def put(key: str, value: Any) -> None:
            out.setdefault(f"{profile}:{key}", []).append(value)

        res = measures.launch(run, launch_timeout(n))
        put(f"launch_{n}", res["answering_s"])
        if "startup_cpu_s" in res:
            put(f"startup_cpu_{n}", res["startup_cpu_s"])
        if "notice_lag_ms" in res:
            put("notice_lag_ms", res["notice_lag_ms"])
        note = f"{res['answering_s']:.3f}s to all answering"
        if n == opts.ns[0]:
            time.sleep(0.3)
            mem = measures.supervisor_memory(run)
            if mem is not None:
                put("memory_4", mem)
            if isinstance(m, Hearthlink) and profile == PROFILE_NAMES[0]:
                cli = hl_only.cli_times(run, opts.cli_times)
                for key, values in cli.items():
                    opts.cli.setdefault(key, []).extend(values)
            if m.restarts:
                c = measures.crash(run, f"s{rep % n:03d}")
                put("crash", c)
                note += (
                    f"; crash: spawned {c['spawned_ms']:.1f} ms, answering "
                    f"{c['answering_ms']:.1f} ms"
                )
                time.sleep(0.3)
            if isinstance(m, Bare):
                put("own_start", measures.own_start(reaper, profile))
        s = measures.stop(run)
        put(f"stop_{n}", s["total_ms"])
        put(f"stop_detail_{n}", s)
        progress(
            f"  {m.name:11s} {profile:7s} N={n}: {note}; SIGTERM → all gone {s['total_ms']:.0f} ms"
        )


def chain_session(
    m: Manager, profile: str, reaper: Reaper, out: dict[str, Any], links: int = 5
) -> None:
    """``links`` services, each depending on the one before: launch → the last answering."""
    services = make_services(free_ports(links), profile=profile, chain=True)
    with (
        tempfile.TemporaryDirectory(prefix=f"hlbench-{m.name}-") as tmp,
        session(m, services, Path(tmp), reaper) as run,
    ):
        res = measures.launch(run, launch_timeout(links) + 10 * links)
        out.setdefault(f"{profile}:chain_{links}", []).append(res["answering_s"])
        measures.stop(run)
        progress(f"  {m.name:11s} {profile:7s} chain of {links}: {res['answering_s']:.3f}s")


def idle_and_orphans(
    m: Manager, opts: argparse.Namespace, reaper: Reaper, out: dict[str, Any]
) -> None:
    """Idle windows at N = 4, 32 and ``idle_n`` (``real`` services; bare: the launch of
    ``idle_n`` only), then (managers) the SIGKILL of the manager."""
    profile = PROFILE_NAMES[-1]
    for n in sorted({4, 32, opts.idle_n}):
        if isinstance(m, Bare) and n != opts.idle_n:
            continue
        with (
            tempfile.TemporaryDirectory(prefix=f"hlbench-{m.name}-") as tmp,
            session(m, make_services(free_ports(n), profile=profile), Path(tmp), reaper) as run,
        ):
            res = measures.launch(run, launch_timeout(n))
            if n == opts.idle_n:
                out.setdefault(f"{profile}:launch_{n}", []).append(res["answering_s"])
            if isinstance(m, Bare):
                progress(f"  {m.name:11s} N={n}: {res['answering_s']:.3f}s to all answering")
                measures.stop(run)
                continue
            time.sleep(2.0)
            out[f"idle_{n}"] = idle = measures.idle(run, opts.idle)
            idle["launch_s"] = res["answering_s"]
            progress(
                f"  {m.name:11s} N={n}: {res['answering_s']:.3f}s to all answering; idle: "
                f"{idle['cpu_s_per_20s']:.3f} s CPU / 20 s, {idle['rss_mib']:.1f} MiB "
                f"({idle['processes']} processes)"
            )
            measures.stop(run)
    if isinstance(m, Bare):
        return
    with (
        tempfile.TemporaryDirectory(prefix=f"hlbench-{m.name}-") as tmp,
        session(m, make_services(free_ports(4), child=True), Path(tmp), reaper) as run,
    ):
        measures.launch(run, launch_timeout(4))
        out["orphans"] = o = measures.orphans(run)
        progress(
            f"  {m.name:11s} SIGKILL of the manager: {o['services_alive']}/{o['services']} "
            f"services, {o['children_alive']}/{o['children']} children alive after 1 s"
        )


def bench(opts: argparse.Namespace, reaper: Reaper, results: dict[str, Any]) -> None:
    peers = ensure_peers()
    peers["pm2"] = pm2_status()
    results["peers"] = peers
    results["peers_not_run"] = {"process-compose": PROCESS_COMPOSE}
    for pkg, st in peers.items():
        if "error" in st:
            progress(f"peer {pkg} left out: {st['error']}")
    classes = {"supervisor": Supervisord, "circus": Circus, "honcho": Honcho, "pm2": PM2}
    hearthlink = Hearthlink(shlex.split(opts.supervisor_cmd) if opts.supervisor_cmd else None)
    managers: list[Manager] = [Bare(), hearthlink]
    managers += [cls() for pkg, cls in classes.items() if "version" in peers[pkg]]
    if opts.only:
        managers = [m for m in managers if m.name in opts.only.split(",") or m.name == "bare"]
    results["managers"] = [m.name for m in managers]
    results["profiles"] = PROFILES
    results["settings"] = {m.name: m.settings for m in managers}
    samples: dict[str, dict[str, Any]] = {m.name: {} for m in managers}
    results["samples"] = samples
    warm_up()
    for rep in range(opts.repeats):
        for profile in PROFILE_NAMES:
            for n in opts.ns:
                progress(f"repeat {rep + 1}/{opts.repeats}, {profile} services, N = {n}")
                for m in managers:
                    one_session(m, n, rep, profile, opts, reaper, samples[m.name])
            if not opts.skip_chain:
                for m in managers:
                    if m.chains:
                        chain_session(m, profile, reaper, samples[m.name])
    progress(f"idle CPU (N = 4, 32, {opts.idle_n}; {opts.idle:g} s) and SIGKILL of the manager")
    for m in managers:
        idle_and_orphans(m, opts, reaper, samples[m.name])
    hl: dict[str, Any] = {"cli": opts.cli}
    results["hearthlink_only"] = hl
    if not opts.skip_default:
        progress("default stack: bare and hearthlink, warm and as a first start")
        hl["default"] = hl_only.default_stack(reaper, opts.repeats, hearthlink.command)
        if "skipped" in hl["default"]:
            progress(f"default config skipped: {hl['default']['skipped']}")
    progress(f"Vault under write load ({opts.vault_s:g} s idle, {opts.vault_s:g} s loaded)")
    hl["vault"] = v = hl_only.vault_load(reaper, opts.vault_s)
    progress(
        f"  /health p99 {v['health_idle_ms']['p99']:.2f} ms idle, "
        f"{v['health_load_ms']['p99']:.2f} ms under {v['writes_per_s']:.0f} writes/s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="N = 4 only, 2 repeats, 20 idle services, short windows (~70 s)",
    )
    parser.add_argument("--n", default=None, help="comma-separated service counts (4,32)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats (5; quick: 2)")
    parser.add_argument(
        "--idle", type=float, default=None, help="idle window seconds (20; reported per 20 s)"
    )
    parser.add_argument("--idle-n", type=int, default=None, help="services when idle (100)")
    parser.add_argument("--only", default="", help="managers to run besides bare, e.g. circus")
    parser.add_argument("--skip-default", action="store_true", help="skip the default config")
    parser.add_argument("--skip-chain", action="store_true", help="skip the chain of 5")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument(
        "--supervisor-cmd",
        default="",
        help="command that runs hearthlink (for profiling), e.g. "
        "'python -m pyinstrument -o prof.html -r html -m hearthlink_trio'",
    )
    parser.add_argument("--report", type=Path, help="only print the table of a saved JSON")
    opts = parser.parse_args(argv)
    if opts.report:
        print(report.render(json.loads(opts.report.read_text())))
        return 0
    opts.ns = [int(x) for x in (opts.n or ("4" if opts.quick else "4,32")).split(",")]
    opts.repeats = opts.repeats or (2 if opts.quick else 5)
    opts.idle = opts.idle or (4.0 if opts.quick else 20.0)
    opts.idle_n = opts.idle_n or (20 if opts.quick else 100)
    opts.vault_s = 2.0 if opts.quick else 4.0
    opts.cli_times = 2
    opts.cli = {}
    if opts.repeats < 1 or any(n < 1 for n in opts.ns):
        parser.error("--repeats and --n must be positive")

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    reaper = Reaper()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": report.commit(),
        "machine": report.machine(),
        "repeats": opts.repeats,
        "ns": opts.ns,
        "idle_n": opts.idle_n,
        "idle_s": opts.idle,
    }
    code = 0
    try:
        bench(opts, reaper, results)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("benchmark interrupted", file=sys.stderr)
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        left = reaper.cleanup()
        results["processes_started"] = reaper.started
        results["leftovers_killed_at_end"] = left
        if left:
            print(f"killed {len(left)} leftover process(es): {left}", file=sys.stderr)
        still = [p for p in reaper.leftovers() if p != os.getpid()]
        if still:
            print(f"processes still alive after cleanup: {still}", file=sys.stderr)
            code = code or 1
    if code:
        return code
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["elapsed_s"] = time.monotonic() - T0
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report.render(results))
    progress(f"{reaper.started} processes started, none left; results in {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
