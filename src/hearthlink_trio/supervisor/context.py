"""What a service's runner may use of the supervisor, and nothing more.

The supervisor owns one :class:`Context`; each runner gets it. It holds the running config
(a reload replaces it), the seams (launcher, prober), the outputs, the records of every
service by name (a reload replaces a record with its successor's), and the change
notification that everything waiting on another service's state uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

from hearthlink_trio.config import Config
from hearthlink_trio.control.stream import StateChange, StreamEvent
from hearthlink_trio.process.memory import MemoryMeter
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.output import Console
from hearthlink_trio.supervisor.seams import Launcher, Prober
from hearthlink_trio.supervisor.secrets import Secrets
from hearthlink_trio.supervisor.state import ServiceState, State


class GroupLog(Protocol):
    """Where the process groups of the run are recorded (for reaping after a crash)."""

    def add(self, name: str, pgid: int, start_ticks: int | None) -> None: ...

    def remove(self, name: str) -> None: ...


@dataclass(eq=False)
class Context:
    config: Config
    log: logging.Logger
    launcher: Launcher
    prober: Prober
    console: Console
    secrets: Secrets
    groups: GroupLog
    #: Asks the supervisor to stop everything with exit code 1 (a critical service gave up).
    fatal: Callable[[str], None]
    #: The record of every current service, by name.
    records: dict[str, ServiceState] = field(default_factory=dict)
    #: When supervision began (trio's clock): the start of the startup phase.
    started: float = 0.0
    #: Reads services' memory (for ``max_memory`` and ``status``).
    memory: MemoryMeter = field(default_factory=lambda: MemoryMeter(None))
    shutting_down: bool = False
    #: Set by a second signal: every stop under way kills at once.
    force: trio.Event = field(default_factory=trio.Event)
    #: One spawn per scheduler batch: a spawn blocks the loop for a few milliseconds (fork
    #: and exec), and N of them back to back kept every probe waiting at start-up.
    spawn_lock: trio.Lock = field(default_factory=trio.Lock)
    #: Receives every event for the event stream.
    publish: Callable[[StreamEvent], None] = field(default=lambda event: None)
    #: Receives every batch of output lines: ``(service, "stdout"|"stderr", lines)``.
    publish_lines: Callable[[str, str, list[str]], None] = field(default=lambda *lines: None)
    #: Told when a service begins a restart that no cascade asked for (its dependents with
    #: ``restart = true`` follow it); set by the supervisor.
    restarted: Callable[[str], None] = field(default=lambda name: None)
    _changed: trio.Event = field(default_factory=trio.Event)

    def changed(self) -> None:
        """Wake everything that waits for a change of state."""
        self._changed.set()
        self._changed = trio.Event()

    def on_change(self, record: ServiceState, old: State) -> None:
        """The observer of every service record."""
        self.changed()
        self.publish(
            StateChange(
                service=record.name,
                state=record.state.value,
                status=record.state.status,
                previous=old.value,
                pid=record.pid,
                error_message=self.secrets.redact(record.error_message or "") or None,
                restart_count=record.restart_count,
                reason=record.reason,
                notify_status=record.notify_status,
            )
        )

    def next_change(self) -> trio.Event:
        """The event the next change sets."""
        return self._changed

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; it is checked again after every change."""
        while True:
            changed = self.next_change()  # taken first, so a change while checking is not missed
            if predicate():
                return
            await changed.wait()

    def log_write_failed(self, path: Path, error: OSError | None) -> None:
        """A service's log file stopped taking writes (``error``), or took them again (None)."""
        if error is None:
            log_lines.emit(self.log, log_lines.log_write_resumed(path))
        else:
            log_lines.emit(self.log, log_lines.log_write_failed(path, error.strerror or str(error)))

    def dependents_running(self, name: str) -> list[str]:
        """Services depending on ``name`` that still have a process."""
        return [
            svc.name
            for svc in self.config.services
            if name in svc.depends_on
            and (record := self.records.get(svc.name)) is not None
            and record.pid is not None
        ]
