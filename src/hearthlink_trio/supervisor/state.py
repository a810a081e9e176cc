"""A service's states, the transitions allowed between them, and the one place that changes them.

Depends on nothing else of the supervisor. Every change goes through
:meth:`ServiceState.change_state`, which checks the transition and calls the observer (the
supervisor wakes whoever waits on a change and tells systemd).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field


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

_UNSET = object()


def _ignore(record: ServiceState, old: State) -> None:
    """The default observer."""


@dataclass
class ServiceState:
    """The live record of one service, as the control API and ``status`` show it.

    ``state`` and ``error_message`` change only through :meth:`change_state` (the other
    fields are counters and times kept beside them).
    """

    name: str
    state: State = State.WAITING
    error_message: str | None = None
    pid: int | None = None
    started_at: float | None = None
    last_health_check: float | None = None
    restart_count: int = 0
    last_restart: float | None = None
    restart_backoff: float = 0.0
    #: Has passed a probe at least once since the supervisor started.
    ever_healthy: bool = False
    #: Why the service is being restarted (a change to its files, a dependency's restart, a
    #: manual request), carried by its state changes until it is healthy again.
    reason: str | None = None
    on_change: Callable[[ServiceState, State], None] = field(default=_ignore, repr=False)

    def change_state(self, new: State, *, error: str | object | None = _UNSET) -> None:
        """Move to ``new`` (the error message too, if given) and tell the observer.

        Raises:
            AssertionError: the transition is not one of :data:`TRANSITIONS`.
        """
        old = self.state
        assert new in TRANSITIONS[old], f"{self.name}: {old.value} -> {new.value}"
        self.state = new
        if error is not _UNSET:
            assert error is None or isinstance(error, str)
            self.error_message = error
        self.on_change(self, old)
        if new is State.HEALTHY or (new not in RUNNING_STATES and new is not State.STOPPING):
            self.reason = None

    def restart_because(self, reason: str) -> None:
        """Record why the coming restart happens (its state changes carry it)."""
        self.reason = reason

    def note(self, error: str | None) -> None:
        """Change only the error message (what a waiting service waits for, say)."""
        if error != self.error_message:
            self.error_message = error
            self.on_change(self, self.state)

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES
