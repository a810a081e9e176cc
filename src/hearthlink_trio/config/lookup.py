"""Which config file a command uses: ``--config``, ``$HEARTHLINK_CONFIG``, or the bundled one;
and the files a config is read from (the override file beside the first added)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

#: The package is installed as files (a wheel or an editable install, never a zip), so its
#: data sits beside its modules: no importlib.resources (8 ms) on every command's path.
_PACKAGE_DIR = Path(__file__).resolve().parent.parent

#: Merged onto a config file when it sits beside it (see ``merge``).
OVERRIDE_NAME = "hearthlink.override.toml"


def effective_files(paths: Path | Sequence[Path]) -> tuple[Path, ...]:
    """The files a config is read from, in merge order: the first of ``paths``, the
    override file beside it (when present and not given anyway), then the rest."""
    given = [paths] if isinstance(paths, Path) else list(paths)
    if not given:
        raise ValueError("at least one config file is needed")
    files = [given[0]]
    override = given[0].parent / OVERRIDE_NAME
    listed = {path.absolute() for path in given}
    if override.absolute() not in listed and override.is_file():
        files.append(override)
    files += given[1:]
    return tuple(files)


def default_config_path() -> Path:
    """The bundled four-service config."""
    return _PACKAGE_DIR / "data" / "hearthlink.toml"


def config_path(explicit: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """``--config``, else ``$HEARTHLINK_CONFIG``, else the bundled default."""
    environ = os.environ if environ is None else environ
    if explicit is not None:
        return explicit
    if environ.get("HEARTHLINK_CONFIG"):
        return Path(environ["HEARTHLINK_CONFIG"])
    return default_config_path()


def config_paths(
    explicit: Sequence[Path] | None, environ: Mapping[str, str] | None = None
) -> tuple[Path, ...]:
    """The config files a command merges: every ``--config`` in order, else the one of
    :func:`config_path` (the override file beside the first is added when loading)."""
    if explicit:
        return tuple(explicit)
    return (config_path(None, environ),)
