"""``hearthlink run``: preflight, the services that wait for nothing, then the supervisor
under ``trio.run``.

The order is what makes the start quick: everything up to the first spawn is light (no
trio, no control server); the services that wait for nothing are started right after the
preflight, and boot while trio and the supervisor load (see ``prelaunch``).
"""

from __future__ import annotations

import sys

from hearthlink_trio.config import Config
from hearthlink_trio.errors import PreflightError
from hearthlink_trio.process.containment import Containment
from hearthlink_trio.supervisor import events
from hearthlink_trio.supervisor.output import Console, setup_event_log
from hearthlink_trio.supervisor.preflight import preflight
from hearthlink_trio.supervisor.prelaunch import EarlyStart
from hearthlink_trio.systemd.notify import Notifier


def run_supervisor(config: Config, *, log_format: str, watch: bool = True) -> int:
    """Run the supervisor in the foreground; returns the exit code. ``watch`` False: no
    service is restarted on changes to its files."""
    log = setup_event_log(log_format)
    ready = preflight(config, log, keep_lock=True)
    assert ready is not None
    # Before the services: the subreaper, the run's cgroup and the sentinel come first.
    containment = Containment.start()
    sentinel = containment.sentinel
    events.emit(log, events.containment(containment.guarantee, sentinel.pid if sentinel else None))
    console = Console(sys.stdout.buffer, colour=sys.stdout.isatty())
    launcher = EarlyStart(containment)
    try:
        launcher.start(config, ready.secrets)
        # Loaded only now, while the first services boot.
        import trio

        from hearthlink_trio.supervisor.supervisor import Supervisor

        try:
            supervisor = Supervisor(
                config,
                log,
                secrets=ready.secrets,
                console=console,
                notifier=Notifier.from_environ(),
                containment=containment,
                launcher=launcher,
                watch=watch,
            )
        except OSError as exc:  # the log dir cannot be created or a log file opened
            raise PreflightError([f"Log dir {config.log_dir}: {exc.strerror or exc}"]) from None
        return trio.run(supervisor.run)
    finally:
        launcher.close()
        containment.close()
        console.close()
        ready.lock.release()
