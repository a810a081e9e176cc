"""The health loop of one process: probe on schedule, move the service between healthy and
unhealthy, reset its restart count once stable, and return when it must be restarted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from hearthlink_trio.config import Service
from hearthlink_trio.control.stream import ProbeResult
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.context import Context
from hearthlink_trio.supervisor.policy import ProbeTracker, Verdict
from hearthlink_trio.supervisor.state import ServiceState, State


async def watch_health(
    ctx: Context,
    service: Service,
    record: ServiceState,
    check: Callable[[], Awaitable[str | None]],
    *,
    passes_at_once: bool = False,
    ready: bool = False,
) -> str:
    """Probe ``service`` with ``check`` (one probe: None or why not) until it is unhealthy;
    returns the last failure's reason.

    ``[health]`` and ``[restart]`` are read from the running config at every step, so a
    reload applies to processes already running. ``passes_at_once``: a probe that is never
    run (``none``): healthy at once, and then only an exit ends the process. ``ready``: the
    process has passed its probe already (a rolling restart's successor): it is healthy at
    once.
    """
    if passes_at_once:
        if record.state is not State.HEALTHY:  # else found passing before it was watched
            record.passed_probe(first=True)
        await trio.sleep_forever()
    tracker = ProbeTracker(ctx.config.health, ctx.started, process_start=trio.current_time())
    healthy_since: float | None = None
    if ready:
        tracker.passed_once = True
        healthy_since = trio.current_time()
        if record.state is not State.HEALTHY:
            record.passed_probe(first=True)
    reason = ""
    while True:
        health, policy = ctx.config.health, ctx.config.restart
        tracker.health = health
        now = trio.current_time()
        delay = tracker.next_delay(now)
        if healthy_since is not None and record.restart_count:
            # Wake up in time to reset the count once the service has been stable.
            delay = min(delay, max(0.0, healthy_since + policy.stable_after - now))
        await trio.sleep(delay)
        began = trio.current_time()
        result = await check()
        now = trio.current_time()
        ctx.publish(
            ProbeResult(
                service=service.name,
                ok=result is None,
                latency_ms=round((now - began) * 1000, 3),
                reason=result,
            )
        )
        verdict = tracker.observe(result is None, now)
        if result is not None:
            reason = result
        if verdict is Verdict.FIRST_PASS:
            healthy_since = now
            record.passed_probe(first=True)
        elif verdict is Verdict.PASSED:
            if record.state is State.UNHEALTHY:
                healthy_since = now
            record.passed_probe(first=False)
            if healthy_since is not None and now - healthy_since >= policy.stable_after:
                record.stable(policy)
        elif verdict is Verdict.FAILED:
            healthy_since = None
            record.failed_probe(reason)
        elif verdict is Verdict.UNHEALTHY:
            log_lines.emit(ctx.log, log_lines.unhealthy(service.name, reason))
            return f"unhealthy ({reason})"
