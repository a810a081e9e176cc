"""Where a config's supervisor lives, read from a file that may not load as a whole.

The clients (``status``, ``stop``, ``start``, ``restart``, ``logs``, ``ui``) need only the
data dir, the control socket and the log dir to find a running supervisor. While someone
edits the config, the file on disk may have errors that the running supervisor never saw:
:func:`locate` reads only those three keys (with ``$HEARTHLINK_DATA_DIR``, resolved as the
full loader resolves them), so the clients keep working.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hearthlink_trio.config.merge import effective_files
from hearthlink_trio.config.tomlfile import read_toml
from hearthlink_trio.errors import ConfigError

__all__ = ["DEFAULT_DATA_DIR", "Location", "locate"]

#: The data dir of a config that names none (the same default as the full loader's).
DEFAULT_DATA_DIR = "~/.local/share/hearthlink"


@dataclass(frozen=True)
class Location:
    """The paths a client needs to reach the supervisor of a config."""

    data_dir: Path
    control_socket: Path
    log_dir: Path


def locate(paths: Path | Sequence[Path], environ: Mapping[str, str] | None = None) -> Location:
    """The data dir, control socket and log dir of the config at ``paths`` (merged as the
    loader merges them, the override file beside the first included).

    Whatever in a file cannot be read (the whole file, or one of the three keys) falls
    back to what the files before it said, else the default; this never raises for a
    broken file.
    """
    environ = os.environ if environ is None else environ
    files = effective_files(paths)
    supervisor: dict[str, Any] = {}
    for file in files:
        try:
            raw = read_toml(file)
        except ConfigError:
            continue
        section = raw.get("supervisor")
        if isinstance(section, dict):
            supervisor.update(section)
    base = files[0].resolve().parent

    def text(key: str) -> str:
        value = supervisor.get(key)
        # A NUL byte makes no path: the default stands (the loader reports it).
        return value if isinstance(value, str) and "\0" not in value else ""

    data_dir = _resolve(
        base, environ.get("HEARTHLINK_DATA_DIR") or text("data_dir") or DEFAULT_DATA_DIR
    ).absolute()
    log_dir = _resolve(base, text("log_dir")) if text("log_dir") else data_dir / "logs"
    socket = (
        _resolve(base, text("control_socket"))
        if text("control_socket")
        else data_dir / "run" / "hearthlink.sock"
    )
    return Location(data_dir=data_dir, control_socket=socket.absolute(), log_dir=log_dir.absolute())


def _resolve(base: Path, value: str) -> Path:
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # "~user" of no user: taken as written (the loader reports it)
        path = Path(value)
    return path if path.is_absolute() else (base / path)
