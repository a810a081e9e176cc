"""From the ``[services.*]`` tables to resolved services: checks across keys, replicas,
placeholders, probes, dependency conditions and env files."""

from __future__ import annotations

import ipaddress
import os
import pwd
import signal
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from hearthlink_trio.config.envfile import EnvFileError, read_env_file
from hearthlink_trio.config.graph import dependency_order
from hearthlink_trio.config.model import (
    MAX_NAME_CHARS,
    SERVICE_NAME_RE,
    ProbeTable,
    ServiceSection,
    parse_memory,
    toml_key,
)
from hearthlink_trio.config.resolved import (
    TOKEN_FILE,
    Probe,
    ProbeKind,
    Service,
    glob_folder,
    service_url,
)
from hearthlink_trio.config.schedule import parse_schedule


def fill(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``{placeholder}`` of ``values`` replaced, as plain text."""
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def resolve_path(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Where:
    """What resolving a service needs to know about the file and the machine."""

    label: str  # the config file's name, first on every problem line
    base: Path  # the config file's folder
    python: str
    data_dir: Path
    stop_timeout: float
    file_env: Mapping[str, str]  # from [supervisor] env_file
    #: Check this machine too (files, users); ``hearthlink export`` does not.
    local: bool
    #: Who hearthlink runs as: only root may run a service as another user.
    euid: int = field(default_factory=os.geteuid)
    #: [supervisor] hook_timeout: a service's own hook_timeout wins.
    hook_timeout: float = 10.0


def _probe_kind(svc: ServiceSection) -> ProbeKind:
    if svc.probe is None:
        return "none" if svc.kind == "task" else "http"
    kind = svc.probe.kind if isinstance(svc.probe, ProbeTable) else svc.probe
    return cast(ProbeKind, kind)


def _port_need(svc: ServiceSection) -> str | None:
    """Why this service needs a port, or None."""
    kind = _probe_kind(svc)
    if kind in ("http", "tcp"):
        return f"the {kind} probe connects to it"
    if svc.script is not None:
        return "a script is started with --port"
    texts = [*(svc.command or []), *svc.env.values(), *svc.post_start, *svc.pre_stop]
    texts += svc.on_failure
    if isinstance(svc.probe, ProbeTable) and svc.probe.exec:
        texts += svc.probe.exec
    if any("{port}" in text for text in texts):
        return "{port} is used"
    return None


def replica_names(name: str, svc: ServiceSection) -> list[str]:
    if svc.replicas == 1:
        return [name]
    return [f"{name}-{n}" for n in range(1, svc.replicas + 1)]


def _check_table(name: str, svc: ServiceSection, where: Where) -> list[str]:
    """The problems of one table on its own."""
    at = f"{where.label}: services.{toml_key(name)}"
    problems = []
    if not SERVICE_NAME_RE.fullmatch(name):
        problems.append(
            f"{at}: invalid service name (use at most {MAX_NAME_CHARS} lowercase letters, "
            "digits, '_' and '-', starting with a letter)"
        )
    need = _port_need(svc)
    if svc.port is None and need:
        # The default (an http probe) is what the plain line means; other needs are named.
        why = "" if svc.probe is None and svc.kind == "service" else f" ({need})"
        problems.append(f"{at}.port: field required{why}")
    problems += _check_socket(at, svc)
    if svc.port is not None and not svc.socket and svc.port + svc.replicas - 1 > 65535:
        problems.append(
            f"{at}.replicas: ports {svc.port}..{svc.port + svc.replicas - 1} pass 65535"
        )
    if not svc.allow_external and not is_loopback(svc.host):
        problems.append(
            f"{at}.host: {svc.host!r} is not a loopback address "
            "(set allow_external = true to bind it)"
        )
    if svc.kind == "task" and svc.probe not in (None, "none"):
        problems.append(f"{at}.probe: a task is not probed (it is done when it exits 0)")
    problems += _check_schedule_and_hooks(at, svc)
    for var, filename in svc.secrets.items():
        if filename == TOKEN_FILE:
            problems.append(
                f"{at}.secrets.{var}: {TOKEN_FILE} holds the API token; use another file name"
            )
    if where.local:
        problems += _check_machine(name, svc, where)
    return problems


def _check_socket(at: str, svc: ServiceSection) -> list[str]:
    """The problems of the held socket, the restart strategy and the notify watchdog."""
    problems = []
    if svc.socket and svc.port is None:
        problems.append(f"{at}.socket: needs a port (the supervisor binds host:port)")
    if svc.socket and svc.kind == "task":
        problems.append(f"{at}.socket: a task does not serve on a port")
    if svc.strategy is not None and not svc.socket:
        problems.append(f"{at}.strategy: goes with socket = true only")
    if svc.watchdog and svc.probe != "notify":
        problems.append(f'{at}.watchdog: goes with probe = "notify" only')
    return problems


def _check_schedule_and_hooks(at: str, svc: ServiceSection) -> list[str]:
    problems = []
    if svc.schedule:
        if svc.kind != "task":
            problems.append(
                f'{at}.schedule: only a task can have a schedule (set kind = "task"; a service '
                "keeps running)"
            )
        elif svc.replicas > 1:
            problems.append(
                f"{at}.schedule: a scheduled task runs as one process (remove replicas)"
            )
        try:
            parse_schedule(svc.schedule)
        except ValueError as exc:
            problems.append(f"{at}.schedule: {exc}")
    for hook in ("post_start", "pre_stop", "on_failure"):
        argv = getattr(svc, hook)
        if argv and not argv[0]:
            problems.append(f"{at}.{hook}: the program (first item) must not be empty")
    return problems


def _check_machine(name: str, svc: ServiceSection, where: Where) -> list[str]:
    at = f"{where.label}: services.{toml_key(name)}"
    problems = []
    if svc.script is not None:
        script = resolve_path(where.base, svc.script)
        why = _not_a(script, stat.S_ISREG, "file not found")
        if why:
            problems.append(f"{at}.script: {why}: {script}")
    cwd = resolve_path(where.base, svc.cwd) if svc.cwd else where.base
    why = _not_a(cwd, stat.S_ISDIR, "not a directory")
    if why:
        problems.append(f"{at}.cwd: {why}: {cwd}")
    for glob in svc.watch:
        folder = resolve_path(cwd, glob_folder(glob))
        why = None if glob.startswith("!") else _not_a(folder, stat.S_ISDIR, "no such folder")
        if why:
            problems.append(f"{at}.watch: {glob!r}: {why}: {folder}")
    if svc.user:
        try:
            pwd.getpwnam(svc.user)
        except KeyError:
            problems.append(f"{at}.user: unknown user {svc.user!r}")
        else:
            if where.euid != 0:
                problems.append(
                    f"{at}.user: running it as {svc.user} needs hearthlink to run as root"
                )
    return problems


def _not_a(path: Path, is_kind: Callable[[int], bool], missing: str) -> str | None:
    """None if ``path`` is of the kind ``is_kind`` tests its mode for, else ``missing`` (or
    why it cannot be looked at: a folder that cannot be entered, a name too long)."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return missing
    except OSError as exc:
        return f"cannot be looked at ({exc.strerror or exc})"
    return None if is_kind(mode) else missing


def _check_dependencies(
    sections: Mapping[str, ServiceSection], label: str
) -> tuple[list[str], list[str]]:
    """Problems of ``depends_on`` across tables, and the tables in dependency order."""
    problems = []
    for name, svc in sections.items():
        for dep, condition in svc.conditions.items():
            at = f"{label}: services.{toml_key(name)}.depends_on"
            if dep not in sections:
                problems.append(f"{at}: unknown service {dep!r}")
            elif dep == name:
                problems.append(f"{at}: a service cannot depend on itself")
            elif condition == "completed" and sections[dep].kind != "task":
                problems.append(
                    f"{at}.{dep}: 'completed' needs a task ({dep} is a service that keeps running)"
                )
    order, cycles = dependency_order({n: list(svc.conditions) for n, svc in sections.items()})
    for cycle in cycles:
        first, _, rest = cycle.partition(" -> ")
        if rest != first:  # a service naming itself is reported above
            problems.append(
                f"{label}: services.{toml_key(first)}.depends_on: dependency cycle: {cycle}"
            )
    return problems, order


def _ports_and_names(sections: Mapping[str, ServiceSection], label: str) -> list[str]:
    problems = []
    owner: dict[int, str] = {}
    names: dict[str, str] = {}
    for name, svc in sections.items():
        for n, replica in enumerate(replica_names(name, svc)):
            if replica != name and replica in sections:
                problems.append(
                    f"{label}: services.{toml_key(name)}.replicas: replica {replica} has the "
                    "name of another service"
                )
            names[replica] = name
            if svc.port is None or (svc.socket and n):
                continue  # replicas with a held socket share its one port
            port = svc.port if svc.socket else svc.port + n
            if port in owner:
                problems.append(
                    f"{label}: services.{toml_key(name)}.port: port {port} is already used by "
                    f"service {owner[port]}"
                )
            else:
                owner[port] = replica
    return problems


def _env_files(name: str, svc: ServiceSection, where: Where) -> tuple[dict[str, str], list[str]]:
    env = dict(where.file_env)
    if not svc.env_file:
        return env, []
    try:
        env.update(read_env_file(resolve_path(where.base, svc.env_file)))
    except EnvFileError as exc:
        return env, [f"{where.label}: services.{toml_key(name)}.env_file: {exc}"]
    return env, []


def resolve_services(
    sections: Mapping[str, ServiceSection], where: Where
) -> tuple[list[Service], list[str]]:
    """Every service (replicas expanded, dependencies first), and every problem found."""
    problems: list[str] = []
    file_envs: dict[str, dict[str, str]] = {}
    for name, svc in sections.items():
        problems += _check_table(name, svc, where)
        file_envs[name], env_problems = _env_files(name, svc, where)
        problems += env_problems
    problems += _ports_and_names(sections, where.label)
    dep_problems, order = _check_dependencies(sections, where.label)
    problems += dep_problems
    if problems:
        return [], problems
    services = []
    for name in order:
        svc = sections[name]
        for n, replica in enumerate(replica_names(name, svc)):
            services.append(_service(name, svc, replica, n, sections, file_envs[name], where))
    return services, []


def _service(
    name: str,
    svc: ServiceSection,
    replica: str,
    index: int,
    sections: Mapping[str, ServiceSection],
    file_env: Mapping[str, str],
    where: Where,
) -> Service:
    port = None if svc.port is None else svc.port + (0 if svc.socket else index)
    values = {
        "python": where.python,
        "host": svc.host,
        "port": "" if port is None else str(port),
        "name": replica,
        "data_dir": str(where.data_dir),
        "replica": str(index + 1),
    }
    if svc.script is not None:
        script = str(resolve_path(where.base, svc.script))
        argv: tuple[str, ...] = (where.python, script, "--host", svc.host, "--port", values["port"])
    else:
        argv = tuple(fill(part, values) for part in svc.command or [])
    probe = _probe(svc, values)
    conditions = {
        dep_replica: condition
        for dep, condition in svc.conditions.items()
        for dep_replica in replica_names(dep, sections[dep])
    }
    return Service(
        name=replica,
        argv=argv,
        port=port,
        host=svc.host,
        health_url=(
            service_url(svc.host, port) + probe.path
            if probe.kind == "http" and port is not None
            else None
        ),
        env={key: fill(value, values) for key, value in svc.env.items()},
        cwd=resolve_path(where.base, svc.cwd) if svc.cwd else where.base,
        conditions=conditions,
        stop_timeout=where.stop_timeout if svc.stop_timeout is None else svc.stop_timeout,
        stop_signal=signal.Signals[svc.stop_signal],
        critical=svc.critical,
        secrets=dict(svc.secrets),
        probe=probe,
        kind=svc.kind,
        restart=svc.restart or ("on-failure" if svc.kind == "task" else "always"),
        file_env=dict(file_env),
        user=svc.user,
        kill_mode=svc.kill_mode,
        group=name,
        replica=index + 1 if svc.replicas > 1 else None,
        image=svc.image,
        watch=tuple(svc.watch),
        watch_ignore=tuple(svc.watch_ignore),
        restart_with=tuple(
            dep_replica
            for dep in svc.restarts_with
            for dep_replica in replica_names(dep, sections[dep])
        ),
        socket=svc.socket,
        strategy=svc.strategy or "rolling",
        watchdog=svc.watchdog,
        profiles=tuple(svc.profiles),
        schedule=svc.schedule,
        post_start=tuple(fill(part, values) for part in svc.post_start),
        pre_stop=tuple(fill(part, values) for part in svc.pre_stop),
        on_failure=tuple(fill(part, values) for part in svc.on_failure),
        hook_timeout=where.hook_timeout if svc.hook_timeout is None else svc.hook_timeout,
        max_memory=parse_memory(svc.max_memory),
    )


def _probe(svc: ServiceSection, values: Mapping[str, str]) -> Probe:
    kind = _probe_kind(svc)
    table = svc.probe if isinstance(svc.probe, ProbeTable) else None
    if kind == "http":
        path = table.http if table is not None and table.http else svc.health_path
        status = table.status if table is not None and table.status is not None else 200
        json_body = table.json_body if table is not None and table.json_body is not None else True
        return Probe("http", path=fill(path, values), status=status, json=json_body)
    if kind == "exec" and table is not None and table.exec:
        return Probe("exec", argv=tuple(fill(part, values) for part in table.exec))
    if kind == "log" and table is not None and table.log:
        return Probe("log", pattern=table.log)
    return Probe(kind)
