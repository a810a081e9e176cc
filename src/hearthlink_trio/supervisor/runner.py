"""The runner: one service for the supervisor's life. Wait for the dependencies, then start,
watch, restart with backoff, give up, and wait for a manual restart."""

from __future__ import annotations

from collections.abc import Mapping

import trio

from hearthlink_trio.config import Service
from hearthlink_trio.errors import EX_CONFIG
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.context import Context
from hearthlink_trio.supervisor.environment import child_environment
from hearthlink_trio.supervisor.hooks import failure_environment, run_hook
from hearthlink_trio.supervisor.incarnation import (
    End,
    Outcome,
    first_of,
    run_incarnation,
    running,
    started,
)
from hearthlink_trio.supervisor.output import ServiceLog, ServiceOutput
from hearthlink_trio.supervisor.policy import backoff_delay
from hearthlink_trio.supervisor.rolling import RollRequest, rolls, stop_successor
from hearthlink_trio.supervisor.schedule import (
    Schedule,
    next_due,
    parse_schedule,
    sleep_until_due,
)
from hearthlink_trio.supervisor.seams import Process
from hearthlink_trio.supervisor.state import ServiceState, State


class Runner:
    """Runs one service; :meth:`run` returns only when cancelled (shutdown or retirement)."""

    def __init__(
        self, ctx: Context, service: Service, *, index: int, selected: bool = True
    ) -> None:
        self.ctx = ctx
        self.service = service
        self.name = service.name
        # Computed once: an unchanged service keeps its environment across reloads.
        self.env = child_environment(ctx.config, service, ctx.secrets)
        #: Started with the run (``hearthlink run NAME…`` and profiles leave others out,
        #: stopped until ``hearthlink start NAME``).
        self.selected = selected
        self.record = ServiceState(
            service.name,
            log=ctx.log,
            state=State.WAITING if selected else State.STOPPED,
            restart_backoff=backoff_delay(1, ctx.config.restart),
            on_change=ctx.on_change,
        )
        self.out = ServiceOutput(
            service.name,
            index,
            ctx.console,
            ServiceLog(
                ctx.config.log_dir / f"{service.name}.log",
                max_bytes=ctx.config.log_max_bytes,
                backups=ctx.config.log_backups,
                on_error=ctx.log_write_failed,
            ),
        )
        self._restart = trio.Event()
        #: Why the restart asked for happens (None: by hand), and whether a cascade asked.
        self._reason: str | None = None
        self._cascaded = False
        #: Processes started so far: every start after the first is a restart.
        self._starts = 0
        #: Stopped by hand (``hearthlink stop NAME``), or not selected: kept stopped until
        #: started.
        self.held = not selected
        self._released = trio.Event()
        #: What the runner is doing now (waiting, a process, a backoff); cancelled by hold().
        self._activity: trio.CancelScope | None = None
        self.out.watchers.append(lambda stream, lines: ctx.publish_lines(self.name, stream, lines))
        #: Cancelled to end this runner alone (a reload removed or changed its service).
        self.scope = trio.CancelScope()
        self.retiring = False
        #: Set once :meth:`run` has returned and its process is gone.
        self.done = trio.Event()
        #: A process started before the supervisor loaded, taken over, not yet supervised.
        self._taken: Process | None = None
        #: A predecessor's successor, ready, running this runner's config (a rolling reload).
        self._adopted: Process | None = None
        #: The reload's rolling request the next restart is for, and the one under way.
        self._roll: RollRequest | None = None
        self._rolling: RollRequest | None = None

    def request_restart(self, reason: str | None = None, *, cascade: bool = False) -> str:
        """A restart; returns what will happen, truthfully, for the caller to show.

        ``reason`` None is a manual restart. Running: stopped and started at once, not
        counted (with a held socket and the rolling strategy: the new process starts first,
        see ``rolling``). In backoff: keeps its wait. Failed: its count is reset and it
        starts. Waiting for dependencies: it starts once they are healthy (nothing to
        restart yet). A manual restart starts a service stopped by hand.

        With a ``reason`` (a change to its files, a dependency's restart) the restart is the
        supervisor's own: a service stopped by hand stays stopped, and one in backoff starts
        now with its count reset (what it failed on may be what changed). ``cascade``: the
        restart is part of a dependency's, which restarts this service's dependents itself.
        """
        record = self.record
        if self.held:
            if reason is None:
                return self.release()
            return "stopped by hand; not started" if self.selected else "not selected; not started"
        if self._idle_on_schedule():
            self._reason, self._cascaded = reason, cascade
            self._restart.set()
            return "running it now (it is scheduled)"
        if self.ctx.shutting_down or record.state in (State.STOPPING, State.STOPPED):
            return "the supervisor is stopping it"
        if record.state is State.WAITING:
            return f"not started yet ({record.error_message or 'waiting for its dependencies'})"
        if record.state is State.BACKOFF and reason is None:
            return "in backoff; it restarts when its wait is over"
        if record.state in (State.FAILED, State.BACKOFF):
            record.forgiven()
        record.restarting_because(reason or "manual restart")
        self._reason = reason
        self._cascaded = cascade
        self._restart.set()
        if record.running and rolls(self.service):
            return (
                f"rolling restart: a new process starts beside pid {record.pid}, which "
                "serves until the new one is ready"
            )
        return "restarting"

    def next_restart(self) -> trio.Event:
        """A fresh event for the next restart request (a rolling restart that failed)."""
        self._restart = trio.Event()
        return self._restart

    def take_roll(self) -> RollRequest | None:
        request, self._roll = self._roll, None
        self._rolling = request
        return request

    def request_roll(self, service: Service, env: Mapping[str, str]) -> RollRequest | None:
        """Replace the running process by one of ``service`` (a reload's new config) the
        rolling way; None if there is no running process to replace (then the service is
        simply restarted with its new config)."""
        if (
            self.held
            or self.ctx.shutting_down
            or not self.record.running
            or not rolls(self.service)
            or self._taken is not None
        ):
            return None
        self._roll = RollRequest(service, env)
        self._restart.set()
        return self._roll

    def _abandon_roll(self) -> None:
        request, self._roll = self._roll, None
        if request is not None:
            request.done.set()

    @property
    def adopted(self) -> bool:
        """Has a successor to watch that its run has not taken yet."""
        return self._adopted is not None

    def adopt(self, process: Process) -> None:
        """Watch ``process`` (ready, started by a rolling reload for this runner's config)
        instead of starting one."""
        self._adopted = process

    def _idle_on_schedule(self) -> bool:
        """A scheduled task waiting for its next time (not running, not in backoff)."""
        return (
            bool(self.service.schedule)
            and not self.ctx.shutting_down
            and self.record.next_run is not None
            and self.record.state in (State.STOPPED, State.COMPLETED, State.FAILED)
        )

    @property
    def restart_asked(self) -> bool:
        """A restart has been asked and not begun yet (the last request was accepted)."""
        return self._restart.is_set()

    def hold(self) -> str:
        """Stop the service by hand and keep it stopped (not a failure, not counted)."""
        if self.ctx.shutting_down:
            return "the supervisor is stopping it"
        if self.held:
            return "already stopped"
        self.held = True
        self._abandon_roll()
        if self._activity is not None:
            self._activity.cancel()
        return "stopping"

    def release(self) -> str:
        """Start a service stopped by hand again (after its dependencies, as at start-up)."""
        if self.ctx.shutting_down:
            return "the supervisor is stopping"
        if not self.held:
            if self._idle_on_schedule():
                return "not stopped: it waits for its next scheduled time (restart runs it now)"
            return f"not stopped ({self.record.state.value})"
        self.selected = True
        self._released.set()
        return "starting"

    def _environment(self) -> dict[str, str]:
        # A secret kept in a file is read again at each start: the service itself may have
        # replaced the file (the Vault keeps the right key after an interrupted rotation).
        for var in self.service.secrets:
            self.env[var] = self.ctx.secrets.current(var)
        return self.env

    def take_over(self) -> None:
        """Take over the process the launcher started early for this service, if any, and
        announce it. From here on it is this runner's: it is stopped (signal, grace, kill)
        whenever the runner ends, even before its first incarnation began."""
        if self._taken is not None:
            return
        taken = self.ctx.launcher.take(self.service, self._environment())
        if taken is not None:
            self._taken, passed = taken
            started(self.ctx, self.service, self.record, self._taken, attempt=0)
            if passed:
                # Found passing its probe before the supervisor loaded (the launcher started
                # its dependents then: they are taken over next, in dependency order).
                self.record.passed_probe(first=True)

    def retire(self) -> None:
        """Stop this service for good (a reload removed or changed it)."""
        self.retiring = True
        self.scope.cancel()

    async def run(self) -> None:
        try:
            with self.scope:
                if self.held:  # not selected: stopped from the start, until started
                    await self._released.wait()
                    self.held, self._released = False, trio.Event()
                # The on_failure hooks run here, beside the service's own life: a hook never
                # holds up its restart, and ends with the runner at the latest.
                async with trio.open_nursery() as self._hooks:
                    await self._live()
        finally:
            self._abandon_roll()
            pending = self._taken or self._adopted
            if pending is not None:
                # Ended before its first incarnation could watch it: stopped the same way.
                with trio.CancelScope(shield=True):
                    async with running(
                        self.ctx, self.service, self.record, pending, self.out, lambda: True
                    ):
                        self._taken = self._adopted = None
            self.record.stopped()
            self.out.log.close()
            self.done.set()

    async def _live(self) -> None:
        while True:
            with trio.CancelScope() as self._activity:
                if self.record.state is State.STOPPED:
                    self.record.waiting()
                if self._adopted is None and self._taken is None:  # else started already
                    await self._wait_for_dependencies()
                if self.service.schedule:
                    await self._run_on_schedule()
                else:
                    await self._supervise()
            # Only a hold() ends the activity: stay stopped until released.
            self._activity = None
            self.record.stopped(by_hand=True)
            await self._released.wait()
            self.held, self._released = False, trio.Event()

    async def _supervise(self) -> None:
        while True:
            await self._until_done()
            await self._wait_for_manual_restart()

    async def _until_done(self) -> None:
        """Start the process, and restart it as its policy says, until one run completes or
        the service gives up (then its state is ``completed`` or ``failed``)."""
        ctx, record = self.ctx, self.record
        attempt = 0
        successor, self._adopted = self._adopted, None
        while True:
            if self._starts and not self._cascaded:
                ctx.restarted(self.name)
            self._starts += 1
            self._restart, self._reason, self._cascaded = trio.Event(), None, False
            if self._roll is not None:  # a reload's replacement, asked meanwhile
                self._restart.set()
            taken, self._taken = self._taken, None
            outcome = await run_incarnation(
                ctx,
                self.service,
                self._environment(),
                record,
                self.out,
                attempt=attempt,
                restart_requested=self._restart,
                stop_asked=lambda: ctx.shutting_down or self.retiring or self.held,
                process=taken,
                restart_reason=lambda: self._reason,
                adopt=successor,
                restarts=self,
            )
            attempt = 0
            successor = outcome.successor
            if not outcome.handed_off and outcome.end is not End.MANUAL:
                self._abandon_roll()  # ended otherwise: the reload restarts it as usual
            if outcome.handed_off:
                # The successor is the next runner's (a reload), now that the old process
                # is gone: this runner ends.
                request, self._rolling = self._rolling, None
                assert request is not None
                request.successor = outcome.successor
                request.done.set()
                try:
                    await trio.sleep_forever()
                finally:
                    if not request.claimed and outcome.successor is not None:
                        # The reload was cancelled (a shutdown) before it took it over.
                        await stop_successor(outcome.successor, request.service, ctx)
            if outcome.end is End.MANUAL:
                continue
            if outcome.end is End.COMPLETED:
                # Done; not run again by a dependency's restart, only by a manual one.
                record.completed()
                return
            if outcome.end is End.CONFIG:
                self._give_up(
                    log_lines.config_exit(self.name, EX_CONFIG),
                    self.out.last_line or f"configuration error (exit status {EX_CONFIG})",
                )
                return
            if self.service.restart == "never":
                self._give_up(
                    log_lines.not_restarting(self.name, "never", outcome.detail), outcome.detail
                )
                return
            if record.restart_count >= ctx.config.restart.max_attempts:
                self._give_up(log_lines.gave_up(self.name, record.restart_count), outcome.detail)
                return
            await self._back_off(outcome)
            attempt = record.restart_count

    async def _run_on_schedule(self) -> None:
        """A scheduled task: idle until each time its schedule names (or a manual restart),
        then one run, retried under its restart policy within that run only."""
        record = self.record
        schedule = parse_schedule(self.service.schedule)
        while True:
            # The restart event is not renewed here: one asked for as the last run ended
            # counts (the runs renew it at each start).
            due = next_due(schedule)
            record.due_at(due)

            async def on_time(due: float = due) -> float | None:
                await sleep_until_due(schedule, due)
                return due

            async def asked() -> float | None:
                await self._restart.wait()
                return None

            record.run_begins(await first_of(on_time, asked))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._skip_while_running, schedule)
                await self._until_done()
                nursery.cancel_scope.cancel()
            record.run_ended()

    async def _skip_while_running(self, schedule: Schedule) -> None:
        """Log each scheduled time that comes while a run is still going; it is skipped."""
        while True:
            due = next_due(schedule)
            self.record.due_at(due)
            await sleep_until_due(schedule, due)
            log_lines.emit(self.ctx.log, log_lines.schedule_skipped(self.name, due))

    async def _back_off(self, outcome: Outcome) -> None:
        delay = backoff_delay(self.record.restart_count + 1, self.ctx.config.restart)
        self.record.backing_off(delay, outcome.detail)
        self._restart = trio.Event()
        # A restart the supervisor asks for itself (a change, a dependency) ends the wait.
        with trio.move_on_after(delay):
            await self._restart.wait()

    def _give_up(self, line: log_lines.Event, error: str) -> None:
        # The error may be the service's own last output line: it is shown by `status` and
        # logged, so the secrets the supervisor handed out are masked in it.
        error = self.ctx.secrets.redact(error)
        self.record.gave_up(line, error)
        if self.service.on_failure:
            self._hooks.start_soon(self._on_failure, error)
        elif self.service.critical:
            self.ctx.fatal(f"critical service {self.name} gave up: {error}")

    async def _on_failure(self, reason: str) -> None:
        env = failure_environment(self._environment(), reason)
        await run_hook(self.ctx, self.service, "on_failure", env, self.out)
        # A critical service's hook runs before the shutdown it causes (which would kill it).
        if self.service.critical:
            self.ctx.fatal(f"critical service {self.name} gave up: {reason}")

    async def _wait_for_manual_restart(self) -> None:
        self._restart = trio.Event()
        await self._restart.wait()
        if self._reason is None:
            log_lines.emit(self.ctx.log, log_lines.manual_restart(self.name))

    async def _wait_for_dependencies(self) -> None:
        ctx, record = self.ctx, self.record

        def ready() -> bool:
            # Looked up by name at every change: a dependency that a reload replaced is
            # its successor's record from then on.
            waiting = [
                (dep, condition)
                for dep, condition in self.service.conditions.items()
                if not condition_holds(ctx.records.get(dep), condition)
            ]
            if waiting:
                record.waiting_for(_waiting_for(waiting, ctx.records))
            return not waiting

        await ctx.wait_until(ready)
        record.waiting_for(None)


_AWAITED = {"started": "start", "healthy": "be healthy", "completed": "complete"}


def condition_holds(dependency: ServiceState | None, condition: str) -> bool:
    """Does ``dependency`` meet ``condition``: started (spawned once), healthy (passed its
    probe; a task: completed), or completed (a task that exited 0)?"""
    if dependency is None:
        return False
    if condition == "started":
        return dependency.started_at is not None
    # A scheduled task that has completed a run once stays done for its dependents.
    done_once = dependency.next_run is not None and dependency.ever_healthy
    if condition == "completed":
        return done_once or dependency.state is State.COMPLETED
    return done_once or dependency.state in (State.HEALTHY, State.COMPLETED)


def _waiting_for(waiting: list[tuple[str, str]], records: dict[str, ServiceState]) -> str:
    """``waiting for db to be healthy, migrate to complete (migrate failed: …)``."""
    parts = []
    failed = []
    for dep, condition in waiting:
        parts.append(f"{dep} to {_AWAITED[condition]}")
        found = records.get(dep)
        if found is not None and found.state is State.FAILED:
            failed.append(f"{dep} failed: {found.error_message or 'gave up'}")
    text = "waiting for " + ", ".join(parts)
    return f"{text} ({'; '.join(failed)})" if failed else text
