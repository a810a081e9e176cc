"""The health loop of a process with ``probe = "notify"``: healthy on its ``READY=1``, its
``STATUS=`` shown in its status, and with ``watchdog = S``, restarted when no
``WATCHDOG=1`` has come for S seconds after READY."""

from __future__ import annotations

import trio

from hearthlink_trio.config import Service
from hearthlink_trio.process.notify import NotifyReceiver
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.context import Context
from hearthlink_trio.supervisor.state import ServiceState

WATCHDOG_TIMEOUT = "watchdog timeout"


async def watch_notify(
    ctx: Context,
    service: Service,
    record: ServiceState,
    receiver: NotifyReceiver | None,
    *,
    ready: bool = False,
) -> str:
    """Follow what the process says until it must be restarted; returns why.

    Not ready within ``startup_period`` (or the longer grace asked by
    ``EXTEND_TIMEOUT_USEC``): restarted. ``ready``: it has said READY=1 already (a
    rolling restart's successor).
    """
    if receiver is None:  # not started by a launcher that makes notify sockets
        await trio.sleep_forever()
    assert receiver is not None
    began = trio.current_time()
    record.notified_status(receiver.state.status)
    healthy = False
    ready_at = began
    while True:
        now = trio.current_time()
        receiver.drain(now)
        state = receiver.state
        for note in state.notes:
            log_lines.emit(ctx.log, log_lines.notify_note(service.name, note))
        state.notes.clear()
        record.notified_status(state.status)
        if (state.ready or ready) and not healthy:
            healthy, ready_at = True, now
            record.passed_probe(first=True)
        if state.stopping:
            record.notified("the service said STOPPING=1")
        elif state.reloading:
            record.notified("the service said RELOADING=1")
        if healthy:
            if not service.watchdog:
                wake = None
            else:
                last = max(ready_at, state.last_ping or ready_at)
                if now - last >= service.watchdog:
                    log_lines.emit(ctx.log, log_lines.unhealthy(service.name, WATCHDOG_TIMEOUT))
                    return WATCHDOG_TIMEOUT
                if state.last_ping is not None and state.last_ping > ready_at:
                    record.passed_probe(first=False)  # a ping is its health check
                wake = last + service.watchdog
        else:
            grace = max(began + ctx.config.health.startup_period, state.extend_until or 0.0)
            if now >= grace:
                reason = f"no READY=1 within {grace - began:g}s"
                log_lines.emit(ctx.log, log_lines.unhealthy(service.name, reason))
                return f"unhealthy ({reason})"
            wake = grace
        with trio.move_on_at(wake if wake is not None else float("inf")):
            await receiver.wait()
