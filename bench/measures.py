"""The measures taken on every manager (bare, hearthlink and the peers), from outside.

Each takes a running :class:`managers.Session` and returns a dict of numbers (seconds for
launches, milliseconds for the rest) that goes as it is into the JSON.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import Any

from managers import PROFILES, Bare, Hearthlink, Service
from net import free_ports, poll_health
from procs import (
    BenchError,
    Reaper,
    alive,
    all_pids,
    base_env,
    cpu_seconds,
    descendants,
    rss_mib,
    uss_mib,
    wait_gone,
    wait_new_child,
)
from session import Session


def launch(run: Session, timeout: float) -> dict[str, Any]:
    """Launch → every service answering /health (a new connection per poll, 5 ms apart for
    up to 8 pending, 10 ms for more). For hearthlink also: each service listening (the time
    in its /health body) → the supervisor's ``healthy`` event read from its log."""
    if isinstance(run.manager, Bare) and any(svc.after for svc in run.services):
        answers = _bare_chain(run, timeout)
    else:
        answers = run.wait_answering(timeout)
    res: dict[str, Any] = {"answering_s": max(t for t, _ in answers.values()) - run.t_launch}
    side = run.supervisor_side()
    if side:
        # What the supervisor side spent to get there: its start-up CPU, which competes
        # with the services' own on a small machine.
        res["startup_cpu_s"] = sum(cpu_seconds(p) or 0.0 for p in side)
    if isinstance(run.manager, Hearthlink):
        lags = []
        for name, (_t, body) in answers.items():
            seen = run.wait_event("healthy", name, after=run.t_launch, timeout=10)
            if seen is not None and isinstance(body.get("ready"), float):
                lags.append((seen - body["ready"]) * 1000)
        res["notice_lag_ms"] = lags
    return res


def _bare_chain(run: Session, timeout: float) -> dict[str, tuple[float, dict[str, Any]]]:
    """Bare's chain: each service started the moment every one it follows answers (1 ms
    polls), which is the best any manager can do."""
    deadline = time.monotonic() + timeout
    answers: dict[str, tuple[float, dict[str, Any]]] = {}
    for svc in run.services:
        if svc.after:
            pending = {n: run.ports[n] for n in svc.after if n not in answers}
            if pending:
                answers.update(poll_health(pending, deadline=deadline, interval=0.001))
            run.spawn_bare(svc)
    rest = {n: p for n, p in run.ports.items() if n not in answers}
    answers.update(poll_health(rest, deadline=deadline, interval=0.001))
    for name, (_t, body) in answers.items():
        run.record(name, body)
    return answers


def own_start(reaper: Reaper, profile: str) -> dict[str, Any]:
    """The service's own start, for the crash rows' bare column: Popen → answering."""
    port = free_ports(1)[0]
    svc = Service("own", port, {"HEARTHLINK_SERVICE": "own", **PROFILES[profile]})
    t0 = time.monotonic()
    proc = subprocess.Popen(
        svc.argv(),
        env={**base_env(), **svc.env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    reaper.add_manager(proc)
    try:
        answers = poll_health({"own": port}, deadline=t0 + 10, interval=0.002, supervisor=proc)
        t, body = answers["own"]
        if isinstance(body.get("child"), int):
            reaper.add_pid(body["child"])
        return {"answering_ms": (t - t0) * 1000, "listening_ms": (body["ready"] - t0) * 1000}
    finally:
        reaper.stop_manager(proc)


def crash(run: Session, name: str, timeout: float = 10.0) -> dict[str, Any]:
    """SIGKILL one service; → a new child of the manager in /proc (polled every ~0.3 ms),
    → a process with another pid answering /health (polled every 2 ms)."""
    if not run.manager.restarts or run.pid is None:
        raise BenchError(f"{run.manager.name} does not restart services")
    old = run.bodies[name]["pid"]
    before = all_pids()
    t0 = time.monotonic()
    os.kill(old, signal.SIGKILL)
    spawned = wait_new_child(run.pid, before, t0 + timeout)
    if spawned is None:
        raise BenchError(f"no new process within {timeout:g}s of killing {name}")
    answers = poll_health(
        {name: run.ports[name]},
        deadline=t0 + timeout,
        interval=0.002,
        accept=lambda _n, body: body.get("pid") != old,
        supervisor=run.proc,
    )
    t_answer, body = answers[name]
    run.record(name, body)
    res: dict[str, Any] = {
        "service": name,
        "spawned_ms": (spawned[0] - t0) * 1000,
        "answering_ms": (t_answer - t0) * 1000,
        "listening_ms": (body["ready"] - t0) * 1000,
        "new_pid_is_child": body.get("pid") == spawned[1],
    }
    if isinstance(run.manager, Hearthlink):
        for kind in ("exited", "started", "healthy"):
            seen = run.wait_event(kind, name, after=t0, timeout=5)
            res[f"logged_{kind}_ms"] = None if seen is None else (seen - t0) * 1000
    return res


def stop(run: Session, timeout: float = 30.0) -> dict[str, Any]:
    """SIGTERM to the manager (bare: to every service) → it and every process below it gone
    (pidfds of the manager, each service and whatever else ran below the manager)."""
    pids = set(run.service_pids())
    if run.pid is not None:
        pids |= {run.pid, *descendants(run.pid)}
    t0 = time.monotonic()
    if run.pid is not None:
        os.kill(run.pid, signal.SIGTERM)
    else:
        for proc in run.bare.values():
            proc.send_signal(signal.SIGTERM)
    exits = wait_gone(sorted(pids), t0 + timeout)
    left = sorted(pids - exits.keys())
    if run.proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            run.proc.wait(5)
    for proc in run.bare.values():
        proc.poll()
    if left:
        raise BenchError(f"still running {timeout:g}s after SIGTERM: {left[:8]}")
    res: dict[str, Any] = {"total_ms": (max(exits.values()) - t0) * 1000}
    if run.pid is not None and run.pid in exits:
        services = [exits[p] for p in run.service_pids() if p in exits]
        res["manager_exit_ms"] = (exits[run.pid] - t0) * 1000
        res["last_service_ms"] = (max(services) - t0) * 1000 if services else None
    return res


def idle(run: Session, seconds: float) -> dict[str, Any]:
    """The supervisor side's CPU (utime + stime of the manager and its own helpers, all
    threads) over ``seconds`` in which nothing happens but what it does by itself
    (hearthlink: its health probes), per 20 s, and its RSS and USS at the end."""
    side = run.supervisor_side()
    cpu0, t0 = [cpu_seconds(p) for p in side], time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = [cpu_seconds(p) for p in side], time.monotonic()
    if cpu0[0] is None or cpu1[0] is None:
        raise BenchError("the manager went away during the idle window")
    used = sum((b or 0.0) - (a or 0.0) for a, b in zip(cpu0, cpu1, strict=True))
    mem = supervisor_memory(run) or {}
    return {
        "seconds": t1 - t0,
        "cpu_pct": used / (t1 - t0) * 100,
        "cpu_s_per_20s": used / (t1 - t0) * 20,
        "processes": len(side),
        "rss_mib": mem.get("rss_mib"),
        "uss_mib": mem.get("uss_mib"),
    }


def orphans(run: Session, wait: float = 1.0) -> dict[str, Any]:
    """SIGKILL of the manager itself, services each with a ``sleep`` child in their process
    group: how many services and children are still alive ``wait`` seconds later."""
    assert run.pid is not None
    services, children = run.service_pids(), run.child_pids()
    os.kill(run.pid, signal.SIGKILL)
    time.sleep(wait)
    run.reaper.reap()  # orphans re-parented to us that died are zombies until reaped
    ticks = run.reaper.pids
    return {
        "services": len(services),
        "services_alive": sum(alive(p, ticks.get(p)) for p in services),
        "children": len(children),
        "children_alive": sum(alive(p, ticks.get(p)) for p in children),
    }


def supervisor_memory(run: Session) -> dict[str, Any] | None:
    """RSS and USS summed over the supervisor side (the manager and its own helpers)."""
    side = run.supervisor_side()
    if not side:
        return None
    rss = [rss_mib(p) for p in side]
    uss = [uss_mib(p) for p in side]
    return {
        "rss_mib": sum(r or 0.0 for r in rss),
        "uss_mib": sum(u or 0.0 for u in uss),
        "processes": len(side),
        "manager_rss_mib": rss[0],
    }
