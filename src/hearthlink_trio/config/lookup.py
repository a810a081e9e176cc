"""Which config file a command uses: ``--config``, ``$HEARTHLINK_CONFIG``, or the bundled one."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

#: The package is installed as files (a wheel or an editable install, never a zip), so its
#: data sits beside its modules: no importlib.resources (8 ms) on every command's path.
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


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
