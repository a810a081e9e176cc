"""A cache of validated configs, so that ``hearthlink run`` of an unchanged config starts its
services without building the file model (pydantic): about 100 ms and 15 MiB less.

An entry holds the resolved config and what its validity depended on: the hash of every
config file merged (the override file beside the first included) and of every env file
they read, the environment variables that loading read,
the interpreter, the user, and this version of hearthlink. It is used only while all of
those are unchanged; what the machine must still provide (scripts, folders, users) is
checked again each time, so a hit never skips a check a full load would make. Anything
unusual (no entry, a corrupt one, a mismatch) is a full load, which writes the entry anew.

A hit reads no TOML: while the config files hash as recorded they name the same env files
as when the entry was written, so the recorded list of those is checked as it stands. The
hashes are BLAKE2b, CPython's own: ``hashlib`` would load OpenSSL first, a few ms more
before the first service starts.

Entries live in ``$XDG_CACHE_HOME/hearthlink/`` (``~/.cache/hearthlink``), 0600 in a
0700 folder: env files may hold passwords.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import enum
import functools
import json
import os
import pwd
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import hearthlink_trio
from hearthlink_trio._util import (
    MAX_TEXT_FILE_BYTES,
    ensure_private_dir,
    read_regular_file,
    read_text_file,
    write_private_file,
)
from hearthlink_trio.config.lookup import effective_files
from hearthlink_trio.config.resolved import Config
from hearthlink_trio.errors import ConfigError

try:  # BLAKE2 is built into CPython; hashlib's import loads OpenSSL for it all the same.
    from _blake2 import blake2b
except ImportError:  # an interpreter built without it
    from hashlib import blake2b

FORMAT = 3
#: ``${NAME}`` or ``$NAME`` in an env file: loading read that variable. Compiled (and
#: cached by ``re``) only when an entry is written.
_REFERENCE = r"\$\{?([A-Za-z_][A-Za-z0-9_]*)"


def _hash(data: bytes) -> str:
    return blake2b(data, digest_size=32).hexdigest()


def cache_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hearthlink"


def _entry_path(paths: Path | Sequence[Path], environ: Mapping[str, str]) -> Path:
    # Keyed on every file merged: the same base with another override is another entry.
    key = "\n".join(str(path.absolute()) for path in effective_files(paths))
    name = _hash(key.encode())[:24]
    return cache_dir(environ) / f"config-{name}.json"


def _digest(path: Path) -> str | None:
    try:
        return _hash(read_regular_file(path, limit=MAX_TEXT_FILE_BYTES))
    except (OSError, ValueError):
        return None


def _inputs(paths: Path | Sequence[Path], environ: Mapping[str, str]) -> dict[str, Any]:
    """What loading ``paths`` depends on, read from the files themselves (their TOML names
    the env files), as recorded in an entry."""
    from hearthlink_trio.config.merge import read_merged  # writing an entry only

    merged = read_merged(paths)
    raw = merged.raw
    base = merged.files[0].resolve().parent
    env_files = []
    variables = {"HEARTHLINK_DATA_DIR"}
    tables = [raw.get("supervisor", {}), *raw.get("services", {}).values()]
    for table in tables:
        if isinstance(table, dict) and isinstance(table.get("env_file"), str) and table["env_file"]:
            if table["env_file"].startswith("~"):
                variables.add("HOME")  # where "~" is
            env_file = Path(table["env_file"]).expanduser()
            env_files.append(env_file if env_file.is_absolute() else base / env_file)
    for extra in env_files:
        with contextlib.suppress(OSError, ValueError):
            variables.update(re.findall(_REFERENCE, read_text_file(extra)))
    return _fingerprint(merged.files, env_files, variables, base, environ)


def _fingerprint(
    configs: Sequence[Path],
    env_files: Sequence[Path],
    variables: Iterable[str],
    base: Path,
    environ: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": hearthlink_trio.__version__,
        "loader": _loader_fingerprint(),
        "python": os.path.realpath(sys.executable),
        "euid": os.geteuid(),
        "base": str(base),
        "configs": {str(file.absolute()): _digest(file) for file in configs},
        "env_files": {str(file): _digest(file) for file in env_files},
        "environ": {name: environ.get(name) for name in sorted(variables)},
    }


def _still_valid(
    recorded: Mapping[str, Any], paths: Path | Sequence[Path], environ: Mapping[str, str]
) -> bool:
    """Whether ``recorded`` (an entry's inputs) holds now, found without reading TOML: the
    same config files, hashing as recorded, in the same folder, name the env files and the
    variables recorded, so those are compared as they stand."""
    configs = effective_files(paths)
    env_files = [Path(file) for file in recorded["env_files"]]
    base = configs[0].resolve().parent
    now = _fingerprint(configs, env_files, recorded["environ"], base, environ)
    return now == recorded


def _loader_fingerprint() -> list[list[int]]:
    """Size and mtime of the modules that turn a file into a config: an edited loader (a
    development checkout between releases) must not be answered by an entry it did not
    write."""
    here = Path(__file__).parent
    fingerprint = []
    for name in (
        "model.py",
        "load.py",
        "lookup.py",
        "merge.py",
        "services.py",
        "resolved.py",
        "envfile.py",
        "tomlfile.py",
    ):
        info = (here / name).stat()
        fingerprint.append([info.st_size, info.st_mtime_ns])
    return fingerprint


def _machine_ok(config: Config, checks: Mapping[str, list[str]]) -> bool:
    """What a full load checks on this machine still holds."""
    if not all(os.path.isfile(file) for file in checks.get("files", [])):
        return False
    if not all(os.path.isdir(folder) for folder in checks.get("dirs", [])):
        return False
    try:
        for user in checks.get("users", []):
            pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def load_cached(paths: Path | Sequence[Path], environ: Mapping[str, str]) -> Config | None:
    """The cached config for ``paths`` if it is still valid, else None."""
    try:
        entry = json.loads(_entry_path(paths, environ).read_text(encoding="utf-8"))
        if not _still_valid(entry["inputs"], paths, environ):
            return None
        config = _config_from(entry["config"])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, ConfigError):
        # A file that does not load (RuntimeError: a "~user" path of no user) is the full
        # loader's to report.
        return None
    return config if _machine_ok(config, entry.get("checks", {})) else None


def store(config: Config, environ: Mapping[str, str]) -> None:
    """Record ``config`` (just loaded in full from its file) for the next run."""
    try:
        inputs = _inputs(config.files, environ)
        entry = {"inputs": inputs, "checks": _checks(config), "config": _config_to(config)}
        folder = cache_dir(environ)
        ensure_private_dir(folder)
        write_private_file(_entry_path(config.files, environ), json.dumps(entry), replace=True)
    except (OSError, ValueError, RuntimeError, ConfigError):
        return  # a cache that cannot be written costs only the next start's 100 ms


def _checks(config: Config) -> dict[str, list[str]]:
    from hearthlink_trio.config.merge import read_merged

    raw = read_merged(config.files).raw
    base = config.path.resolve().parent
    scripts = []
    for table in raw.get("services", {}).values():
        if isinstance(table, dict) and isinstance(table.get("script"), str):
            script = Path(table["script"]).expanduser()
            scripts.append(str(script if script.is_absolute() else base / script))
    return {
        "files": scripts,
        "dirs": sorted(
            {str(svc.cwd) for svc in config.services}
            | {str(folder) for svc in config.services for folder in svc.watch_folders}
        ),
        "users": sorted({svc.user for svc in config.services if svc.user}),
    }


def _config_to(config: Config) -> dict[str, Any]:
    return _plain(config)  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    """A resolved config (or any part of it) as JSON can carry it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def _config_from(data: dict[str, Any]) -> Config:
    return _converter(Config)(data)  # type: ignore[no-any-return]


@functools.cache
def _converter(kind: Any) -> Callable[[Any], Any]:
    """A function that turns what :func:`_plain` made of a value of type ``kind`` back into
    that value. Made once per type from the dataclasses' own type hints (so a new field
    needs no code here), and not worked out again for each of many services.

    The function raises TypeError or ValueError where its data does not fit ``kind`` (a
    corrupt entry).
    """
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return _dataclass_converter(kind)
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        others = [arg for arg in args if arg is not type(None)]
        inner = _converter(others[0]) if len(others) == 1 else _unsupported(kind)
        if type(None) not in args:
            return inner
        return lambda data: None if data is None else inner(data)
    if origin is tuple:
        item = _converter(args[0])
        return lambda data: tuple(item(value) for value in data)
    if origin in (dict, Mapping, collections.abc.Mapping):
        value = _converter(args[1])

        def mapping(data: Any) -> dict[Any, Any]:
            if not isinstance(data, dict):
                raise TypeError(f"{data!r} is not an object")
            return {key: value(item) for key, item in data.items()}

        return mapping
    if origin is typing.Literal:

        def literal(data: Any) -> Any:
            if data not in args:
                raise ValueError(f"{data!r} is not one of {args}")
            return data

        return literal
    if isinstance(kind, type) and issubclass(kind, enum.Enum | Path):
        return kind
    if isinstance(kind, type):

        def checked(data: Any) -> Any:
            if kind is float and isinstance(data, int):
                return float(data)
            if not isinstance(data, kind):
                raise TypeError(f"{data!r} is not a {kind.__name__}")
            return data

        return checked
    return lambda data: data


def _dataclass_converter(kind: type) -> Callable[[Any], Any]:
    fields = {name: _converter(hint) for name, hint in _hints(kind).items()}

    def build(data: Any) -> Any:
        if not isinstance(data, dict):
            raise TypeError(f"{kind.__name__}: not an object")
        return kind(**{name: fields[name](item) for name, item in data.items()})

    return build


def _unsupported(kind: Any) -> Callable[[Any], Any]:
    def refuse(data: Any) -> Any:
        raise TypeError(f"{kind} is not a type a cached config holds")

    return refuse


@functools.cache
def _hints(kind: type) -> dict[str, Any]:
    """The type of each field of ``kind``, as ``typing.get_type_hints`` gives it: each
    annotation evaluated in the module of the class that declares it. Evaluated here, once
    per distinct text, because get_type_hints (which wraps and walks every one) costs ~3 ms
    before the first service starts."""
    hints: dict[str, Any] = {}
    for base in reversed(kind.__mro__):
        for name, annotation in vars(base).get("__annotations__", {}).items():
            hints[name] = (
                _evaluate(annotation, base.__module__)
                if isinstance(annotation, str)
                else annotation
            )
    return hints


@functools.cache
def _evaluate(annotation: str, module: str) -> Any:
    # The package's own annotations, as get_type_hints would evaluate them.
    return eval(annotation, vars(sys.modules[module]))  # noqa: S307


def load_config_cached(
    paths: Path | Sequence[Path], environ: Mapping[str, str] | None = None
) -> Config:
    """``load_config(paths)``, answered from the cache while nothing it depends on changed.

    Raises:
        ConfigError: as ``load_config`` (a config with errors is never cached).
    """
    environ = os.environ if environ is None else environ
    given = (paths,) if isinstance(paths, Path) else tuple(paths)
    cached = load_cached(given, environ)
    if cached is not None:
        return cached
    from hearthlink_trio.config.load import load_config

    config = load_config(given, environ)
    store(config, environ)
    return config
