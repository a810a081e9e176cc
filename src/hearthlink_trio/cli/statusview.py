"""The table ``hearthlink status`` prints from the ``GET /v1/health`` object.

::

    hearthlink: degraded (3/4 services healthy)
    NAME   STATE         PID    PORT  UPTIME  RESTARTS  LAST CHECK  ERROR
    alden  running       41022  8888  3m12s   0         2s ago      -
    vault  backoff (4s)  -      8001  -       2         9s ago      Connection refused

Only the columns above are shown, whatever else the object holds, so nothing secret can
reach the terminal through it; error texts are cut to one line and obvious credentials in
them are masked.
"""

from __future__ import annotations

import re
import time
from typing import Any

__all__ = ["format_duration", "render_status_table"]

HEADERS = ("NAME", "STATE", "PID", "PORT", "UPTIME", "RESTARTS", "LAST CHECK", "ERROR")
NONE = "-"
#: Longest error text shown; the full text is in ``status --json``.
MAX_ERROR_CHARS = 72
#: States in which a service has a running process whose uptime means something.
_LIVE_STATUSES = frozenset({"starting", "running"})
# An error line may quote a command line or a request: mask what looks like a credential.
_SECRET = re.compile(
    r"(?i)(authorization:\s*(?:(?:bearer|basic)\s+)?|bearer\s+"
    r"|(?:token|key|secret|password)[\w-]*\s*[=:]\s*)\S+"
)


def render_status_table(health: dict[str, Any], *, now: float | None = None) -> str:
    """The overall status line, then one aligned row per service.

    Args:
        health: the ``/v1/health`` object: ``{"status": ..., "services": [...]}``.
        now: the current unix time (default ``time.time()``), for uptimes and check ages.
    """
    now = time.time() if now is None else now
    services: list[dict[str, Any]] = list(health.get("services") or [])
    healthy = sum(1 for service in services if _is_healthy(service))
    overall = f"hearthlink: {health.get('status', 'unknown')}"
    if not services:
        return f"{overall} (no services)\n"
    lines = [f"{overall} ({healthy}/{len(services)} services healthy)"]
    rows = [list(HEADERS)] + [_row(service, now) for service in services]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    for row in rows:
        # The last column is not padded: no trailing spaces.
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines) + "\n"


def format_duration(seconds: float) -> str:
    """A short human duration: "42s", "3m12s", "2h05m", "3d04h"."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _row(service: dict[str, Any], now: float) -> list[str]:
    status = str(service.get("status") or "unknown")
    started_at = service.get("started_at")
    last_check = service.get("last_health_check")
    has_process = service.get("pid") is not None and status in _LIVE_STATUSES
    uptime = (
        format_duration(now - float(started_at)) if has_process and started_at is not None else NONE
    )
    return [
        _cell(service.get("name")),
        _state(service, status, now),
        _cell(service.get("pid")),
        _cell(service.get("port")),
        uptime,
        _cell(service.get("restart_count", 0)),
        NONE if last_check is None else f"{format_duration(now - float(last_check))} ago",
        _error(service.get("error_message")),
    ]


def _state(service: dict[str, Any], status: str, now: float) -> str:
    """The finer ``state`` when the supervisor reports one, else ``status``; with the wait
    of a pending restart, an unhealthy mark, and a scheduled task's next run where they
    apply."""
    state = str(service.get("state") or status)
    backoff = service.get("restart_backoff")
    if state == "backoff" and backoff:
        state = f"backoff ({float(backoff):g}s)"
    if service.get("health") == "unhealthy" and state in _LIVE_STATUSES:
        state = f"{state} (unhealthy)"
    if service.get("selected") is False:  # left out of the run: `hearthlink start` starts it
        state = f"{state} (not selected)"
    next_run = service.get("next_run")
    if next_run is not None and status not in _LIVE_STATUSES:
        state = f"{state} (next in {format_duration(float(next_run) - now)})"
    if service.get("notify_status"):  # what the service says of itself (sd_notify STATUS=)
        state = f"{state}: {service['notify_status']}"
    return _one_line(state)


def _is_healthy(service: dict[str, Any]) -> bool:
    if "state" in service:  # hearthlink's finer state: running but failing probes is not healthy
        return bool(service["state"] == "healthy")
    if "health" in service:
        return bool(service["health"] == "healthy")
    return service.get("status") == "running"


def _cell(value: object) -> str:
    return NONE if value is None or value == "" else _one_line(str(value))


def _error(message: object) -> str:
    if not message:
        return NONE
    text = _SECRET.sub(lambda m: m.group(1) + "***", _one_line(str(message)))
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())
