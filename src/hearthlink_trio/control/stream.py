"""The event stream's schema: one small frozen dataclass per kind of event.

``GET /v1/events`` writes each as one line of JSON (:func:`to_json`); the supervisor builds
them, the hub fans them out, and the clients (``status --watch``, ``ui``, ``wait``, the
tests) read them back with :func:`parse`. A new field is added here once, for all of them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "EVENT_TYPES",
    "Dropped",
    "Output",
    "ProbeResult",
    "Snapshot",
    "StateChange",
    "StreamEvent",
    "SupervisorLine",
    "parse",
    "to_json",
]


@dataclass(frozen=True)
class StateChange:
    """A service moved to another state (or its error message or pid changed)."""

    type: ClassVar[str] = "state"
    service: str
    state: str
    status: str
    previous: str
    pid: int | None
    error_message: str | None
    restart_count: int
    #: Why it is restarting (a change to its files, a dependency's restart, by hand), on
    #: each state change of the restart until it is healthy again.
    reason: str | None = None
    ts: float = field(default_factory=time.time)
    #: The last ``STATUS=`` of its process (``probe = "notify"``).
    notify_status: str | None = None


@dataclass(frozen=True)
class ProbeResult:
    """One probe of a service: passed or why not, and how long it took."""

    type: ClassVar[str] = "probe"
    service: str
    ok: bool
    latency_ms: float
    reason: str | None
    ts: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Output:
    """One line a service wrote."""

    type: ClassVar[str] = "output"
    service: str
    stream: str  # "stdout" or "stderr"
    line: str
    ts: float = field(default_factory=time.time)


@dataclass(frozen=True)
class SupervisorLine:
    """One of the supervisor's own log lines, with its fields (``service`` among them where
    the line is about one)."""

    type: ClassVar[str] = "supervisor"
    event: str
    message: str
    level: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    @property
    def service(self) -> str | None:
        value = self.fields.get("service")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Snapshot:
    """The first line of every stream: the whole ``/v1/health`` object."""

    type: ClassVar[str] = "snapshot"
    health: Mapping[str, Any]
    service: ClassVar[None] = None


@dataclass(frozen=True)
class Dropped:
    """The last line of a stream whose reader fell too far behind."""

    type: ClassVar[str] = "dropped"
    reason: str
    service: ClassVar[None] = None


StreamEvent = StateChange | ProbeResult | Output | SupervisorLine | Snapshot | Dropped

#: The kinds of event a reader may filter on (the snapshot and the drop notice always come).
EVENT_TYPES = frozenset({"state", "probe", "output", "supervisor"})
_KINDS: dict[str, type[StateChange | ProbeResult | Output]] = {
    "state": StateChange,
    "probe": ProbeResult,
    "output": Output,
}


def to_json(event: StreamEvent) -> dict[str, Any]:
    """The JSON object of one line of the stream."""
    if isinstance(event, Snapshot):
        return {"type": event.type, **event.health}
    if isinstance(event, SupervisorLine):
        body = {
            "type": event.type,
            "ts": event.ts,
            "event": event.event,
            "message": event.message,
            "level": event.level,
        }
        for key, value in event.fields.items():
            body.setdefault(key, _plain(value))
        return body
    return {"type": event.type, **dataclasses.asdict(event)}


def parse(obj: Mapping[str, Any]) -> StreamEvent | None:
    """The event a line of the stream carries; None for a kind this version does not know
    (a newer supervisor), so that a client skips it."""
    kind = obj.get("type")
    if kind == "snapshot":
        return Snapshot({key: value for key, value in obj.items() if key != "type"})
    if kind == "dropped":
        return Dropped(str(obj.get("reason", "")))
    if kind == "supervisor":
        known = {"type", "ts", "event", "message", "level"}
        return SupervisorLine(
            event=str(obj.get("event", "")),
            message=str(obj.get("message", "")),
            level=str(obj.get("level", "info")),
            fields={key: value for key, value in obj.items() if key not in known},
            ts=float(obj.get("ts", 0.0)),
        )
    cls = _KINDS.get(str(kind))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in obj.items() if key in names})


def _plain(value: Any) -> Any:
    """A field value as JSON can carry it (paths and the like become strings)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)
