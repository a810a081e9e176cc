"""``hearthlink run``, the composition root: preflight, the services that wait for nothing,
then, under ``trio.run``, the supervisor with what surrounds it: the signal watcher, the
control API and sd_notify.

The order is what makes the start quick: everything up to the first spawn is light (no
trio, no control server); the services that wait for nothing are started right after the
preflight, and boot while trio and the supervisor load (see ``launcher``).

And what makes a stop graceful at every moment: SIGINT, SIGTERM and SIGHUP are caught from
the start of the run (:class:`PendingSignals`), before the first spawn; a signal that comes
before trio's own receiver exists is kept, stops the early start, and is handed to the
supervisor once it has taken over every process started so far.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from hearthlink_trio.config import Config
from hearthlink_trio.config.selection import Selection
from hearthlink_trio.errors import ExitCode, PreflightError
from hearthlink_trio.process.containment import Containment
from hearthlink_trio.process.sockets import HeldSockets
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.boot import let_services_boot
from hearthlink_trio.supervisor.launcher import ServiceLauncher
from hearthlink_trio.supervisor.output import Console, setup_event_log
from hearthlink_trio.supervisor.preflight import Ready, preflight

if TYPE_CHECKING:
    import trio

    from hearthlink_trio.supervisor.supervisor import Supervisor
    from hearthlink_trio.systemd.notify import Notifier

#: The signals a run answers: stop (twice: by force) and reload.
HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class PendingSignals:
    """Keeps the signals that come before the supervisor's own receiver exists."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def install(self) -> None:
        for signum in HANDLED:
            signal.signal(signum, self._keep)

    def _keep(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    def stop_asked(self) -> bool:
        return any(signum != signal.SIGHUP for signum in self.received)

    def take(self) -> list[int]:
        received, self.received = self.received, []
        return received


@dataclass
class PreparedRun:
    """A run up to its first services: signals kept, preflight passed (the lock held), the
    containment made and the services that wait for nothing started. Nothing here needs
    trio. :meth:`close` undoes it all (what was started is killed)."""

    config: Config
    pending: PendingSignals
    log: logging.Logger
    ready: Ready
    containment: Containment
    console: Console
    launcher: ServiceLauncher

    def close(self) -> None:
        self.launcher.close()
        self.containment.close()
        self.console.close()
        self.ready.lock.release()


def prepare_run(
    config: Config,
    *,
    log_format: str,
    selection: Selection | None = None,
    pending: PendingSignals | None = None,
) -> PreparedRun:
    """Catch the stop signals (unless ``pending`` already does), run the preflight, make the
    containment and start the services of ``selection`` (default: all) that wait for nothing.

    Raises:
        PreflightError: a port is taken, a secret cannot be made, the lock is held…
    """
    if pending is None:
        pending = PendingSignals()
        pending.install()
    selected = selection.pick(config) if selection is not None else None
    log = setup_event_log(log_format)
    sockets = HeldSockets()
    try:
        ready = preflight(config, log, keep_lock=True, selected=selected, sockets=sockets)
    except BaseException:
        sockets.close()
        raise
    assert ready is not None
    try:
        # Before the services: the subreaper, the run's cgroup and the sentinel come first.
        containment = Containment.start()
    except BaseException:
        sockets.close()
        ready.lock.release()
        raise
    sentinel = containment.sentinel
    log_lines.emit(
        log, log_lines.containment(containment.guarantee, sentinel.pid if sentinel else None)
    )
    console = Console(sys.stdout.buffer, colour=sys.stdout.isatty())
    launcher = ServiceLauncher(containment, sockets)
    prepared = PreparedRun(config, pending, log, ready, containment, console, launcher)
    try:
        launcher.start(config, ready.secrets, stop_asked=pending.stop_asked, selected=selected)
        # Before anything else loads.
        let_services_boot(
            prepared.config, prepared.launcher.early(), lambda: bool(pending.received)
        )
    except BaseException:
        prepared.close()
        raise
    return prepared


def run_supervisor(
    config: Config,
    *,
    log_format: str,
    selection: Selection | None = None,
    watch: bool = True,
    command: Sequence[str] = (),
    wait_timeout: float = 60.0,
    pending: PendingSignals | None = None,
) -> int:
    """Run the supervisor in the foreground; returns the exit code.

    Only the services of the ``selection`` start (default: all); the others wait for
    ``hearthlink start``. ``watch=False`` turns file watching off. With a ``command``, it
    is run once the selected services are healthy (at most ``wait_timeout`` seconds), the
    run ends when it does, and its exit code is the run's. ``pending``: the stop signals
    caught already (default: caught from here on).
    """
    prepared = prepare_run(config, log_format=log_format, selection=selection, pending=pending)
    try:
        # Loaded only now, once the first services are up (or while they boot).
        import trio

        from hearthlink_trio.supervisor.command import ForegroundCommand
        from hearthlink_trio.supervisor.supervisor import Supervisor
        from hearthlink_trio.systemd.notify import Notifier

        foreground = ForegroundCommand(command, wait_timeout=wait_timeout) if command else None

        try:
            supervisor = Supervisor(
                config,
                prepared.log,
                secrets=prepared.ready.secrets,
                console=prepared.console,
                containment=prepared.containment,
                launcher=prepared.launcher,
                watch=watch,
                selection=selection,
                foreground=foreground,
            )
        except OSError as exc:  # the log dir cannot be created or a log file opened
            raise PreflightError([f"Log dir {config.log_dir}: {exc.strerror or exc}"]) from None
        return trio.run(_supervise, supervisor, prepared.pending, Notifier.from_environ())
    finally:
        prepared.close()


async def _supervise(supervisor: Supervisor, pending: PendingSignals, notifier: Notifier) -> int:
    import trio

    from hearthlink_trio.control.errors import ControlSocketError
    from hearthlink_trio.control.server import serve_control

    # Before any signal is handled: every process started so far becomes a runner's.
    supervisor.take_over()
    async with trio.open_nursery() as outer:
        await outer.start(_watch_signals, supervisor, pending)
        try:
            await outer.start(serve_control, supervisor.config.control_socket, supervisor)
        except (ControlSocketError, OSError) as exc:
            log_lines.emit(
                supervisor.ctx.log,
                log_lines.control_error(supervisor.config.control_socket, str(exc)),
            )
            supervisor.exit_code = ExitCode.PREFLIGHT
            supervisor.shutdown("Control socket unusable")
        if notifier.enabled:
            outer.start_soon(notifier.watchdog_loop)
            outer.start_soon(_notify_systemd, supervisor, notifier)
        code = await supervisor.run()
        outer.cancel_scope.cancel()
    return code


async def _watch_signals(
    supervisor: Supervisor,
    pending: PendingSignals,
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    import trio

    with trio.open_signal_receiver(*HANDLED) as signals:
        # Installed: nothing reaches the keeper any more. What it kept goes first.
        task_status.started()
        for signum in pending.take():
            supervisor.on_signal(signum)
        async for signum in signals:
            supervisor.on_signal(signum)


async def _notify_systemd(supervisor: Supervisor, notifier: Notifier) -> None:
    await notifier.follow(
        status=supervisor.systemd_status,
        started=lambda: supervisor.overall_status() != "starting",
        stopping=lambda: supervisor.shutting_down,
        next_change=supervisor.ctx.next_change,
    )
