"""Hooks: the programs a service runs at points of its life (``post_start``, ``pre_stop``,
``on_failure``).

A hook runs without a shell as a child of the supervisor, like an exec probe: its own
process group, a parent-death signal, awaited through its pidfd, with the service's
environment, folder and user. Its group is recorded with the run's (so a crashed supervisor's
leftovers are reaped) and always swept when it ends: past its timeout, when it is
cancelled, and after a normal exit (what it left in its group goes too). Its output goes to
the service's log and the console, prefixed ``NAME hook | ``. A hook that fails, hangs or
cannot start is logged and changes nothing else.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping

import trio

from hearthlink_trio.config import Service
from hearthlink_trio.process.spawn import describe_exit, spawn
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.context import Context
from hearthlink_trio.supervisor.output import ServiceOutput, pump_lines

#: The three hooks, as their keys are named.
HOOKS = ("post_start", "pre_stop", "on_failure")
#: How long the output of a hook that has ended may still be read.
DRAIN_SECONDS = 1.0
#: The variable that tells ``on_failure`` why the service gave up.
FAILURE_VARIABLE = "HEARTHLINK_FAILURE"


async def run_hook(
    ctx: Context,
    service: Service,
    hook: str,
    env: Mapping[str, str],
    out: ServiceOutput,
    *,
    timeout: float | None = None,
) -> bool:
    """Run ``service``'s ``hook`` (one of :data:`HOOKS`) to its end; True if it exited 0.

    It is killed (its whole group) past ``timeout`` (default: the service's
    ``hook_timeout``) or when the caller is cancelled; in every case its group is swept and
    the program reaped before this returns. Failures are logged, never raised.
    """
    argv: tuple[str, ...] = getattr(service, hook)
    assert argv, f"{service.name} has no {hook} hook"
    limit = service.hook_timeout if timeout is None else timeout
    try:
        # As the service's user, if it has one: a hook acts for the service, with its rights.
        child = spawn(argv, env=env, cwd=service.cwd, user=service.user)
    except OSError as exc:
        why = f"could not start {argv[0]}: {exc.strerror or exc}"
        log_lines.emit(ctx.log, log_lines.hook_failed(service.name, hook, why))
        return False
    group = f"{service.name} {hook} hook"
    ctx.groups.add(group, child.pid, child.start_ticks)
    timed_out = False
    code: int | None = None
    try:
        async with trio.open_nursery() as pumps:
            pumps.start_soon(_copy_lines, child.stdout, out)
            pumps.start_soon(_copy_lines, child.stderr, out)
            try:
                with trio.move_on_after(limit) as deadline:
                    await child.wait_exited()
                timed_out = deadline.cancelled_caught
            finally:
                # Shielded inside: the group goes, and the program is reaped, whatever
                # ended the wait (its exit, its timeout, a cancellation).
                code = await child.stop(signal.SIGKILL, 0.0)
                ctx.groups.remove(group)
                # The pipes end once the group is gone; read what is left, briefly.
                pumps.cancel_scope.deadline = trio.current_time() + DRAIN_SECONDS
    finally:
        child.close_streams()
    if timed_out:
        why = f"timed out after {limit:g}s and was killed"
        log_lines.emit(ctx.log, log_lines.hook_failed(service.name, hook, why))
        return False
    if code != 0:
        why = f"failed ({describe_exit(code)})"
        log_lines.emit(ctx.log, log_lines.hook_failed(service.name, hook, why))
        return False
    return True


def failure_environment(env: Mapping[str, str], reason: str) -> dict[str, str]:
    """``env`` with :data:`FAILURE_VARIABLE` set to ``reason`` (for ``on_failure``)."""
    return {**env, FAILURE_VARIABLE: reason}


async def _copy_lines(stream: trio.abc.ReceiveStream, out: ServiceOutput) -> None:
    await pump_lines(stream, out.hook_lines)
