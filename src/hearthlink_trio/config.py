"""The configuration file (SPEC §3): TOML, validated by pydantic, unknown keys rejected.

:func:`load_config` reads and validates a file and returns a :class:`Config` whose paths are
resolved (against the config file's folder) and whose services are in dependency order.
Every problem is reported at once, one line each, as ``<file>: <dotted.key>: <problem>``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hearthlink_trio.errors import ConfigError

SERVICE_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
DEFAULT_DATA_DIR = "~/.local/share/hearthlink"

NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SupervisorSection(_Section):
    data_dir: str = DEFAULT_DATA_DIR
    control_socket: str = ""
    stop_timeout: NonNegative = 10.0
    log_dir: str = ""
    #: The interpreter for ``script`` services and ``{python}``; "" = the one running hearthlink.
    python: str = ""
    #: Size at which a service's log file is rotated, and how many old files are kept.
    log_max_bytes: Annotated[int, Field(ge=1024)] = 10 * 1024 * 1024
    log_backups: Annotated[int, Field(ge=0)] = 3


class HealthSection(_Section):
    startup_interval: Positive = 5.0
    startup_period: NonNegative = 60.0
    steady_interval: Positive = 30.0
    timeout: Positive = 5.0
    failure_threshold: Annotated[int, Field(ge=1)] = 3


class RestartSection(_Section):
    max_attempts: Annotated[int, Field(ge=0)] = 5
    initial_backoff: NonNegative = 1.0
    max_backoff: NonNegative = 30.0
    stable_after: NonNegative = 10.0


class ServiceSection(_Section):
    script: str | None = None
    command: list[str] | None = None
    port: Annotated[int, Field(ge=1, le=65535)]
    host: str = "127.0.0.1"
    allow_external: bool = False
    health_path: str = "/health"
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str = ""
    depends_on: list[str] = Field(default_factory=list)
    stop_timeout: NonNegative | None = None
    stop_signal: str = "SIGTERM"
    critical: bool = False

    @field_validator("stop_signal")
    @classmethod
    def _known_signal(cls, value: str) -> str:
        name = value.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        if not isinstance(getattr(signal, name, None), signal.Signals):
            raise ValueError(f"unknown signal {value!r} (use a name like SIGTERM or SIGINT)")
        return name

    @field_validator("health_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @field_validator("command")
    @classmethod
    def _non_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _script_or_command(self) -> ServiceSection:
        if (self.script is None) == (self.command is None):
            raise ValueError("give exactly one of 'script' or 'command'")
        return self


class ConfigFile(_Section):
    supervisor: SupervisorSection = SupervisorSection()
    health: HealthSection = HealthSection()
    restart: RestartSection = RestartSection()
    services: dict[str, ServiceSection] = Field(default_factory=dict)


@dataclass(frozen=True)
class Service:
    """One service, resolved and ready to run."""

    name: str
    argv: tuple[str, ...]
    port: int
    host: str
    health_url: str
    env: Mapping[str, str]
    cwd: Path
    depends_on: tuple[str, ...]
    stop_timeout: float
    stop_signal: signal.Signals
    critical: bool

    @property
    def url(self) -> str:
        return _url(self.host, self.port)


@dataclass(frozen=True)
class Config:
    """A validated configuration with every path resolved."""

    path: Path
    data_dir: Path
    log_dir: Path
    run_dir: Path
    control_socket: Path
    python: str
    health: HealthSection
    restart: RestartSection
    services: tuple[Service, ...]
    log_max_bytes: int
    log_backups: int

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(svc.name for svc in self.services)

    def worst_case_stop_seconds(self) -> float:
        """The longest a graceful shutdown can take.

        Dependents stop before their dependencies, so the worst case is the longest
        ``depends_on`` chain's sum of ``stop_timeout``, plus one second per service in it for
        draining output.
        """
        longest: dict[str, float] = {}
        for svc in self.services:  # dependencies come first
            below = max((longest[dep] for dep in svc.depends_on), default=0.0)
            longest[svc.name] = below + svc.stop_timeout + 1.0
        # A chain runs from a dependent down to its dependencies: the maximum covers it.
        return max(longest.values(), default=0.0)


def default_config_path() -> Path:
    """The bundled four-service config."""
    return Path(str(resources.files("hearthlink_trio") / "data" / "hearthlink.toml"))


def config_path(explicit: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """``--config``, else ``$HEARTHLINK_CONFIG``, else the bundled default."""
    environ = os.environ if environ is None else environ
    if explicit is not None:
        return explicit
    if environ.get("HEARTHLINK_CONFIG"):
        return Path(environ["HEARTHLINK_CONFIG"])
    return default_config_path()


def _describe(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return "unknown key"
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def _dependency_order(sections: Mapping[str, ServiceSection]) -> tuple[list[str], list[str]]:
    """Topological order (dependencies first, stable), and the names caught in a cycle."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    cyclic: list[str] = []

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*trail[trail.index(name) :], name]
            cyclic.append(" -> ".join(cycle))
            return
        state[name] = 1
        for dep in sections[name].depends_on:
            if dep in sections:
                visit(dep, [*trail, name])
        state[name] = 2
        order.append(name)

    for name in sections:
        visit(name, [])
    return order, cyclic


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, validate and resolve the config at ``path``.

    Raises:
        ConfigError: with one ``<file>: <key>: <problem>`` line per problem.
    """
    environ = os.environ if environ is None else environ
    label = path.name
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: cannot read config: file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{label}: not valid UTF-8"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: TOML syntax error: {exc}"]) from None

    try:
        parsed = ConfigFile.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{label}: {_dotted(e['loc'])}: {_describe(e)}" for e in exc.errors()]
        raise ConfigError(lines) from None

    base = path.resolve().parent
    sup = parsed.supervisor
    problems: list[str] = []

    data_dir_value = environ.get("HEARTHLINK_DATA_DIR") or sup.data_dir
    data_dir = _resolve(base, data_dir_value).absolute()
    log_dir = _resolve(base, sup.log_dir) if sup.log_dir else data_dir / "logs"
    run_dir = data_dir / "run"
    control_socket = (
        _resolve(base, sup.control_socket) if sup.control_socket else run_dir / "hearthlink.sock"
    )
    python = sup.python or sys.executable

    ports: dict[int, str] = {}
    for name, svc in parsed.services.items():
        key = f"services.{name}"
        if not SERVICE_NAME_RE.match(name):
            problems.append(
                f"{label}: {key}: invalid service name (use lowercase letters, digits, '_' "
                "and '-', starting with a letter)"
            )
        if svc.port in ports:
            problems.append(
                f"{label}: {key}.port: port {svc.port} is already used by service {ports[svc.port]}"
            )
        else:
            ports[svc.port] = name
        for dep in svc.depends_on:
            if dep not in parsed.services:
                problems.append(f"{label}: {key}.depends_on: unknown service {dep!r}")
            elif dep == name:
                problems.append(f"{label}: {key}.depends_on: a service cannot depend on itself")
        if not svc.allow_external and not _is_loopback(svc.host):
            problems.append(
                f"{label}: {key}.host: {svc.host!r} is not a loopback address "
                "(set allow_external = true to bind it)"
            )
        if svc.script is not None and not _resolve(base, svc.script).is_file():
            problems.append(f"{label}: {key}.script: file not found: {_resolve(base, svc.script)}")
        cwd = _resolve(base, svc.cwd) if svc.cwd else base
        if not cwd.is_dir():
            problems.append(f"{label}: {key}.cwd: not a directory: {cwd}")

    order, cycles = _dependency_order(parsed.services)
    for cycle in cycles:
        first, _, rest = cycle.partition(" -> ")
        if rest != first:  # a service naming itself is reported above
            problems.append(f"{label}: services.{first}.depends_on: dependency cycle: {cycle}")
    if problems:
        raise ConfigError(problems)

    services = []
    for name in order:
        svc = parsed.services[name]
        argv = _argv(svc, name=name, python=python, base=base, data_dir=data_dir)
        services.append(
            Service(
                name=name,
                argv=argv,
                port=svc.port,
                host=svc.host,
                health_url=_url(svc.host, svc.port) + svc.health_path,
                env=dict(svc.env),
                cwd=_resolve(base, svc.cwd) if svc.cwd else base,
                depends_on=tuple(svc.depends_on),
                stop_timeout=sup.stop_timeout if svc.stop_timeout is None else svc.stop_timeout,
                stop_signal=signal.Signals[svc.stop_signal],
                critical=svc.critical,
            )
        )
    return Config(
        path=path.absolute(),
        data_dir=data_dir,
        log_dir=log_dir.absolute(),
        run_dir=run_dir,
        control_socket=control_socket.absolute(),
        python=python,
        health=parsed.health,
        restart=parsed.restart,
        services=tuple(services),
        log_max_bytes=sup.log_max_bytes,
        log_backups=sup.log_backups,
    )


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _argv(
    svc: ServiceSection, *, name: str, python: str, base: Path, data_dir: Path
) -> tuple[str, ...]:
    if svc.script is not None:
        script = str(_resolve(base, svc.script))
        return (python, script, "--host", svc.host, "--port", str(svc.port))
    values = {
        "python": python,
        "host": svc.host,
        "port": str(svc.port),
        "name": name,
        "data_dir": str(data_dir),
    }
    argv = []
    for part in svc.command or []:
        for key, value in values.items():
            part = part.replace("{" + key + "}", value)
        argv.append(part)
    return tuple(argv)
