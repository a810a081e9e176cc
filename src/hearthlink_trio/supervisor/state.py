"""What can happen to a service: its states, the transitions allowed between them, and the
one object that changes its record.

:class:`ServiceState` is the only writer of a service's record. The runner, the incarnation
and the health loop decide *what* happens and say so through its intent methods
(:meth:`~ServiceState.started`, :meth:`~ServiceState.passed_probe`,
:meth:`~ServiceState.backing_off`, …); each method checks the transition, changes the
fields, writes the matching log line and tells the observer, which publishes the stream's
``state`` event and wakes whoever waits on a change. A forbidden transition raises
:class:`TransitionError`.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hearthlink_trio.config.resolved import Restart
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.policy import backoff_delay


class State(enum.Enum):
    """What a service is doing. ``status`` is the coarser word the control API shows."""

    WAITING = "waiting"  # for its dependencies
    STARTING = "starting"  # process started, not yet passed a probe
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # running, failing probes, not yet past the threshold
    BACKOFF = "backoff"  # stopped, waiting to be restarted
    FAILED = "failed"  # given up
    STOPPING = "stopping"
    STOPPED = "stopped"  # at shutdown, or stopped by hand (kept stopped until started)
    COMPLETED = "completed"  # a task that exited 0

    @property
    def status(self) -> str:
        return STATUS[self]


STATUS = {
    State.WAITING: "starting",
    State.STARTING: "starting",
    State.HEALTHY: "running",
    State.UNHEALTHY: "running",
    State.BACKOFF: "stopped",
    State.FAILED: "error",
    State.STOPPING: "stopped",
    State.STOPPED: "stopped",
    State.COMPLETED: "stopped",
}

#: A process of the service is alive in these states.
RUNNING_STATES = frozenset({State.STARTING, State.HEALTHY, State.UNHEALTHY})
#: The process has ended; a restart (or nothing) comes next.
ENDED_STATES = frozenset({State.BACKOFF, State.FAILED, State.STOPPED, State.COMPLETED})

_AFTER_A_PROCESS = frozenset({State.STOPPING, *ENDED_STATES, State.STARTING})
TRANSITIONS: dict[State, frozenset[State]] = {
    State.WAITING: frozenset({State.STARTING, *ENDED_STATES}),
    # Failures past the startup period count even before a first pass.
    State.STARTING: frozenset({State.HEALTHY, State.UNHEALTHY, *_AFTER_A_PROCESS}),
    State.HEALTHY: frozenset({State.UNHEALTHY, *_AFTER_A_PROCESS}),
    State.UNHEALTHY: frozenset({State.HEALTHY, *_AFTER_A_PROCESS}),
    State.STOPPING: frozenset({State.STARTING, *ENDED_STATES}),
    # A start that fails (the program cannot be run) goes from backoff to backoff.
    State.BACKOFF: frozenset({State.STARTING, *ENDED_STATES}),
    State.FAILED: frozenset({State.STARTING, State.STOPPED}),
    State.STOPPED: frozenset({State.WAITING, State.STARTING}),
    State.COMPLETED: frozenset({State.WAITING, State.STARTING, State.STOPPED}),
}


class TransitionError(RuntimeError):
    """A service was asked to move between two states that have no transition (a bug)."""


def _ignore(record: ServiceState, old: State) -> None:
    """The default observer."""


_UNSET = object()


@dataclass
class ServiceState:
    """The live record of one service, as the control API and ``status`` show it.

    Read its fields freely; change them only through the methods below.
    """

    name: str
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("hearthlink"))
    #: Told of every change: (the record, the state before it).
    on_change: Callable[[ServiceState, State], None] = field(default=_ignore, repr=False)
    state: State = State.WAITING
    error_message: str | None = None
    pid: int | None = None
    started_at: float | None = None
    last_health_check: float | None = None
    restart_count: int = 0
    last_restart: float | None = None
    restart_backoff: float = 0.0
    #: Has passed a probe (or completed) at least once since the supervisor started.
    ever_healthy: bool = False
    #: Why the service is being restarted (a change to its files, a dependency's restart, a
    #: manual request): carried by its state changes until it is healthy again.
    reason: str | None = None
    #: The last ``STATUS=`` of its process (``probe = "notify"``).
    notify_status: str | None = None
    #: A scheduled task: when its next run is due, when its last one began and how it ended
    #: (Unix seconds; "completed" or "failed: <why>").
    next_run: float | None = None
    last_run: float | None = None
    last_outcome: str | None = None

    # -- the one place a state changes ---------------------------------------------------

    def _move(self, new: State, *, error: str | object | None = _UNSET) -> None:
        old = self.state
        if new not in TRANSITIONS[old]:
            raise TransitionError(f"{self.name}: no transition from {old.value} to {new.value}")
        self.state = new
        if error is not _UNSET:
            assert error is None or isinstance(error, str)
            self.error_message = error
        self.on_change(self, old)
        if new is State.HEALTHY or (new not in RUNNING_STATES and new is not State.STOPPING):
            self.reason = None

    def _changed(self) -> None:
        self.on_change(self, self.state)

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    # -- before a process ------------------------------------------------------------------

    def waiting(self) -> None:
        """Waits for its dependencies again (started after a stop by hand)."""
        self._move(State.WAITING)

    def waiting_for(self, what: str | None) -> None:
        """What it waits for (``waiting for db to be healthy``), or None once it waits no more."""
        if what != self.error_message:
            self.error_message = what
            self._changed()

    # -- a process's life ------------------------------------------------------------------

    def started(
        self, pid: int, *, port: int | None, task: bool, attempt: int, policy: Restart
    ) -> None:
        """A process started (``attempt``: the restart number, 0 for a first or manual start)."""
        now = time.time()
        self.pid = pid
        self.started_at = now
        if attempt:
            self.last_restart = now
            self.restart_backoff = backoff_delay(attempt + 1, policy)
        self._move(State.STARTING)
        log_lines.emit(self.log, log_lines.started(self.name, port, pid, task=task))
        if attempt:
            log_lines.emit(self.log, log_lines.restarted(self.name, attempt, self.restart_backoff))

    def passed_probe(self, *, first: bool) -> None:
        """A probe passed: the first of this process (healthy), or a later one (healthy
        again if it was failing)."""
        self.last_health_check = time.time()
        if first:
            self.ever_healthy = True
            self._move(State.HEALTHY, error=None)
            log_lines.emit(self.log, log_lines.healthy(self.name))
        elif self.state is State.UNHEALTHY:
            self._move(State.HEALTHY, error=None)
            log_lines.emit(self.log, log_lines.healthy(self.name, again=True))

    def failed_probe(self, reason: str) -> None:
        """A probe failed after the first pass (below the threshold: still running)."""
        if self.state is State.UNHEALTHY:
            self.waiting_for(reason)
        else:
            self._move(State.UNHEALTHY, error=reason)

    def stable(self, policy: Restart) -> None:
        """Healthy for ``stable_after``: its restarts are forgiven."""
        if self.restart_count:
            self.restart_count = 0
            self.restart_backoff = backoff_delay(1, policy)
            self._changed()

    def notified_status(self, status: str | None) -> None:
        """Its process said ``STATUS=status`` (None: a new process has said nothing yet)."""
        if status != self.notify_status:
            self.notify_status = status
            self._changed()
            if status is not None:
                log_lines.emit(self.log, log_lines.notify_status(self.name, status))

    def notified(self, note: str) -> None:
        """Its process said something worth showing (``STOPPING=1``) in its error message."""
        self.waiting_for(note)

    # -- a rolling restart (held socket) ---------------------------------------------------

    def handed_over(self, pid: int) -> None:
        """A successor, ready, replaces its process (which is stopped next, as it is no
        longer the service's: the state stays)."""
        self.pid = pid
        self._changed()

    def replacement_failed(self, reason: str, pid: int) -> None:
        """A successor failed to start: process ``pid`` keeps running; status says why."""
        log_lines.emit(self.log, log_lines.rolling_failed(self.name, reason, pid))
        self.waiting_for(f"rolling restart failed: {reason}")

    def stopping(self) -> None:
        """Its process is being stopped (if it still runs)."""
        if self.running:
            self._move(State.STOPPING)

    def process_gone(self) -> None:
        """Its process has been reaped."""
        self.pid = None
        self._changed()

    # -- after a process -------------------------------------------------------------------

    def backing_off(self, delay: float, reason: str) -> None:
        """It ended and restarts after ``delay`` seconds: one more attempt counted."""
        self.restart_count += 1
        self.restart_backoff = delay
        self._move(State.BACKOFF, error=reason)
        log_lines.emit(self.log, log_lines.restarting(self.name, delay))

    def gave_up(self, line: log_lines.Event, error: str) -> None:
        """Given up: ``line`` says why; ``error`` is what status shows."""
        log_lines.emit(self.log, line)
        self._move(State.FAILED, error=error)

    def completed(self) -> None:
        """A task exited 0."""
        self.ever_healthy = True
        self._move(State.COMPLETED, error=None)

    def forgiven(self) -> None:
        """A manual restart of a failed service (or a restart on a change, of one in
        backoff): its count starts again from 0."""
        self.restart_count = 0
        self._changed()

    def restarting_because(self, reason: str) -> None:
        """A restart was asked for ``reason``; its state changes carry it."""
        self.reason = reason

    def stopped(self, *, by_hand: bool = False) -> None:
        """Stopped (by hand: kept stopped until started; else at the end of its runner)."""
        if by_hand:
            if self.state is not State.STOPPED:  # a scheduled task may idle stopped already
                self._move(State.STOPPED, error=None)
        elif self.state is not State.STOPPED:
            self._move(State.STOPPED)

    # -- a scheduled task --------------------------------------------------------------------

    def due_at(self, when: float) -> None:
        """A scheduled task's next time is ``when`` (Unix seconds). Before its first run it
        idles as stopped: nothing runs at start."""
        self.next_run = when
        if self.state is State.WAITING:
            self._move(State.STOPPED, error=None)
        else:
            self._changed()

    def run_begins(self, due: float | None) -> None:
        """A scheduled run begins (``due``: the time it was due; None: asked by hand). The
        run has the whole restart policy to itself."""
        if due is None:
            log_lines.emit(self.log, log_lines.manual_restart(self.name))
        else:
            log_lines.emit(self.log, log_lines.scheduled_run(self.name, due))
        self.last_run = time.time()
        self.restart_count = 0
        self._changed()

    def run_ended(self) -> None:
        """A scheduled run is over: completed, or given up (its state says which)."""
        if self.state is State.COMPLETED:
            self.last_outcome = "completed"
        else:
            self.last_outcome = f"failed: {self.error_message or 'gave up'}"
        self._changed()
