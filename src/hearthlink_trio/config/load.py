"""Loading a config file: TOML, then the model, then the checks that span keys.

:func:`load_config` reads and validates a file and returns a :class:`Config` whose paths are
resolved (against the config file's folder) and whose services are in dependency order.
Every problem is reported at once, one line each, as ``<file>: <dotted.key>: <problem>``.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hearthlink_trio.config.graph import dependency_order
from hearthlink_trio.config.model import SERVICE_NAME_RE, ConfigFile, ServiceSection
from hearthlink_trio.config.resolved import Config, Service, service_url
from hearthlink_trio.errors import ConfigError

#: The API token's file in the data dir; a declared secret cannot use its name.
TOKEN_FILE = "api.token"


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
    secret_files: dict[str, tuple[str, str]] = {}  # variable -> (file, declaring service)
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
        for var, filename in svc.secrets.items():
            declared = secret_files.setdefault(var, (filename, name))
            if declared[0] != filename:
                problems.append(
                    f"{label}: {key}.secrets.{var}: service {declared[1]} keeps {var} in "
                    f"{declared[0]!r}; one variable, one file"
                )
            if filename == TOKEN_FILE:
                problems.append(
                    f"{label}: {key}.secrets.{var}: {TOKEN_FILE} holds the API token; "
                    "use another file name"
                )
        cwd = _resolve(base, svc.cwd) if svc.cwd else base
        if not cwd.is_dir():
            problems.append(f"{label}: {key}.cwd: not a directory: {cwd}")

    order, cycles = dependency_order({n: svc.depends_on for n, svc in parsed.services.items()})
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
                health_url=service_url(svc.host, svc.port) + svc.health_path,
                env=dict(svc.env),
                cwd=_resolve(base, svc.cwd) if svc.cwd else base,
                depends_on=tuple(svc.depends_on),
                stop_timeout=sup.stop_timeout if svc.stop_timeout is None else svc.stop_timeout,
                stop_signal=signal.Signals[svc.stop_signal],
                critical=svc.critical,
                secrets=dict(svc.secrets),
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
