"""Dependents that follow their dependency's restarts (``depends_on … restart = true``).

When a service begins a restart (by hand, after a crash, on a change to its files), every
service that asked to follow it, directly or through another follower, is restarted once
the restarted service is healthy again: one at a time, in dependency order, each once its
own new process is healthy before the next one begins. A newer restart of the same service
replaces a cascade still under way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import trio

from hearthlink_trio.config import Service
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.context import Context
from hearthlink_trio.supervisor.state import ServiceState, State


class Answer(NamedTuple):
    """What a request to restart a service (with a reason) answered."""

    accepted: bool  # a restart of it is under way
    what: str  # what will happen, in words (the rolling way, or why not)


#: A request to restart a service as part of a cascade: (name, reason) -> its answer.
Request = Callable[[str, str], Answer]

#: A restarted service is through with its restart in these states (or has given up on it).
_SETTLED = frozenset({State.HEALTHY, State.COMPLETED})
_GIVEN_UP = frozenset({State.FAILED, State.STOPPED})


def followers(services: Sequence[Service], origin: str) -> list[str]:
    """The services restarted after ``origin``'s restart, in dependency order: those with
    ``origin`` in ``restart_with``, then those that follow one of them, and so on.

    ``services`` must be in dependency order (as a config holds them).
    """
    restarted = {origin}
    order = []
    for svc in services:
        if svc.name != origin and restarted.intersection(svc.restart_with):
            restarted.add(svc.name)
            order.append(svc.name)
    return order


class Cascade:
    """Starts one cascade per restarted service that has followers (see the module)."""

    def __init__(self, ctx: Context, nursery: trio.Nursery, request: Request) -> None:
        self._ctx = ctx
        self._nursery = nursery
        self._request = request
        self._running: dict[str, trio.CancelScope] = {}

    def restarted(self, name: str) -> None:
        """Service ``name`` begins a restart (its new process is not started yet)."""
        order = followers(self._ctx.config.services, name)
        if not order or self._ctx.shutting_down:
            return
        previous = self._running.pop(name, None)
        if previous is not None:
            previous.cancel()
        record = self._ctx.records.get(name)
        before = record.started_at if record is not None else None
        scope = trio.CancelScope()
        self._running[name] = scope
        self._nursery.start_soon(self._follow, name, before, order, scope)

    async def _follow(
        self, origin: str, before: float | None, order: list[str], scope: trio.CancelScope
    ) -> None:
        with scope:
            if not await healthy_again(self._ctx, origin, before):
                return
            for name in order:
                record = self._ctx.records.get(name)
                if record is None:
                    continue
                started = record.started_at
                # One that is not running (stopped by hand, left out of the run, waiting)
                # has nothing to restart, and nothing is said of it.
                if self._request(name, f"{origin} restarted").accepted:
                    log_lines.emit(self._ctx.log, log_lines.dependency_restart(name, origin))
                    await healthy_again(self._ctx, name, started)
        if self._running.get(origin) is scope:
            del self._running[origin]


async def healthy_again(
    ctx: Context, name: str, before: float | None, *, crash_ends: bool = False
) -> bool:
    """Wait until service ``name`` runs a process started after ``before`` (the start time of
    the one it had) that is healthy (True), or has given up or been stopped (False); with
    ``crash_ends``, also once that process has ended and waits in backoff (False)."""
    outcome: list[bool] = []
    over = _GIVEN_UP | {State.BACKOFF} if crash_ends else _GIVEN_UP

    def done() -> bool:
        record: ServiceState | None = ctx.records.get(name)
        if record is None:
            outcome.append(False)
        elif record.started_at != before and record.state in _SETTLED:
            outcome.append(True)
        elif record.started_at != before and record.state in over:
            outcome.append(False)
        return bool(outcome)

    await ctx.wait_until(done)
    return outcome[-1]
