"""The config as a compose file (``hearthlink export compose``)."""

from __future__ import annotations

from typing import Any

from hearthlink_trio.cli.export.mapping import (
    DATA_PATH,
    DATA_VOLUME,
    PROBE_HOST,
    Plan,
    Unit,
    comment,
    dump,
    header,
    memory_size,
    secret_lines,
    wrapped,
)
from hearthlink_trio.config.resolved import Health

#: How often compose probes a container before its first pass (hearthlink probes a
#: starting service about every 100 ms, so readiness is seen at once).
FAST_STARTUP_PROBE = 0.1

_RESTART = {"always": "unless-stopped", "never": "no"}


def duration(seconds: float) -> str:
    """A compose duration: ``60s``, ``100ms`` (never below 1 ms)."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{max(1, round(seconds * 1000))}ms"


def _escape(text: str) -> str:
    # compose interpolates ${VAR} everywhere; a literal dollar is written $$.
    return text.replace("$", "$$")


def _check(unit: Unit, health: Health) -> list[str] | None:
    """The healthcheck's ``test``, or None when the probe has no compose equivalent."""
    probe = unit.probe
    if probe.kind == "http":
        healthy = " and json.loads(r.read()).get('status') == 'healthy'" if probe.json else ""
        code = (
            "import http.client, json, sys; "
            f"c = http.client.HTTPConnection({PROBE_HOST!r}, {unit.port}, "
            f"timeout={health.timeout:g}); "
            f"c.request('GET', {probe.path!r}); r = c.getresponse(); "
            f"sys.exit(0 if r.status == {probe.status}{healthy} else 1)"
        )
        return ["CMD", "python", "-c", code]
    if probe.kind == "tcp":
        code = (
            "import socket; socket.create_connection("
            f"({PROBE_HOST!r}, {unit.port}), timeout={health.timeout:g}).close()"
        )
        return ["CMD", "python", "-c", code]
    if probe.kind == "exec":
        return ["CMD", *probe.argv]
    return None


def healthcheck(unit: Unit, health: Health) -> dict[str, Any] | None:
    """The compose ``healthcheck`` of ``unit``'s probe (None: none, or not mappable)."""
    test = _check(unit, health)
    if test is None:
        return None
    return {
        "test": [_escape(part) for part in test],
        "interval": duration(health.steady_interval),
        "timeout": duration(health.timeout),
        "retries": health.failure_threshold,
        "start_period": duration(health.startup_period),
        "start_interval": duration(min(FAST_STARTUP_PROBE, health.startup_interval)),
    }


def _condition(dependency: Unit, condition: str, health: Health) -> tuple[str, str]:
    """compose's condition for waiting on ``dependency``, and a note when it is weaker."""
    if dependency.is_task:
        # For a task, healthy means completed, as in hearthlink run.
        if condition == "started":
            return "service_started", ""
        return "service_completed_successfully", ""
    if condition == "healthy" and healthcheck(dependency, health) is None:
        if dependency.probe.kind == "log":
            return "service_started", (
                f"waits for {dependency.name} to start only: a log probe has no compose healthcheck"
            )
        return "service_started", ""
    if condition == "healthy":
        return "service_healthy", ""
    return "service_started", ""


def _service(plan: Plan, unit: Unit, notes: list[str]) -> dict[str, Any]:
    health = plan.config.health
    out: dict[str, Any] = {"image": unit.image}
    if unit.profiles:
        out["profiles"] = list(unit.profiles)
    out["command"] = [_escape(part) for part in unit.image_args]
    env: dict[str, str] = {key: _escape(value) for key, value in unit.env.items()}
    for var in unit.secret_vars:
        env[var] = f"${{{var}:?set {var} in the shell or in .env}}"
    out["environment"] = env
    if unit.port is not None and not unit.is_task and unit.replicas == 1:
        # Published on the host's loopback only, as the service was on one machine.
        out["ports"] = [f"127.0.0.1:{unit.port}:{unit.port}"]
    out["volumes"] = [f"{DATA_VOLUME}:{DATA_PATH}"]
    check = healthcheck(unit, health)
    if check is not None:
        out["healthcheck"] = check
    elif unit.probe.kind == "log":
        notes.append(
            f"{unit.name}: no healthcheck (its log probe matches output, which compose "
            "cannot check)"
        )
    if unit.conditions:
        depends: dict[str, Any] = {}
        for dep, condition in unit.conditions.items():
            compose_condition, note = _condition(plan.unit(dep), condition, health)
            depends[dep] = {"condition": compose_condition}
            if dep in unit.restart_with:
                depends[dep]["restart"] = True
            if note:
                notes.append(f"{unit.name}: {note}")
        out["depends_on"] = depends
    if unit.is_task:
        # A dependent fails at once when the task's first run fails, so retries would not
        # help it: a task runs once.
        out["restart"] = "no"
    else:
        out["restart"] = _RESTART.get(
            unit.restart, f"on-failure:{plan.config.restart.max_attempts}"
        )
    out["stop_signal"] = unit.stop_signal
    out["stop_grace_period"] = duration(unit.stop_timeout)
    if unit.post_start:
        out["post_start"] = [{"command": [_escape(part) for part in unit.post_start]}]
    if unit.pre_stop:
        out["pre_stop"] = [{"command": [_escape(part) for part in unit.pre_stop]}]
    if unit.on_failure:
        notes.append(f"{unit.name}: on_failure (compose has no hook for a service that gives up)")
    if unit.max_memory is not None:
        # A hard limit: the kernel stops the container at it, where hearthlink restarts
        # the service once it stays above.
        out["mem_limit"] = memory_size(unit.max_memory, ("k", "m", "g"))
    if unit.replicas > 1:
        out["deploy"] = {"replicas": unit.replicas}
    return out


def render_compose(plan: Plan) -> str:
    """The compose file of ``plan``: a header comment, then one YAML document."""
    notes: list[str] = []
    services = {unit.name: _service(plan, unit, notes) for unit in plan.units}
    document = {"services": services, "volumes": {DATA_VOLUME: {}}}
    lines = [
        *header(plan, "compose"),
        "",
        "Run it with `docker compose up` beside this file. The secrets are never written",
        "here: set each in the shell or in a .env file beside this file first, with the",
        "value this machine uses (the data needs the key it was written with) or a new",
        'one, e.g. "$(openssl rand -base64 32)":',
        *secret_lines(plan),
        f"The data dir is the volume {DATA_VOLUME}, mounted at {DATA_PATH} in every container.",
    ]
    if notes:
        lines += [
            "",
            "Not carried over:",
            *(line for note in notes for line in wrapped(note, indent="  ")),
        ]
    return comment(lines) + dump(document)
