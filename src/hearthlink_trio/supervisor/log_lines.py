"""The supervisor's log lines: every line it writes about itself, its wording and its JSON
fields, in one place.

Each function returns an :class:`Event`; :func:`emit` writes it to the event log, where the
human format prints ``message`` and ``--log-format json`` prints ``event``, ``message`` and
every field. The wording of the original design's lines is kept word for word (``Started
vault service on port 8001 with PID 12345``, ``Service vault restarted (attempt 1), next
backoff: 2s``…). Durations are written with ``:g`` (``2s``, ``0.2s``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INFO = logging.INFO
WARNING = logging.WARNING
ERROR = logging.ERROR


@dataclass(frozen=True)
class Event:
    """One supervisor event: a name for machines, a line for people, and its fields."""

    name: str
    message: str
    level: int = INFO
    fields: Mapping[str, Any] = field(default_factory=dict)


def emit(log: logging.Logger, event: Event) -> None:
    """Write ``event`` to the event log (stderr, human or JSON)."""
    log.log(event.level, "%s", event.message, extra={"event": event.name, "fields": event.fields})


def seconds(value: float) -> str:
    """A duration as the log lines write it: ``2s``, ``0.2s``, ``30s``."""
    return f"{value:g}s"


# -- preflight ---------------------------------------------------------------------------


def port_available(service: str, port: int) -> Event:
    return Event(
        "port_available",
        f"✓ Port {port} available for {service} service",
        fields={"service": service, "port": port},
    )


def reaped(pids: Sequence[int]) -> Event:
    listed = " ".join(str(pid) for pid in pids)
    return Event(
        "reaped",
        f"Reaped {len(pids)} leftover process(es) of a previous run (pids {listed})",
        WARNING,
        {"pids": list(pids)},
    )


def group_record_unusable(path: Path, why: str, aside: Path) -> Event:
    return Event(
        "groups_record_unusable",
        f"The process group record {path} is unusable ({why}); it was moved to {aside.name}, "
        "and leftovers of a previous run, if any, were not reaped",
        WARNING,
    )


def lock_file_corrupt(path: Path, content: str) -> Event:
    return Event(
        "lock_file_corrupt",
        f"The lock file {path} held {content[:20]!r}, not a supervisor's pid (corrupted); "
        "no supervisor holds it, so it was taken and rewritten",
        WARNING,
    )


# -- one service -------------------------------------------------------------------------


def started(service: str, port: int | None, pid: int, *, task: bool = False) -> Event:
    what = "task" if task else "service"
    where = "" if port is None else f" on port {port}"
    return Event(
        "started",
        f"Started {service} {what}{where} with PID {pid}",
        fields={"service": service, "pid": pid, "port": port},
    )


def restarted(service: str, attempt: int, next_backoff: float) -> Event:
    return Event(
        "restarted",
        f"Service {service} restarted (attempt {attempt}), next backoff: {seconds(next_backoff)}",
        fields={"service": service, "attempt": attempt, "backoff": next_backoff},
    )


def spawn_failed(service: str, reason: str) -> Event:
    return Event("spawn_failed", f"{service} service {reason}", ERROR, {"service": service})


def healthy(service: str, *, again: bool = False) -> Event:
    text = "is healthy again" if again else "is healthy"
    return Event("healthy", f"{service} service {text}", fields={"service": service})


def unhealthy(service: str, reason: str) -> Event:
    return Event(
        "unhealthy",
        f"{service} service unhealthy ({reason}), scheduling restart",
        WARNING,
        {"service": service, "reason": reason},
    )


def over_memory(service: str, reason: str, used: int, limit: int) -> Event:
    return Event(
        "over_memory",
        f"{service} service {reason}, scheduling restart",
        WARNING,
        {"service": service, "reason": reason, "memory_bytes": used, "max_memory": limit},
    )


def exited(service: str, detail: str, exit_code: int) -> Event:
    return Event(
        "exited",
        f"{service} service exited ({detail}), scheduling restart",
        WARNING,
        {"service": service, "exit_code": exit_code},
    )


def completed(service: str, *, task: bool) -> Event:
    what = "task" if task else "service"
    return Event(
        "completed", f"{service} {what} completed (exit status 0)", fields={"service": service}
    )


def not_restarting(service: str, policy: str, detail: str) -> Event:
    return Event(
        "gave_up",
        f"{service} service {detail}; restart = {policy!r}, not restarting",
        ERROR,
        {"service": service},
    )


def restarting(service: str, backoff: float) -> Event:
    return Event(
        "restarting",
        f"Restarting {service} service with exponential backoff",
        fields={"service": service, "backoff": backoff},
    )


def gave_up(service: str, failures: int) -> Event:
    return Event(
        "gave_up",
        f"Service {service} has failed {failures} times, not restarting",
        ERROR,
        {"service": service, "attempt": failures},
    )


def config_exit(service: str, status: int) -> Event:
    return Event(
        "gave_up",
        f"{service} service exited with status {status} (configuration error), not restarting",
        ERROR,
        {"service": service, "exit_code": status},
    )


def restart_requested(service: str, what: str) -> Event:
    return Event(
        "restart_requested",
        f"Restart of {service} service requested: {what}",
        fields={"service": service},
    )


def stop_requested(service: str, what: str) -> Event:
    return Event(
        "stop_requested",
        f"Stop of {service} service requested: {what}",
        fields={"service": service},
    )


def start_requested(service: str, what: str) -> Event:
    return Event(
        "start_requested",
        f"Start of {service} service requested: {what}",
        fields={"service": service},
    )


def manual_restart(service: str) -> Event:
    return Event(
        "manual_restart", f"Manual restart of {service} service", fields={"service": service}
    )


def stopped(service: str, exit_code: int, *, detail: str | None) -> Event:
    """A stop the supervisor asked for; ``detail`` only when it did not end as asked."""
    text = f"Stopped {service} service" + (f" ({detail})" if detail else "")
    fields: dict[str, Any] = {"service": service, "exit_code": exit_code}
    if exit_code < 0:
        fields["signal"] = -exit_code
    return Event("stopped", text, fields=fields)


def waiting_to_stop(service: str, pid: int, signal_name: str, waited: float, left: int) -> Event:
    return Event(
        "waiting_to_stop",
        f"waiting for {service} to stop (pid {pid}, {signal_name} sent {waited:.0f}s ago, "
        f"{left} process{'' if left == 1 else 'es'} left in its group)",
        fields={"service": service, "pid": pid, "waited": round(waited, 3), "left": left},
    )


def log_write_failed(path: Path, why: str) -> Event:
    return Event(
        "log_write_failed",
        f"Cannot write the log file {path} ({why}); its lines still go to the console, "
        "and the file is written again once it can be",
        WARNING,
    )


def log_write_resumed(path: Path) -> Event:
    return Event("log_write_resumed", f"Writing the log file {path} again")


# -- the whole supervisor ----------------------------------------------------------------


def steady_state(interval: float) -> Event:
    return Event(
        "steady_state",
        f"Health monitoring: Switching to steady-state mode ({seconds(interval)} intervals)",
    )


def containment(guarantee: str, sentinel_pid: int | None) -> Event:
    return Event(
        "containment",
        f"Process containment: {guarantee}",
        fields={"sentinel_pid": sentinel_pid},
    )


def shutdown(reason: str) -> Event:
    return Event("shutdown", f"{reason}, stopping all services")


def forced(signal_name: str) -> Event:
    return Event("forced", f"Received {signal_name} again, killing all services now", WARNING)


def control_error(path: Path, why: str) -> Event:
    return Event("control_error", f"Control socket {path}: {why}", ERROR)


def config_problem(line: str) -> Event:
    return Event("config_error", line, ERROR)


def port_unavailable(line: str) -> Event:
    return Event("port_unavailable", line, ERROR)


def reload_refused(why: str) -> Event:
    return Event("reload_refused", f"Config reload refused{why}", ERROR)


def reload_ignored() -> Event:
    return Event(
        "reload_refused",
        "Config reload ignored: the supervisor is still starting; send SIGHUP again",
        WARNING,
    )


def reloaded(summary: str) -> Event:
    return Event("reloaded", f"Config reloaded: {summary}")


def stream_reader_dropped(reason: str) -> Event:
    return Event(
        "event_reader_dropped",
        f"Event stream: dropped a reader that was too slow ({reason})",
        WARNING,
        {"reason": reason},
    )


# -- watching files and following dependencies ---------------------------------------------


def files_changed(service: str, files: Sequence[str], *, restarted: bool, why: str) -> Event:
    """``web: 3 files changed (app.py, models.py, …), restarting``, or ``…, not restarted:
    <why>`` when the restart was not accepted."""
    what = "restarting" if restarted else f"not restarted: {why}"
    return Event(
        "files_changed",
        f"{service}: {describe_changes(files)}, {what}",
        fields={"service": service, "files": sorted(files)[:20], "count": len(files)},
    )


def describe_changes(files: Sequence[str], shown: int = 2) -> str:
    """``3 files changed (app.py, models.py, …)``: the count and the first names."""
    names = sorted(files)
    listed = ", ".join(names[:shown]) + (", …" if len(names) > shown else "")
    noun = "file" if len(names) == 1 else "files"
    return f"{len(names)} {noun} changed ({listed})"


def watch_storm(service: str, restarts: int, window: float, files: Sequence[str]) -> Event:
    names = sorted(files)
    listed = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
    return Event(
        "watch_storm",
        f"{service}: restarted {restarts} times in {seconds(window)} by changes made while it "
        f"was starting (its own writes?): {listed}; not restarting on changes to these files "
        "until another watched file changes (add them to watch_ignore)",
        WARNING,
        {"service": service, "files": names[:20]},
    )


def watch_failed(why: str) -> Event:
    return Event(
        "watch_failed",
        f"Watching files stopped: {why}; services are no longer restarted on changes",
        ERROR,
    )


def dependency_restart(service: str, dependency: str) -> Event:
    return Event(
        "dependency_restart",
        f"{service}: {dependency} was restarted and is healthy again, restarting",
        fields={"service": service, "dependency": dependency},
    )


# -- rolling restarts (held sockets) -----------------------------------------------------


def rolling_started(service: str, old_pid: int, new_pid: int) -> Event:
    return Event(
        "rolling_started",
        f"Rolling restart of {service}: new PID {new_pid} started beside PID {old_pid}",
        fields={"service": service, "pid": new_pid, "old_pid": old_pid},
    )


def rolling_ready(service: str, old_pid: int, new_pid: int) -> Event:
    return Event(
        "rolling_ready",
        f"Rolling restart of {service}: PID {new_pid} is ready, stopping PID {old_pid}",
        fields={"service": service, "pid": new_pid, "old_pid": old_pid},
    )


def rolling_failed(service: str, reason: str, old_pid: int) -> Event:
    return Event(
        "rolling_failed",
        f"Rolling restart of {service} failed: {reason}, {service} keeps running (pid {old_pid})",
        WARNING,
        {"service": service, "reason": reason, "pid": old_pid},
    )


# -- sd_notify from the services (probe = "notify") --------------------------------------


def notify_status(service: str, status: str) -> Event:
    return Event(
        "notify_status",
        f"{service} service status: {status}",
        fields={"service": service, "notify_status": status},
    )


def notify_note(service: str, note: str) -> Event:
    return Event("notify_note", note, WARNING, {"service": service})


# -- schedules and hooks -------------------------------------------------------------------


def _clock(ts: float) -> str:
    """A scheduled time as the local clock shows it: ``2026-03-01 00:05:00``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def scheduled_run(service: str, due: float) -> Event:
    return Event(
        "scheduled_run",
        f"Scheduled run of {service} task (due {_clock(due)})",
        fields={"service": service, "due": due},
    )


def schedule_skipped(service: str, due: float) -> Event:
    return Event(
        "schedule_skipped",
        f"Skipped the {_clock(due)} run of {service} task: its previous run is still going",
        WARNING,
        {"service": service, "due": due},
    )


def hook_failed(service: str, hook: str, why: str) -> Event:
    return Event(
        "hook_failed",
        f"{hook} hook of {service} service {why}",
        WARNING,
        {"service": service, "hook": hook},
    )


# -- hearthlink run -- CMD ---------------------------------------------------------------


def command_started(argv: Sequence[str], pid: int) -> Event:
    shown = " ".join(argv)
    return Event(
        "command_started",
        f"Services ready; running {shown} (PID {pid})",
        fields={"argv": list(argv), "pid": pid},
    )


def command_exited(argv: Sequence[str], code: int, how: str) -> Event:
    return Event(
        "command_exited",
        f"Command {argv[0]} ended ({how})",
        fields={"argv": list(argv), "exit_code": code},
    )


def command_not_started(argv: Sequence[str], why: str) -> Event:
    return Event(
        "command_not_started", f"Not running {argv[0]}: {why}", ERROR, {"argv": list(argv)}
    )


def signal_left_to_command(signal_name: str, forwarded: bool) -> Event:
    how = "passed on to" if forwarded else "also received by"
    return Event(
        "signal_left_to_command",
        f"Received {signal_name}, {how} the command; the services stop once it has ended",
        fields={"signal": signal_name},
    )
