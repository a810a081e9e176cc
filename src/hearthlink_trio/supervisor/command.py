"""``hearthlink run -- CMD``: once the selected services are healthy, the command runs in the
foreground with the stack's environment; when it ends, everything stops and the run exits
with the command's exit code.

The command is not a supervised service: it is never restarted, never probed, and its
output is not prefixed. It shares hearthlink's session and process group, so a terminal's
Ctrl-C reaches it directly, as under a shell; the supervisor does not send it a second one
and waits for the command to end before it stops the services. A SIGTERM, sent to
hearthlink alone, is passed on to the command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from hearthlink_trio.errors import ExitCode
from hearthlink_trio.process.spawn import describe_exit, spawn_attached
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.environment import command_environment
from hearthlink_trio.supervisor.state import State
from hearthlink_trio.supervisor.status import stuck

if TYPE_CHECKING:
    from hearthlink_trio.supervisor.supervisor import Supervisor

#: How long a command that must stop (a critical service gave up) gets after SIGTERM.
COMMAND_STOP_SECONDS = 10.0
#: The exit code of a command that could not be started (as a shell's "not found").
NOT_STARTED = 127
_READY = frozenset({State.HEALTHY, State.COMPLETED})


def exit_code(returncode: int) -> int:
    """A shell's exit code for ``returncode``: 128+N for a process killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


class ForegroundCommand:
    """The command of one run, and the run's exit code it decides."""

    def __init__(self, argv: Sequence[str], *, wait_timeout: float) -> None:
        assert argv, "a command needs a program"
        self.argv = tuple(argv)
        self.wait_timeout = wait_timeout
        #: The run's exit code: the command's, or 1 when it never ran (the services were
        #: not healthy in time, or the run was stopped first).
        self.result: int = ExitCode.FATAL
        self._process: subprocess.Popen[bytes] | None = None

    def takes_signal(self, signum: int) -> bool:
        """Is a SIGINT/SIGTERM the command's to act on first (it is running)? A SIGTERM is
        passed on; a SIGINT is not, the terminal sent it to the command already."""
        process = self._process
        if process is None or process.returncode is not None:
            return False
        if signum not in (signal.SIGINT, signal.SIGTERM):
            return False
        if signum == signal.SIGTERM:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        return True

    async def run(self, supervisor: Supervisor) -> None:
        """Wait for the selected services, run the command, then stop the supervisor."""
        ctx = supervisor.ctx
        # Its words may hold a token the shell expanded: the log gets them masked.
        shown = [ctx.secrets.redact(word) for word in self.argv]
        # A scheduled task runs at its times, not for the command: it is not waited for.
        wanted = [
            name
            for name, runner in supervisor.runners.items()
            if runner.selected and not runner.service.schedule
        ]
        depends = {svc.name: svc.depends_on for svc in ctx.config.services}

        def ready() -> bool:
            return all(ctx.records[name].state in _READY for name in wanted)

        def hopeless() -> bool:
            return any(stuck(name, ctx.records, depends) for name in wanted)

        with trio.move_on_after(self.wait_timeout):
            await ctx.wait_until(lambda: ready() or hopeless())
        if not ready():
            laggards = ", ".join(
                _describe(name, ctx.records[name].state, ctx.records[name].error_message)
                for name in wanted
                if ctx.records[name].state not in _READY
            )
            why = (
                f"not healthy after {log_lines.seconds(self.wait_timeout)}: {laggards}"
                if not hopeless()
                else f"a service will not get healthy: {laggards}"
            )
            log_lines.emit(ctx.log, log_lines.command_not_started(shown, ctx.secrets.redact(why)))
            supervisor.shutdown("The services are not ready")
            return
        env = command_environment(ctx.config, ctx.secrets)
        try:
            process = spawn_attached(self.argv, env=env)
        except OSError as exc:
            self.result = NOT_STARTED
            log_lines.emit(ctx.log, log_lines.command_not_started(shown, exc.strerror or str(exc)))
            supervisor.shutdown("The command could not be started")
            return
        self._process = process
        log_lines.emit(ctx.log, log_lines.command_started(shown, process.pid))
        returncode = await _wait(process)
        self.result = exit_code(returncode)
        log_lines.emit(
            ctx.log, log_lines.command_exited(shown, self.result, describe_exit(returncode))
        )
        supervisor.shutdown("Command ended")


async def _wait(process: subprocess.Popen[bytes]) -> int:
    """The command's return code, once it has ended (and is reaped). Cancelled (the run
    stops under it: a critical service gave up), it gets SIGTERM, then SIGKILL."""
    pidfd = os.pidfd_open(process.pid)
    try:
        try:
            await trio.lowlevel.wait_readable(pidfd)
        except trio.Cancelled:
            # Shielded: the command must be gone before the run reports its exit.
            with trio.CancelScope(shield=True):
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                with trio.move_on_after(COMMAND_STOP_SECONDS):
                    await trio.lowlevel.wait_readable(pidfd)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await trio.lowlevel.wait_readable(pidfd)
                process.wait()
            raise
        return process.wait()
    finally:
        os.close(pidfd)


def _describe(name: str, state: State, error: str | None) -> str:
    return f"{name} ({state.value}: {error})" if error else f"{name} ({state.value})"
