"""What the supervisor reports: each service's status object, the overall status, systemd's line.

Pure functions of the service records; no clock and no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hearthlink_trio.config import Service
from hearthlink_trio.supervisor.state import ServiceState, State

#: Nothing to worry about: healthy, a task done, or a service stopped by hand.
WELL = frozenset({State.HEALTHY, State.COMPLETED, State.STOPPED})


def service_status(
    record: ServiceState, service: Service, usage: Mapping[str, int | None] | None = None
) -> dict[str, Any]:
    """The ServiceStatus object of ``GET /v1/health``: the original design's fields, plus
    ``state`` (the finer state), ``critical``, and from the service's cgroup, where it has
    one, ``memory_bytes`` and ``cpu_usec`` (None otherwise). A scheduled task also carries
    ``next_run``, ``last_run`` (Unix seconds) and ``last_outcome``."""
    usage = usage or {}
    status: dict[str, Any] = {
        "name": record.name,
        "status": record.state.status,
        "state": record.state.value,
        "port": service.port,
        "pid": record.pid,
        "started_at": record.started_at,
        "health_check_url": service.health_url,
        "last_health_check": record.last_health_check,
        "error_message": record.error_message,
        "restart_count": record.restart_count,
        "last_restart": record.last_restart,
        "restart_backoff": record.restart_backoff,
        "critical": service.critical,
        "completed": record.state is State.COMPLETED,
        "memory_bytes": usage.get("memory_bytes"),
        "cpu_usec": usage.get("cpu_usec"),
        "notify_status": record.notify_status,
    }
    if service.schedule:
        status["next_run"] = record.next_run
        status["last_run"] = record.last_run
        status["last_outcome"] = record.last_outcome
    return status


def stuck(
    name: str, records: Mapping[str, ServiceState], depends_on: Mapping[str, Sequence[str]]
) -> bool:
    """Failed, or waiting on a dependency that is stuck (it will not start by itself)."""
    record = records[name]
    if record.state in (State.FAILED, State.STOPPED):
        return True
    return record.state is State.WAITING and any(
        stuck(dep, records, depends_on) for dep in depends_on.get(name, ()) if dep in records
    )


def overall_status(
    records: Mapping[str, ServiceState],
    depends_on: Mapping[str, Sequence[str]],
    *,
    shutting_down: bool,
) -> str:
    """``starting`` until every service has passed its first probe or is stuck; then
    ``healthy`` when all are healthy, else ``degraded``; ``stopping`` once shutdown began."""
    if shutting_down:
        return "stopping"
    if any(not r.ever_healthy and not stuck(n, records, depends_on) for n, r in records.items()):
        return "starting"
    if all(r.state in WELL for r in records.values()):
        return "healthy"
    return "degraded"


def systemd_status(records: Mapping[str, ServiceState], *, shutting_down: bool) -> str:
    """One line for systemd's STATUS=: ``4/4 healthy``, ``vault restarting (attempt 2)``."""
    if shutting_down:
        return "stopping"
    for record in records.values():
        if record.state is State.BACKOFF:
            return f"{record.name} restarting (attempt {record.restart_count})"
    healthy = sum(r.state in WELL for r in records.values())
    text = f"{healthy}/{len(records)} healthy"
    failed = [r.name for r in records.values() if r.state is State.FAILED]
    return f"{text}, {', '.join(failed)} failed" if failed else text
