"""Loading a config: TOML (one file or several merged), then the model, then the checks
that span keys.

:func:`load_config` reads, merges and validates the files and returns a :class:`Config`
whose paths are resolved (against the first config file's folder) and whose services are
in dependency order.
Every problem is reported at once, one line each, as ``<file>: <dotted.key>: <problem>``.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hearthlink_trio.config.envfile import EnvFileError, read_env_file
from hearthlink_trio.config.lookup import config_path, default_config_path
from hearthlink_trio.config.merge import Merged, drop_disabled, read_merged
from hearthlink_trio.config.model import UNION_TAGS, ConfigFile, ServiceSection, toml_key
from hearthlink_trio.config.resolved import Config, Health, Restart
from hearthlink_trio.config.services import Where, resolve_path, resolve_services
from hearthlink_trio.errors import ConfigError

__all__ = ["config_path", "default_config_path", "load_config", "read_model"]


#: The most services (replicas included) a config may start: every service's environment
#: names every other, so a config of tens of thousands would cost memory by the square.
MAX_SERVICES = 1000
#: The most problem lines reported: past these, one line says how many more there are.
MAX_PROBLEMS = 100


def _capped(problems: list[str], label: str) -> list[str]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    more = len(problems) - MAX_PROBLEMS
    return [*problems[:MAX_PROBLEMS], f"{label}: … and {more} more problem(s)"]


def _describe(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return "unknown key"
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def _dotted(loc: tuple[Any, ...]) -> str:
    parts = [
        toml_key(part) if isinstance(part, str) else str(part)
        for part in loc
        if part not in UNION_TAGS and "[" not in str(part)
    ]
    return ".".join(parts) or "(top level)"


def read_model(paths: Path | Sequence[Path]) -> tuple[ConfigFile, Merged, list[str]]:
    """The files of ``paths`` merged, services switched off removed, and validated by the
    file model; with the problems found so far that the model does not see (a dependency
    on a removed service).

    Raises:
        ConfigError: a file cannot be read, or the model refuses the merged tables (with
            those problems too), one line each naming the file that set the key.
    """
    merged = read_merged(paths)
    label = merged.base_label
    nul = _nul_problems(merged.raw, label)
    if nul:
        raise ConfigError(_capped([merged.relabel(line) for line in nul], label))
    problems = drop_disabled(merged)
    try:
        parsed = ConfigFile.model_validate(merged.raw)
    except ValidationError as exc:
        lines = [f"{label}: {_dotted(e['loc'])}: {_describe(e)}" for e in exc.errors()]
        raise ConfigError(
            _capped([merged.relabel(line) for line in problems + lines], label)
        ) from None
    return parsed, merged, problems


def load_config(
    paths: Path | Sequence[Path], environ: Mapping[str, str] | None = None, *, local: bool = True
) -> Config:
    """Read, merge, validate and resolve the config at ``paths``.

    ``paths`` is one file or several, merged in order (see :mod:`.merge`; the override
    file beside the first is merged right after it). Relative paths resolve against the
    first file's folder. ``local=False`` (``hearthlink export``) skips what only this
    machine can tell: that scripts and folders exist, that a ``user`` exists and may be
    switched to.

    Raises:
        ConfigError: with one ``<file>: <key>: <problem>`` line per problem, naming the
            file that set the key.
    """
    environ = os.environ if environ is None else environ
    given = (paths,) if isinstance(paths, Path) else tuple(paths)
    path = given[0]
    parsed, merged, problems = read_model(given)
    label = merged.base_label
    base = path.resolve().parent
    sup = parsed.supervisor
    data_dir_value = environ.get("HEARTHLINK_DATA_DIR") or sup.data_dir
    home = _home_problems(parsed, data_dir_value, label)
    if home:
        raise ConfigError([merged.relabel(line) for line in home])
    count = sum(svc.replicas for svc in parsed.services.values())
    if count > MAX_SERVICES:
        raise ConfigError(
            [f"{label}: services: {count} services (replicas included); at most {MAX_SERVICES}"]
        )

    data_dir = resolve_path(base, data_dir_value).absolute()
    log_dir = resolve_path(base, sup.log_dir) if sup.log_dir else data_dir / "logs"
    run_dir = data_dir / "run"
    control_socket = (
        resolve_path(base, sup.control_socket)
        if sup.control_socket
        else run_dir / "hearthlink.sock"
    )
    python = sup.python or sys.executable

    where = Where(
        label=label,
        base=base,
        python=python,
        data_dir=data_dir,
        stop_timeout=sup.stop_timeout,
        hook_timeout=sup.hook_timeout,
        file_env={},
        local=local,
    )
    if sup.env_file:
        try:
            where = replace(where, file_env=read_env_file(resolve_path(base, sup.env_file)))
        except EnvFileError as exc:
            problems.append(f"{label}: supervisor.env_file: {exc}")
    problems += _secret_files(parsed.services, label)
    services, service_problems = resolve_services(parsed.services, where)
    problems += service_problems
    if problems:
        raise ConfigError(_capped([merged.relabel(line) for line in problems], label))
    return Config(
        path=path.absolute(),
        sources=tuple(file.absolute() for file in given),
        file_env=dict(where.file_env),
        data_dir=data_dir,
        log_dir=log_dir.absolute(),
        run_dir=run_dir,
        control_socket=control_socket.absolute(),
        python=python,
        health=Health(**parsed.health.model_dump()),
        restart=Restart(**parsed.restart.model_dump()),
        services=tuple(services),
        log_max_bytes=sup.log_max_bytes,
        log_backups=sup.log_backups,
    )


def _nul_problems(raw: Mapping[str, Any], label: str) -> list[str]:
    """Every key and string holding a NUL character: no path, argument or environment
    variable can carry one, so such a value could never be started."""
    problems = []
    pending: deque[tuple[tuple[str | int, ...], Any]] = deque([((), raw)])
    while pending:  # breadth first, without recursion: the depth is the file's
        loc, value = pending.popleft()
        if isinstance(value, dict):
            for key, item in value.items():
                if "\0" in key:
                    problems.append(f"{label}: {_key(loc)}: a key holds a NUL character")
                else:
                    pending.append(((*loc, key), item))
        elif isinstance(value, list):
            pending.extend(((*loc, n), item) for n, item in enumerate(value))
        elif isinstance(value, str) and "\0" in value:
            problems.append(f"{label}: {_key(loc)}: holds a NUL character")
    return problems


def _key(loc: tuple[str | int, ...]) -> str:
    parts = [toml_key(part) if isinstance(part, str) else str(part) for part in loc]
    return ".".join(parts) or "(top level)"


def _home_problems(parsed: ConfigFile, data_dir: str, label: str) -> list[str]:
    """Paths starting ``~user`` whose user does not exist (they have no folder to mean)."""
    sup = parsed.supervisor
    paths = {
        "supervisor.data_dir": data_dir,
        "supervisor.log_dir": sup.log_dir,
        "supervisor.control_socket": sup.control_socket,
        "supervisor.env_file": sup.env_file,
    }
    for name, svc in parsed.services.items():
        for key in ("script", "cwd", "env_file"):
            paths[f"services.{toml_key(name)}.{key}"] = getattr(svc, key) or ""
    problems = []
    for key, value in paths.items():
        if not value.startswith("~"):
            continue
        try:
            Path(value).expanduser()
        except RuntimeError:  # "Could not determine home directory"
            user = value[1:].split("/", 1)[0]
            problems.append(f"{label}: {key}: {value!r} names no home folder (no user {user!r})")
    return problems


def _secret_files(sections: Mapping[str, ServiceSection], label: str) -> list[str]:
    """One variable, one file: two services declaring a secret must agree where it is kept."""
    problems = []
    declared: dict[str, tuple[str, str]] = {}  # variable -> (file, declaring service)
    for name, svc in sections.items():
        for var, filename in svc.secrets.items():
            first = declared.setdefault(var, (filename, name))
            if first[0] != filename:
                problems.append(
                    f"{label}: services.{toml_key(name)}.secrets.{var}: service {first[1]} "
                    f"keeps {var} in {first[0]!r}; one variable, one file"
                )
    return problems
