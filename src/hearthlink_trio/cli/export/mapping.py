"""What every export shares: a config seen from inside containers, the refusals, YAML out.

A config is loaded as ``hearthlink run`` loads it, without the checks that only this
machine can answer (scripts, folders, users: those live in the images). Each table then
becomes one :class:`Unit`, a compose service or a Deployment (a Job for a task), filled
with the values a container sees: ``{python}`` is ``python``, ``{data_dir}`` is
:data:`DATA_PATH`, ``{host}`` is ``0.0.0.0`` in the command (a container is reached from
outside it) and ``127.0.0.1`` in a probe (a check runs inside the container), and ``{port}``
is the table's own port for every replica (each replica has its own address).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hearthlink_trio import __version__
from hearthlink_trio.config import Config, load_config
from hearthlink_trio.config.envfile import read_env_file
from hearthlink_trio.config.load import default_config_path, read_model
from hearthlink_trio.config.model import ProbeTable, ServiceSection
from hearthlink_trio.config.resolved import TOKEN_FILE, Probe
from hearthlink_trio.config.schedule import parse_schedule
from hearthlink_trio.config.services import fill, resolve_path
from hearthlink_trio.errors import ConfigError
from hearthlink_trio.supervisor.environment import url_variable
from hearthlink_trio.supervisor.secrets import TOKEN_VARIABLE

#: Where the data dir is mounted in every container.
DATA_PATH = "/data"
#: The image that ``hearthlink export dockerfile`` describes.
BUNDLED_IMAGE = f"hearthlink-trio:{__version__}"
#: The module prefix of the services that image runs.
BUNDLED_MODULE_PREFIX = "hearthlink_trio.services."
#: The address a service binds inside its container, and the one its checks connect to.
CONTAINER_BIND = "0.0.0.0"
PROBE_HOST = "127.0.0.1"
#: The interpreter inside the images.
CONTAINER_PYTHON = "python"
#: The Kubernetes Secret that holds the API token and every declared secret.
SECRET_NAME = "hearthlink-secrets"
#: The named volume / PersistentVolumeClaim holding the data dir.
DATA_VOLUME = "hearthlink-data"


@dataclass(frozen=True)
class Unit:
    """One ``[services.NAME]`` table, as it runs in a container."""

    name: str
    kind: str  # "service" or "task"
    image: str
    #: The process's argv, placeholders filled with the container's values.
    argv: tuple[str, ...]
    port: int | None
    replicas: int
    #: Plain environment values, lowest precedence first (no secret among them).
    env: Mapping[str, str]
    #: Variables whose values the engine supplies (the API token, then declared secrets).
    secret_vars: tuple[str, ...]
    probe: Probe
    #: Dependency table -> "started", "healthy" or "completed".
    conditions: Mapping[str, str]
    stop_timeout: float
    stop_signal: str
    #: "always", "on-failure" or "never".
    restart: str
    #: Things of the config that this engine cannot express, one sentence each.
    notes: list[str] = field(default_factory=list)
    #: A task's schedule ("" = none), as the config writes it.
    schedule: str = ""
    #: Hooks, placeholders filled with the container's values (as seen inside it).
    post_start: tuple[str, ...] = ()
    pre_stop: tuple[str, ...] = ()
    on_failure: tuple[str, ...] = ()
    #: The memory limit in bytes (None: none).
    max_memory: int | None = None
    #: Started only when one of these profiles is selected.
    profiles: tuple[str, ...] = ()
    #: How a restart replaces the process: "rolling" or "recreate" (old stopped first).
    strategy: str = "rolling"
    #: The dependencies whose restarts restart this unit (``restart = true``).
    restart_with: tuple[str, ...] = ()

    @property
    def bundled(self) -> bool:
        """Runs in the image of ``hearthlink export dockerfile``."""
        return self.image == BUNDLED_IMAGE

    @property
    def is_task(self) -> bool:
        return self.kind == "task"

    @property
    def is_scheduled(self) -> bool:
        return bool(self.schedule)

    @property
    def image_args(self) -> tuple[str, ...]:
        """The argv as the image's CMD (compose ``command``, Kubernetes ``args``).

        Images keep their own ENTRYPOINT (postgres' initialises its data, then runs the
        command); the bundled image's entrypoint is ``python -m``, so its services are
        given from the module on.
        """
        if self.bundled and self.argv[:2] == (CONTAINER_PYTHON, "-m"):
            return self.argv[2:]
        return self.argv


@dataclass(frozen=True)
class Plan:
    """A config ready to export: its units, in dependency order."""

    config: Config
    label: str
    units: tuple[Unit, ...]

    def unit(self, name: str) -> Unit:
        return next(unit for unit in self.units if unit.name == name)

    def secret_vars(self) -> tuple[str, ...]:
        """Every variable the engine must supply, each once, in order of first use."""
        return tuple(dict.fromkeys(var for unit in self.units for var in unit.secret_vars))


def _is_bundled_command(svc: ServiceSection) -> bool:
    argv = svc.command or []
    return (
        argv[:2] == ["{python}", "-m"]
        and len(argv) > 2
        and (argv[2].startswith(BUNDLED_MODULE_PREFIX))
    )


def plan_export(
    paths: Path | Sequence[Path], engine: str, environ: Mapping[str, str] | None = None
) -> Plan:
    """Load the config at ``paths`` (one file, or several merged) and map it for ``engine``
    ("compose" or "kubernetes").

    Raises:
        ConfigError: the config is invalid, or cannot be exported to ``engine``; one
            ``<file>: <key>: <problem>`` line per problem.
    """
    config = load_config(paths, environ, local=False)
    # The config is valid: read its tables again for the placeholders as written.
    parsed, merged, _ = read_model(paths)
    label = merged.base_label
    base = config.path.resolve().parent
    file_env = (
        read_env_file(resolve_path(base, parsed.supervisor.env_file))
        if parsed.supervisor.env_file
        else {}
    )
    secret_vars = {TOKEN_VARIABLE, *config.secret_variables()}
    urls = {
        url_variable(name): f"http://{name}:{svc.port}"
        for name, svc in parsed.services.items()
        if svc.port is not None
    }
    problems: list[str] = []
    units = []
    order = dict.fromkeys(svc.group for svc in config.services)
    for name in order:
        section = parsed.services[name]
        problems += _refusals(label, name, section, engine, secret_vars)
        own_env = dict(file_env)
        if section.env_file:
            own_env.update(read_env_file(resolve_path(base, section.env_file)))
        units.append(_unit(config, name, section, own_env, secret_vars, urls))
    if problems:
        raise ConfigError(problems)
    return Plan(config=config, label=label, units=tuple(units))


def _refusals(
    label: str, name: str, svc: ServiceSection, engine: str, secret_vars: set[str]
) -> list[str]:
    at = f"{label}: services.{name}"
    problems = []
    if not svc.image and not _is_bundled_command(svc):
        problems.append(f"{at}.image: required to export to {engine}")
    if svc.schedule and engine == "compose":
        problems.append(
            f"{at}.schedule: compose has no schedule; run `docker compose run --rm {name}` "
            "from the host's cron, or export to kubernetes (a CronJob)"
        )
    elif svc.schedule and cron_expression(svc.schedule) is None:
        problems.append(
            f"{at}.schedule: {svc.schedule!r} is not a cron schedule (a CronJob's): every N "
            "must be whole minutes dividing an hour, or whole hours dividing a day; write a "
            "cron expression"
        )
    if svc.probe == "notify":
        problems.append(
            f"{at}.probe: the notify probe cannot be exported to {engine} (a container has "
            "no NOTIFY_SOCKET of the engine's to send READY=1 to); use an exec, tcp or http "
            "probe"
        )
    if engine == "kubernetes":
        if isinstance(svc.probe, ProbeTable) and svc.probe.log is not None:
            problems.append(
                f"{at}.probe: a log probe cannot be exported to kubernetes (its probes "
                "cannot read a container's output); use an exec, tcp or http probe"
            )
        if not dns_label(name):
            problems.append(
                f"{at}: {name!r} is not a valid Kubernetes name (lowercase letters, digits "
                "and '-', at most 63, ending in a letter or digit); rename the table"
            )
    if svc.replicas > 1:
        texts = [*(svc.command or []), *svc.env.values()]
        if any("{replica}" in text for text in texts):
            problems.append(
                f"{at}.replicas: {{replica}} would differ between replicas, which one "
                f"{'compose service' if engine == 'compose' else 'Deployment'} cannot "
                "express; use the container's hostname instead"
            )
    for var in svc.env:
        if var in secret_vars:
            problems.append(
                f"{at}.env.{var}: a secret's value is never exported; remove it from env "
                f"(the {engine} export takes {var} from the engine's secrets)"
            )
    return problems


def cron_expression(schedule: str) -> str | None:
    """``schedule`` as a 5-field cron expression, or None when cron cannot say it.

    A cron expression is itself; ``every N`` is one when N seconds is a whole number of
    minutes dividing an hour (``*/M * * * *``) or of hours dividing a day (``0 */H * * *``).
    Both count from the top of the hour or day, as ``every N`` counts from the epoch.
    """
    parsed = parse_schedule(schedule)
    if parsed.cron:
        return parsed.cron
    seconds = parsed.every
    if seconds % 60:
        return None
    minutes = int(seconds // 60)
    if minutes == 1:
        return "* * * * *"
    if minutes < 60:
        return f"*/{minutes} * * * *" if 60 % minutes == 0 else None
    if minutes % 60:
        return None
    hours = minutes // 60
    if hours == 24:
        return "0 0 * * *"
    return f"0 */{hours} * * *" if hours < 24 and 24 % hours == 0 else None


def memory_size(size: int, units: tuple[str, str, str]) -> str:
    """``size`` bytes in the largest of the (K, M, G) binary ``units`` that divides it
    (``512Mi``, ``512m``), else in bytes."""
    for unit, factor in zip(reversed(units), (1024**3, 1024**2, 1024), strict=True):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def dns_label(name: str) -> bool:
    """A valid Kubernetes object name (an RFC 1123 label)."""
    return (
        0 < len(name) <= 63
        and name[0].isalnum()
        and name[-1].isalnum()
        and all(ch.isdigit() or ch == "-" or ("a" <= ch <= "z") for ch in name)
    )


def _unit(
    config: Config,
    name: str,
    svc: ServiceSection,
    file_env: Mapping[str, str],
    secret_vars: set[str],
    urls: Mapping[str, str],
) -> Unit:
    resolved = config.group(name)[0]
    values = {
        "python": CONTAINER_PYTHON,
        "host": CONTAINER_BIND,
        "port": "" if svc.port is None else str(svc.port),
        "name": name,
        "data_dir": DATA_PATH,
        "replica": "1",
    }
    if svc.script is not None:
        # The script is expected at the same relative path in the image's working folder.
        argv: tuple[str, ...] = (
            CONTAINER_PYTHON,
            svc.script,
            "--host",
            CONTAINER_BIND,
            "--port",
            values["port"],
        )
    else:
        argv = tuple(fill(part, values) for part in svc.command or [])
    probe_values = {**values, "host": PROBE_HOST}
    probe = resolved.probe
    if probe.kind == "exec" and isinstance(svc.probe, ProbeTable) and svc.probe.exec:
        probe = Probe("exec", argv=tuple(fill(part, probe_values) for part in svc.probe.exec))
    # A declared secret reaches only the services that declare it; the token, every one.
    env: dict[str, str] = {k: v for k, v in file_env.items() if k not in secret_vars}
    env["HEARTHLINK_DATA_DIR"] = DATA_PATH
    env["HEARTHLINK_SERVICE"] = name
    env.update(urls)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update({key: fill(value, values) for key, value in svc.env.items()})
    return Unit(
        name=name,
        kind=svc.kind,
        image=svc.image or BUNDLED_IMAGE,
        argv=argv,
        port=svc.port,
        replicas=svc.replicas,
        env=env,
        secret_vars=(TOKEN_VARIABLE, *svc.secrets),
        probe=probe,
        conditions=svc.conditions,
        stop_timeout=resolved.stop_timeout,
        stop_signal=resolved.stop_signal.name,
        restart=resolved.restart,
        schedule=svc.schedule,
        # A hook runs inside the service's container: {host} is the loopback there.
        post_start=tuple(fill(part, probe_values) for part in svc.post_start),
        pre_stop=tuple(fill(part, probe_values) for part in svc.pre_stop),
        on_failure=tuple(svc.on_failure),
        max_memory=resolved.max_memory,
        profiles=tuple(svc.profiles),
        # socket = true is not carried: each engine's service keeps its own port.
        strategy=resolved.strategy,
        restart_with=tuple(svc.restarts_with),
    )


def bundled_ports() -> list[int]:
    """The ports of the bundled config's services (what the bundled image exposes)."""
    config = load_config(default_config_path(), {}, local=False)
    return sorted({svc.port for svc in config.services if svc.port is not None})


def header(plan: Plan | None, command: str) -> list[str]:
    """The first comment lines: what produced this file, from which config."""
    if plan is None:
        return [f"Generated by hearthlink {__version__} with `hearthlink export {command}`."]
    return [
        f"Generated by hearthlink {__version__} from {plan.config.path}",
        f"with `hearthlink export {command}`. Edit the config and export again rather than",
        "editing this file.",
    ]


class _Dumper(yaml.SafeDumper):
    """Block style, no anchors: every mapping written out where it is used."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(document: Any) -> str:
    """One YAML document, keys in the order given."""
    return yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,
    )


def comment(lines: list[str]) -> str:
    """``lines`` as YAML comment lines."""
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


def wrapped(note: str, *, indent: str = "") -> list[str]:
    """A long note as comment lines of a readable width."""
    return textwrap.wrap(note, width=86, initial_indent=indent, subsequent_indent=indent + "  ")


def secret_files(plan: Plan) -> list[tuple[str, list[str], Path]]:
    """Each secret variable, the units that read it, and where this machine keeps it.

    Only the file's path is given, never its contents: the user copies the value over (the
    data in the volume needs the key it was written with) or makes a new one.
    """
    out = []
    for var in plan.secret_vars():
        users = [unit.name for unit in plan.units if var in unit.secret_vars]
        filename = TOKEN_FILE if var == TOKEN_VARIABLE else _secret_file(plan, var)
        out.append((var, users, plan.config.data_dir / filename))
    return out


def secret_lines(plan: Plan) -> list[str]:
    """Comment lines naming each secret variable, its readers and this machine's file."""
    lines = []
    for var, users, file in secret_files(plan):
        readers = "every service" if len(users) == len(plan.units) else ", ".join(users)
        lines.append(f"  {var}: read by {readers}; this machine keeps it in {file}")
    return lines


def _secret_file(plan: Plan, var: str) -> str:
    return next(svc.secrets[var] for svc in plan.config.services if var in svc.secrets)
