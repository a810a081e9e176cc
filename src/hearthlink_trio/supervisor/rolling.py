"""Rolling restarts: a new process beside the old one, the old one stopped only once the
new one is ready by its own signal.

For a service whose socket the supervisor holds (``socket = true``, ``strategy =
"rolling"``), a restart that is not a crash (a manual ``restart``, a reload) starts the successor
while the running process keeps serving on the shared socket. The successor must pass its
probe itself: an http/tcp probe whose connection it accepted (see ``probes.owner``), a line
of its own output for a log probe, its own ``READY=1`` for the notify probe. Only then is
the old process stopped and the successor handed to the next incarnation. A successor that
exits or is not ready within ``startup_period`` is stopped and the old process keeps
serving; the restart is reported failed.

A reload that changes such a service (same address) replaces it the same way: the successor
runs the new config and the service's new runner adopts it; if it fails, the old process
keeps running with its previous config (a later reload tries again).

The replicas of a table are replaced one at a time: a successor starts only once the
previous replica's successor is ready.

``strategy = "recreate"`` needs nothing here: the old process is stopped first and the new
one started at once, as any restart does, while connections wait in the held socket's
backlog.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import trio

from hearthlink_trio.config import Config, Service
from hearthlink_trio.process.sockets import address_of
from hearthlink_trio.process.spawn import describe_exit
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.context import Context
from hearthlink_trio.supervisor.environment import child_environment
from hearthlink_trio.supervisor.output import ServiceOutput, pump_lines
from hearthlink_trio.supervisor.readiness import Readiness
from hearthlink_trio.supervisor.reload import Plan
from hearthlink_trio.supervisor.seams import Process

_group_locks: weakref.WeakKeyDictionary[Context, dict[str, trio.Lock]] = weakref.WeakKeyDictionary()


@dataclass(eq=False)
class RollRequest:
    """A rolling replacement asked by a reload: the successor runs ``service`` (the new
    config) with ``env``; :attr:`done` is set once it is ready (:attr:`successor`) or has
    failed (None)."""

    service: Service
    env: Mapping[str, str]
    successor: Process | None = None
    #: A successor was tried (False: the process ended first; restart it the usual way).
    tried: bool = False
    #: The reload has taken the successor over (else the old runner stops it as it ends).
    claimed: bool = False
    done: trio.Event = field(default_factory=trio.Event)


class Restarts(Protocol):
    """What a rolling restart asks of the service's runner."""

    def next_restart(self) -> trio.Event:
        """A fresh event for the next restart request (the last one failed)."""

    def take_roll(self) -> RollRequest | None:
        """The reload's request behind this restart, if it is one (taken once)."""


def rolls(service: Service) -> bool:
    """Is a restart of ``service`` that is not a crash a rolling one?"""
    return service.socket and service.strategy == "rolling" and not service.is_task


def successor_key(service: Service) -> str:
    """The successor's entry in the record of process groups while it starts."""
    return f"{service.name}+next"


def _group_lock(ctx: Context, service: Service) -> trio.Lock:
    locks = _group_locks.setdefault(ctx, {})
    return locks.setdefault(service.group or service.name, trio.Lock())


async def start_successor(
    ctx: Context,
    service: Service,
    env: Mapping[str, str],
    out: ServiceOutput,
    old: Process,
    retire_old: Callable[[Process], Awaitable[None]],
) -> Process | None:
    """Start a new process of ``service`` beside ``old``; once it is ready by its own
    signal, ``retire_old(new)`` (which stops ``old``) and return it. None if it failed to
    start (it is stopped then, and the failure is logged: ``Rolling restart of web failed:
    …, web keeps running (pid N)``).

    The successor's output goes to the service's output meanwhile, while ``old`` stops
    too (it must not fill its pipe and block); its process group is recorded under
    :func:`successor_key` until the caller takes it over. Cancelled before it returns, it
    stops the successor: none outlives it unless returned.
    """
    async with _group_lock(ctx, service):
        try:
            async with ctx.spawn_lock:
                new = ctx.launcher.launch(service, env)
        except OSError as exc:
            _failed(ctx, service, old, f"could not start: {exc.strerror or exc}")
            return None
        ctx.groups.add(successor_key(service), new.pid, new.start_ticks)
        log_lines.emit(ctx.log, log_lines.rolling_started(service.name, old.pid, new.pid))
        readiness = Readiness(ctx, service, env, new, own=True)
        reason: str | None = "cancelled"
        handed = False
        try:
            async with trio.open_nursery() as nursery:
                for name, stream in (("stdout", new.stdout), ("stderr", new.stderr)):
                    nursery.start_soon(_pump, stream, out, name, readiness)
                reason = await _ready_or_why_not(ctx, new, readiness)
                if reason is None:
                    log_lines.emit(ctx.log, log_lines.rolling_ready(service.name, old.pid, new.pid))
                    await retire_old(new)
                nursery.cancel_scope.cancel()
            handed = reason is None
        finally:
            if not handed:
                # Failed, or cancelled (the old process exited, a shutdown): the successor
                # never outlives this call unless it is handed over.
                await stop_successor(new, service, ctx)
        if handed:
            return new
        assert reason is not None
        _failed(ctx, service, old, reason)
        return None


def _failed(ctx: Context, service: Service, old: Process, reason: str) -> None:
    record = ctx.records.get(service.name)
    if record is not None:
        record.replacement_failed(reason, old.pid)
    else:
        log_lines.emit(ctx.log, log_lines.rolling_failed(service.name, reason, old.pid))


async def _ready_or_why_not(ctx: Context, new: Process, readiness: Readiness) -> str | None:
    """None once ``new`` is ready by its own signal; why not if it exits first or is not
    ready within ``startup_period`` (or the longer grace its ``EXTEND_TIMEOUT_USEC`` asks)."""
    began = trio.current_time()
    outcome: list[str | None] = []
    with trio.move_on_after(ctx.config.health.startup_period) as within:
        async with trio.open_nursery() as nursery:

            async def exits() -> None:
                await new.wait_exited()
                outcome.append(f"the new process exited ({describe_exit(new.peek_returncode())})")
                nursery.cancel_scope.cancel()

            async def ready() -> None:
                await readiness.wait_ready(within)
                outcome.append(None)
                nursery.cancel_scope.cancel()

            nursery.start_soon(exits)
            nursery.start_soon(ready)
    if outcome:
        return outcome[0]
    return f"the new process was not ready within {round(within.deadline - began, 3):g}s"


async def _pump(
    stream: trio.abc.ReceiveStream, out: ServiceOutput, name: str, readiness: Readiness
) -> None:
    """Copy the successor's output to the service's output until cancelled (the next
    incarnation's pumps take over the stream then); a partial last line is written as is."""
    await pump_lines(stream, lambda lines: _write(out, lines, name, readiness))


def _write(out: ServiceOutput, raw: list[bytes], name: str, readiness: Readiness) -> None:
    # The old process's log probe sees these lines too: harmless, it is a readiness probe
    # that the old process has passed already.
    out.lines(raw, name)
    readiness.feed(name, [line.decode("utf-8", "replace") for line in raw])


class Rollable(Protocol):
    """A runner, as a rolling reload sees it."""

    @property
    def service(self) -> Service: ...

    def request_roll(self, service: Service, env: Mapping[str, str]) -> RollRequest | None: ...


async def roll_changed(
    runners: Mapping[str, Rollable], plan: Plan, ctx: Context
) -> tuple[dict[str, Process], list[str]]:
    """Replace the rolling way every changed service of ``plan`` whose held socket stays
    (same address, ``strategy = "rolling"`` before and after).

    Returns the ready successors by service name (for the new runners to adopt), and the
    services whose successor failed: those keep running with their previous config.
    """
    requests: dict[str, RollRequest] = {}
    for name in plan.changed:
        old, new = runners[name].service, plan.config.service(name)
        if rolls(old) and rolls(new) and address_of(old) == address_of(new):
            env = child_environment(plan.config, new, ctx.secrets)
            request = runners[name].request_roll(new, env)
            if request is not None:
                requests[name] = request
    successors: dict[str, Process] = {}
    kept: list[str] = []
    try:
        for name, request in requests.items():
            await request.done.wait()
            if request.successor is not None:
                request.claimed = True
                successors[name] = request.successor
            elif request.tried:
                kept.append(name)
    except BaseException:
        await stop_successors(successors, plan.config, ctx)
        raise
    return successors, kept


async def stop_successors(successors: Mapping[str, Process], config: Config, ctx: Context) -> None:
    """Stop successors no runner has adopted (a shutdown came first): none is left behind."""
    for name, process in successors.items():
        await stop_successor(process, config.service(name), ctx)


async def stop_successor(process: Process, service: Service, ctx: Context) -> None:
    """Stop a successor that no runner watches (shielded)."""
    with trio.CancelScope(shield=True):
        process.share_service()
        await process.stop(service.stop_signal, service.stop_timeout, ctx.force)
        process.close_streams()
        ctx.groups.remove(successor_key(service))


def with_services(config: Config, services: list[Service]) -> Config:
    """``config`` with ``services`` in place of those of the same names."""
    by_name = {service.name: service for service in services}
    return dataclasses.replace(
        config, services=tuple(by_name.get(svc.name, svc) for svc in config.services)
    )
