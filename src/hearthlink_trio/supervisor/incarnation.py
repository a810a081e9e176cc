"""One process of a service, from its start to its reaping.

:func:`run_incarnation` launches the process and, inside :func:`running`, waits for the
first of these: the process exits, a manual restart is asked, the health loop gives up on
it, or (with ``max_memory``) its memory stays above the limit. Whichever comes first is
the :class:`Outcome` returned. Leaving ``running`` (by that return, or by a cancellation:
shutdown, reload) always stops the process group in a shielded scope and drains its
output, so no path leaves a process behind: the guarantee is in the shape of the code.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import trio

from hearthlink_trio.config import Service
from hearthlink_trio.errors import EX_CONFIG
from hearthlink_trio.process.spawn import describe_exit, describe_signal
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.context import Context
from hearthlink_trio.supervisor.hooks import run_hook
from hearthlink_trio.supervisor.memory import watch_memory
from hearthlink_trio.supervisor.output import ServiceOutput, pump
from hearthlink_trio.supervisor.readiness import Readiness
from hearthlink_trio.supervisor.rolling import Restarts, rolls, start_successor, successor_key
from hearthlink_trio.supervisor.seams import Process
from hearthlink_trio.supervisor.state import ServiceState, State

#: How long the pumps may keep reading after their process exited.
PUMP_DRAIN_SECONDS = 1.0

T = TypeVar("T")


class End(enum.Enum):
    """Why a process ended."""

    EXITED = "exited"
    UNHEALTHY = "unhealthy"
    MEMORY = "memory"  # above max_memory: restarted like a failure (counted, backoff)
    MANUAL = "manual"
    CONFIG = "config"  # exited with EX_CONFIG: give up at once
    SPAWN_FAILED = "spawn_failed"
    COMPLETED = "completed"  # exited 0


@dataclass(frozen=True)
class Outcome:
    end: End
    detail: str = ""
    #: A rolling restart's new process, ready, for the next incarnation to take over.
    successor: Process | None = None
    #: The successor runs a reload's new config: the service's next runner takes it over.
    handed_off: bool = False


async def first_of(*tasks: Callable[[], Awaitable[T]]) -> T:
    """Run ``tasks`` concurrently; return the first result and cancel the others."""
    results: list[T] = []
    async with trio.open_nursery() as nursery:

        async def run(task: Callable[[], Awaitable[T]]) -> None:
            value = await task()
            if not results:
                results.append(value)
            nursery.cancel_scope.cancel()

        for task in tasks:
            nursery.start_soon(run, task)
    return results[0]


async def run_incarnation(
    ctx: Context,
    service: Service,
    env: Mapping[str, str],
    record: ServiceState,
    out: ServiceOutput,
    *,
    attempt: int,
    restart_requested: trio.Event,
    stop_asked: Callable[[], bool],
    process: Process | None = None,
    restart_reason: Callable[[], str | None] = lambda: None,
    adopt: Process | None = None,
    restarts: Restarts | None = None,
) -> Outcome:
    """Start ``service`` once and watch it until it exits, fails its health or is restarted.

    ``attempt`` is the restart number (0 for a first start or a manual restart).
    ``stop_asked()`` tells, when the process is stopped, whether that was asked for (a
    shutdown, a reload, a stop by hand), which is logged as such; once it holds nothing is
    started. ``process``: one already started and announced (taken over), to watch instead.
    ``restart_reason()`` tells why a restart was asked (None: by hand).
    ``adopt``: one already started and found ready (a rolling restart's successor), to
    announce and watch. With ``restarts`` (the runner), a manual restart or a reload of a
    service with a held socket is a rolling one (see ``rolling``).
    """
    if adopt is not None:
        process = adopt
        ctx.groups.remove(successor_key(service))
        started(ctx, service, record, process, attempt)
    elif process is None:
        async with ctx.spawn_lock:
            if stop_asked():
                # The stop began while this waited its turn: its cancellation is pending, and
                # the checkpoint below delivers it. Nothing starts after a stop began.
                await trio.sleep_forever()
            try:
                process = ctx.launcher.launch(service, env)
            except Exception as exc:  # whatever keeps it from starting fails the service
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                reason = f"could not start: {why or type(exc).__name__}"
                log_lines.emit(ctx.log, log_lines.spawn_failed(service.name, reason))
                return Outcome(End.SPAWN_FAILED, reason)
        started(ctx, service, record, process, attempt)
    watched = process
    exited = trio.Event()
    #: Cancelled once a successor is ready and this process is stopped for it: its exit is
    #: no crash then (and the stop waits on its pidfd itself).
    exit_watch = trio.CancelScope()

    async def pre_stop(timeout: float) -> None:
        if not exited.is_set():  # a process that has exited gets no stop signal either
            await run_hook(ctx, service, "pre_stop", env, out, timeout=timeout)

    async def retire(successor: Process) -> None:
        # The successor serves from now on: the status shows it while this one stops.
        exit_watch.cancel()
        record.handed_over(successor.pid)
        with trio.CancelScope(shield=True):
            grace = service.stop_timeout
            if service.pre_stop and not ctx.force.is_set():
                began = trio.current_time()
                await _unless_forced(ctx, pre_stop(min(service.hook_timeout, grace)))
                grace = max(0.0, grace - (trio.current_time() - began))
            watched.share_service()  # the successor is in the service's cgroup too
            await watched.stop(service.stop_signal, grace, ctx.force, kill_mode=service.kill_mode)

    async def manual() -> Outcome:
        if restarts is not None and rolls(service):
            return await _manual_rolling(
                ctx, service, env, out, watched, retire, restart_requested, restarts, restart_reason
            )
        return await _manual(ctx, service, restart_requested, restart_reason)

    async def exits() -> Outcome:
        with exit_watch:
            return await _exit_of(ctx, service, watched, exited)
        await trio.sleep_forever()  # stopped for its successor: the rolling outcome follows

    watchers = [exits, manual]
    if service.post_start:
        watchers.append(lambda: _post_start(ctx, service, record, env, out))
    readiness = Readiness(ctx, service, env, watched)
    if not service.is_task:  # a task is done when it exits: nothing to probe
        # Ready already: a rolling restart's successor, or a process taken over that the
        # launcher found passing its probe (healthy from its take-over on).
        ready = adopt is not None or record.state is State.HEALTHY
        watchers.append(lambda: _unhealthy(record, readiness, ready=ready))
    if service.max_memory is not None:
        watchers.append(lambda: _over_memory(ctx, service, record))
    if readiness.log_watch is not None:  # only a log probe reads the output lines
        out.watchers.append(readiness.feed)
    handed_over: list[Process] = []
    try:
        async with running(
            ctx,
            service,
            record,
            process,
            out,
            stop_asked,
            pre_stop if service.pre_stop else None,
            handover=lambda: bool(handed_over),
        ):
            outcome = await first_of(*watchers)
            if outcome.successor is not None:
                handed_over.append(outcome.successor)  # this process was stopped already
            return outcome
    finally:
        if readiness.log_watch is not None:
            out.watchers.remove(readiness.feed)


def started(
    ctx: Context, service: Service, record: ServiceState, process: Process, attempt: int
) -> None:
    """Record and announce a process of ``service`` that has just started."""
    ctx.groups.add(service.name, process.pid, process.start_ticks)
    record.started(
        process.pid,
        port=service.port,
        task=service.is_task,
        attempt=attempt,
        policy=ctx.config.restart,
    )


@asynccontextmanager
async def running(
    ctx: Context,
    service: Service,
    record: ServiceState,
    process: Process,
    out: ServiceOutput,
    stop_asked: Callable[[], bool],
    pre_stop: Callable[[float], Awaitable[None]] | None = None,
    handover: Callable[[], bool] = lambda: False,
) -> AsyncIterator[None]:
    """Pump the process's output while the body runs; stop it and drain when it ends.

    ``pre_stop(timeout)`` runs before the stop signal, within the service's stop_timeout.
    ``handover()`` true when it ends: a successor has taken over, so the service is not
    stopping (its state and pid are the successor's)."""
    try:
        async with trio.open_nursery() as pumps:
            drained = trio.Event()
            open_streams = {"stdout": process.stdout, "stderr": process.stderr}
            scopes: list[trio.CancelScope] = []

            async def drain(name: str, stream: trio.abc.ReceiveStream) -> None:
                # Shielded: the pumps keep reading while the process shuts down, so its last
                # words reach the log; they are ended below once it has exited.
                with trio.CancelScope(shield=True) as scope:
                    scopes.append(scope)
                    await pump(stream, out, name)
                del open_streams[name]
                if not open_streams:
                    drained.set()

            for name, stream in list(open_streams.items()):
                pumps.start_soon(drain, name, stream)
            try:
                yield
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(ctx, service, record, process, stop_asked, pre_stop, handover())
                    with trio.move_on_after(PUMP_DRAIN_SECONDS):
                        await drained.wait()
                    for scope in scopes:
                        scope.cancel()
    finally:
        process.close_streams()
        ctx.prober.forget(service)


async def _stop(
    ctx: Context,
    service: Service,
    record: ServiceState,
    process: Process,
    stop_asked: Callable[[], bool],
    pre_stop: Callable[[float], Awaitable[None]] | None = None,
    handover: bool = False,
) -> None:
    if handover:
        # Stopped by the rolling restart already, its successor's output flowing meanwhile.
        ctx.groups.remove(service.name)
        code = process.peek_returncode()
        log_lines.emit(ctx.log, log_lines.stopped(service.name, code, detail=None))
        return
    if ctx.shutting_down:
        # Dependents stop before what they depend on.
        await ctx.wait_until(lambda: not ctx.dependents_running(service.name))
    record.stopping()
    signal_name = describe_signal(service.stop_signal)

    def waiting(waited: float, left: int) -> None:
        sent = "SIGKILL" if ctx.force.is_set() else signal_name
        log_lines.emit(
            ctx.log, log_lines.waiting_to_stop(service.name, process.pid, sent, waited, left)
        )

    grace = service.stop_timeout
    if pre_stop is not None and not ctx.force.is_set():
        # The hook shares the grace: what it takes is taken from the wait after the stop
        # signal, so the SIGKILL comes when it would have without a hook.
        began = trio.current_time()
        await _unless_forced(ctx, pre_stop(min(service.hook_timeout, grace)))
        grace = max(0.0, grace - (trio.current_time() - began))
    code = await process.stop(
        service.stop_signal,
        grace,
        ctx.force,
        kill_mode=service.kill_mode,
        waiting=waiting,
    )
    ctx.groups.remove(service.name)
    record.process_gone()
    if stop_asked():
        as_asked = code in (0, -service.stop_signal)
        detail = None if as_asked else describe_exit(code)
        log_lines.emit(ctx.log, log_lines.stopped(service.name, code, detail=detail))


async def _unless_forced(ctx: Context, work: Awaitable[None]) -> None:
    """Await ``work``, cut short by a second signal (which kills everything at once)."""
    async with trio.open_nursery() as nursery:

        async def forced() -> None:
            await ctx.force.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(forced)
        await work
        nursery.cancel_scope.cancel()


async def _post_start(
    ctx: Context, service: Service, record: ServiceState, env: Mapping[str, str], out: ServiceOutput
) -> Outcome:
    """Run the post_start hook once this process has passed its first probe (a task, never
    probed, once it has started); the hook ends with the process at the latest."""
    if not service.is_task:
        await ctx.wait_until(lambda: record.state is State.HEALTHY)
    await run_hook(ctx, service, "post_start", env, out)
    await trio.sleep_forever()


async def _exit_of(ctx: Context, service: Service, process: Process, exited: trio.Event) -> Outcome:
    await process.wait_exited()
    exited.set()
    code = process.peek_returncode()
    if code == EX_CONFIG:
        return Outcome(End.CONFIG, "configuration error")
    detail = describe_exit(code)
    if code == 0 and (service.is_task or service.restart != "always"):
        log_lines.emit(ctx.log, log_lines.completed(service.name, task=service.is_task))
        return Outcome(End.COMPLETED, f"exited ({detail})")
    if not ctx.shutting_down:
        log_lines.emit(ctx.log, log_lines.exited(service.name, detail, code))
    return Outcome(End.EXITED, f"exited ({detail})")


async def _manual(
    ctx: Context,
    service: Service,
    restart_requested: trio.Event,
    restart_reason: Callable[[], str | None],
) -> Outcome:
    await restart_requested.wait()
    reason = restart_reason()
    if reason is None:
        log_lines.emit(ctx.log, log_lines.manual_restart(service.name))
        return Outcome(End.MANUAL, "manual restart")
    return Outcome(End.MANUAL, reason)  # its requester has said why


async def _manual_rolling(
    ctx: Context,
    service: Service,
    env: Mapping[str, str],
    out: ServiceOutput,
    process: Process,
    retire: Callable[[Process], Awaitable[None]],
    restart_requested: trio.Event,
    restarts: Restarts,
    restart_reason: Callable[[], str | None],
) -> Outcome:
    # A successor that fails leaves this process running: wait for the next request.
    while True:
        await restart_requested.wait()
        request = restarts.take_roll()
        if request is None:
            if restart_reason() is None:  # else its requester has said why
                log_lines.emit(ctx.log, log_lines.manual_restart(service.name))
            successor = await start_successor(ctx, service, env, out, process, retire)
        else:  # a reload: the successor runs the new config
            successor, request.tried = None, True
            try:
                successor = await start_successor(
                    ctx, request.service, request.env, out, process, retire
                )
            finally:
                if successor is None:
                    request.done.set()  # failed: the old process keeps running
                # Else done once this process is stopped (by the runner): a reload that
                # went on at once would retire this runner while it still stops it.
        if successor is not None:
            return Outcome(
                End.MANUAL, "rolling restart", successor=successor, handed_off=request is not None
            )
        restart_requested = restarts.next_restart()


async def _over_memory(ctx: Context, service: Service, record: ServiceState) -> Outcome:
    return Outcome(End.MEMORY, await watch_memory(ctx, service, record))


async def _unhealthy(record: ServiceState, readiness: Readiness, *, ready: bool) -> Outcome:
    return Outcome(End.UNHEALTHY, await readiness.until_unhealthy(record, ready=ready))
