"""``hearthlink import process-compose``: a process-compose file's processes as a config.

process-compose runs each ``command`` through a shell; here a command with shell syntax
runs through ``sh -c`` and a plain one directly. Its readiness probe becomes the service's
probe, its availability the restart policy (the backoff and the restart count are one
``[restart]`` table for every service here), its shutdown the stop signal and timeout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hearthlink_trio.cli.importing.common import (
    Draft,
    check_names,
    env_pairs,
    profile_names,
    read_yaml_mapping,
    service_name,
    signal_name,
    split_command,
)

_CONDITIONS = {
    "process_started": "started",
    "process_healthy": "healthy",
    "process_log_ready": "healthy",
    "process_completed_successfully": "completed",
    "process_completed": "completed",
}
_RESTART = {"always": "always", "on_failure": "on-failure", "no": "never"}
#: probe field -> [health] key.
_PROBE_KEYS = {
    "period_seconds": "steady_interval",
    "timeout_seconds": "timeout",
    "failure_threshold": "failure_threshold",
}
_MAPPED = {
    "command",
    "entrypoint",
    "working_dir",
    "environment",
    "depends_on",
    "readiness_probe",
    "liveness_probe",
    "ready_log_line",
    "availability",
    "shutdown",
    "replicas",
    "disabled",
    "is_daemon",
    "description",
    "namespace",
}
_FILE_KEYS_IGNORED = {"version", "processes", "environment"}


def import_process_compose(path: Path, out_dir: Path) -> Draft:
    """The draft config of the process-compose file at ``path``.

    Raises:
        ConfigError: the file cannot be read or is not a YAML mapping.
    """
    del out_dir  # process-compose names no file that the config must find
    draft = Draft(source=path, tool="process-compose")
    data = read_yaml_mapping(path)
    processes = data.get("processes")
    if not isinstance(processes, dict) or not processes:
        draft.problem("processes: no processes to import")
        return draft
    for key, value in data.items():
        if key not in _FILE_KEYS_IGNORED and value not in (None, "", [], {}):
            draft.file_notes.append(f"{key}: no equivalent")
    common, bad = env_pairs(data.get("environment"))
    for key in bad:
        draft.file_notes.append(f"environment.{key}: not NAME=value")
    names = {str(src): service_name(str(src)) for src in processes}
    if not check_names(draft, names):
        return draft
    tasks = {
        names[str(dep)]
        for proc in processes.values()
        if isinstance(proc, dict) and isinstance(proc.get("depends_on"), dict)
        for dep, spec in proc["depends_on"].items()
        if str(dep) in names
        and isinstance(spec, dict)
        and str(spec.get("condition", "")).startswith("process_completed")
    }
    tables: dict[str, dict[str, Any]] = {}
    for src, proc in processes.items():
        name = names[str(src)]
        if not isinstance(proc, dict):
            draft.note(name, "", "not a mapping")
            continue
        table = _process(draft, name, proc, common, is_task=name in tasks)
        if table is not None:
            tables[name] = table
    for src, proc in processes.items():
        name = names[str(src)]
        if name in tables and isinstance(proc, dict) and "depends_on" in proc:
            _depends(draft, name, proc["depends_on"], names, tables)
    draft.services.update(tables)
    return draft


def _process(
    draft: Draft,
    name: str,
    proc: dict[str, Any],
    common: dict[str, str | None],
    *,
    is_task: bool,
) -> dict[str, Any] | None:
    if proc.get("is_daemon") is True:
        draft.note(
            name,
            "",
            "is_daemon: a daemon forks into the background and its first process exits, "
            "so there is nothing left to supervise; run it in the foreground (most have a "
            "flag for it, e.g. --foreground or --no-daemon) and import again",
        )
        return None
    argv: list[str] = []
    entrypoint = proc.get("entrypoint")
    if isinstance(entrypoint, list) and entrypoint and all(isinstance(w, str) for w in entrypoint):
        argv = list(entrypoint)
    elif isinstance(proc.get("command"), str):
        argv, _ = split_command(proc["command"])
    if not argv:
        draft.note(name, "", "no command to run")
        return None
    table: dict[str, Any] = {}
    if is_task:
        table["kind"] = "task"
    table["command"] = argv
    folder = proc.get("working_dir")
    if isinstance(folder, str) and folder:
        table["cwd"] = folder
    values, bad = env_pairs(proc.get("environment"))
    for key in bad:
        draft.note(name, f"environment.{key}", "not NAME=value")
    env: dict[str, str] = {}
    for key, value in {**common, **values}.items():
        if value is None:
            draft.note(name, f"environment.{key}", "no value: set it in the environment")
        else:
            env[key] = value
    if env:
        table["env"] = env
    _probe(draft, name, proc, table, is_task=is_task)
    _availability(draft, name, proc.get("availability"), table)
    _shutdown(draft, name, proc.get("shutdown"), table)
    replicas = proc.get("replicas")
    if isinstance(replicas, int) and not isinstance(replicas, bool) and 1 <= replicas <= 1000:
        if replicas > 1:
            table["replicas"] = replicas
    elif replicas is not None:
        draft.note(name, "replicas", f"{replicas!r} is not a count from 1 to 1000")
    namespace = proc.get("namespace")
    # Every process without a namespace is in "default": no profile, always started.
    if namespace is not None and namespace != "default":
        profiles = profile_names(draft, name, "namespace", namespace)
        if profiles:
            table["profiles"] = profiles
    if proc.get("disabled") is True:
        table["enabled"] = False
        draft.note(
            name,
            "disabled",
            "written as enabled = false, which leaves the service out; remove that line to run it",
        )
    for key in proc:
        if key not in _MAPPED:
            draft.note(name, key, "no equivalent")
    return table


def _probe(
    draft: Draft, name: str, proc: dict[str, Any], table: dict[str, Any], *, is_task: bool
) -> None:
    readiness, liveness = proc.get("readiness_probe"), proc.get("liveness_probe")
    log_line = proc.get("ready_log_line")
    if is_task:
        for key in ("readiness_probe", "liveness_probe", "ready_log_line"):
            if key in proc:
                draft.note(name, key, "a task is not probed: it is done when it exits 0")
        return
    probe = readiness if isinstance(readiness, dict) else liveness
    key = "readiness_probe" if isinstance(readiness, dict) else "liveness_probe"
    if isinstance(readiness, dict) and isinstance(liveness, dict):
        draft.note(name, "liveness_probe", "one probe checks both; the readiness_probe is used")
    if isinstance(log_line, str) and log_line:
        if isinstance(probe, dict):
            draft.note(name, key, "one probe per service; the ready_log_line is used")
        table["probe"] = {"log": log_line}
        return
    if not isinstance(probe, dict):
        table["probe"] = "none"
        return
    http, run = probe.get("http_get"), probe.get("exec")
    if isinstance(http, dict):
        port = http.get("port")
        host = str(http.get("host", "127.0.0.1"))
        if not isinstance(port, int) or not 1 <= port <= 65535:
            draft.note(name, f"{key}.http_get.port", "not a port number")
            table["probe"] = "none"
            return
        if str(http.get("scheme", "http")) != "http" or host not in ("127.0.0.1", "localhost"):
            draft.note(name, f"{key}.http_get", "only plain http on this machine is probed")
        table["port"] = port
        table["probe"] = {"http": str(http.get("path") or "/"), "json": False}
    elif isinstance(run, dict) and isinstance(run.get("command"), str):
        argv, _ = split_command(run["command"])
        table["probe"] = {"exec": argv} if argv else "none"
    else:
        draft.note(name, key, "neither http_get nor exec")
        table["probe"] = "none"
        return
    for field, value in probe.items():
        if field in _PROBE_KEYS:
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
                number = int(value) if field == "failure_threshold" else float(value)
                draft.set_shared("health", _PROBE_KEYS[field], number, name, f"{key}.{field}")
            else:
                draft.note(name, f"{key}.{field}", f"{value!r} is not 1 or more")
        elif field not in ("http_get", "exec"):
            draft.note(name, f"{key}.{field}", "no equivalent")


def _availability(draft: Draft, name: str, value: Any, table: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if key == "restart":
            item = "no" if item is False else item  # YAML 1.1 reads an unquoted no as false
            if item in _RESTART:
                table["restart"] = _RESTART[item]
            elif item == "exit_on_failure":
                # process-compose then stops everything: hearthlink's critical service.
                table["restart"] = "never"
                table["critical"] = True
            else:
                draft.note(name, "availability.restart", f"{item!r} has no equivalent")
        elif key == "backoff_seconds" and isinstance(item, int | float) and item >= 0:
            draft.set_shared("restart", "initial_backoff", float(item), name, "availability." + key)
        elif key == "max_restarts" and isinstance(item, int) and item >= 0:
            draft.set_shared("restart", "max_attempts", item, name, "availability." + key)
        else:
            draft.note(name, f"availability.{key}", "no equivalent")


def _shutdown(draft: Draft, name: str, value: Any, table: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if key == "signal" and signal_name(item) is not None:
            table["stop_signal"] = signal_name(item)
        elif key == "timeout_seconds" and isinstance(item, int | float) and item >= 0:
            table["stop_timeout"] = float(item)
        elif key == "command" and isinstance(item, str) and split_command(item)[0]:
            # Run before the stop signal, as process-compose runs it instead of one.
            table["pre_stop"] = split_command(item)[0]
        else:
            draft.note(name, f"shutdown.{key}", "no equivalent")


def _depends(
    draft: Draft,
    name: str,
    depends: Any,
    names: dict[str, str],
    tables: dict[str, dict[str, Any]],
) -> None:
    if not isinstance(depends, dict):
        draft.note(name, "depends_on", "not a mapping")
        return
    out: dict[str, str] = {}
    for src, spec in depends.items():
        dep = names.get(str(src))
        if dep is None or dep not in tables:
            why = "not a process of this file" if dep is None else "that process is not imported"
            draft.note(name, f"depends_on.{src}", why)
            continue
        raw = spec.get("condition", "process_started") if isinstance(spec, dict) else None
        condition = _CONDITIONS.get(str(raw))
        if condition is None:
            draft.note(name, f"depends_on.{src}", f"unknown condition {raw!r}")
            continue
        if raw == "process_completed":
            draft.note(
                name,
                f"depends_on.{src}.condition",
                "process_completed (any exit code) is imported as completed, which needs exit 0",
            )
        out[dep] = condition
    if out:
        tables[name]["depends_on"] = out
