"""Which config file a command uses: ``--config``, ``$HEARTHLINK_CONFIG``, or the bundled one."""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path


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
