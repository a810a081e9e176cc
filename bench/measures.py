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

from managers import Bare, Hearthlink, Service
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
    wait_gone,
    wait_new_child,
)
from session import Session


def launch(run: Session, timeout: float) -> dict[str, Any]:
    """Launch → every service answering /health (a new connection per poll, 5 ms apart for
    up to 8 pending, 10 ms for more). For hearthlink also: each service listening (the time
    in its /health body) → the supervisor's ``healthy`` event read from its log."""
    answers = run.wait_answering(timeout)
    res: dict[str, Any] = {"answering_s": max(t for t, _ in answers.values()) - run.t_launch}
    if isinstance(run.manager, Hearthlink):
        lags = []
        for name, (_t, body) in answers.items():
            seen = run.wait_event("healthy", name, after=run.t_launch, timeout=10)
            if seen is not None and isinstance(body.get("ready"), float):
                lags.append((seen - body["ready"]) * 1000)
        res["notice_lag_ms"] = lags
    return res


def own_start(reaper: Reaper) -> dict[str, Any]:
    """The service's own start, for the crash rows' bare column: Popen → answering."""
    port = free_ports(1)[0]
    svc = Service("own", port, {"HEARTHLINK_SERVICE": "own"})
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
    """The manager's CPU (utime + stime, all threads) and RSS over ``seconds`` in which
    nothing happens but what it does by itself (hearthlink: its health probes)."""
    assert run.pid is not None
    pid = run.pid
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    rss = rss_mib(pid)
    if cpu0 is None or cpu1 is None or rss is None:
        raise BenchError("the manager went away during the idle window")
    return {"seconds": t1 - t0, "cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100, "rss_mib": rss}


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


def manager_rss(run: Session) -> float | None:
    return None if run.pid is None or isinstance(run.manager, Bare) else rss_mib(run.pid)
