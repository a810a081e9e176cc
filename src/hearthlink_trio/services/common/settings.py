"""What a service reads from its environment: its data folder and its numbers.

A value the service cannot run with is a :class:`ConfigurationError`, which the launcher
turns into a message on stderr and exit status 78.
"""

from __future__ import annotations

import os
from pathlib import Path

from hearthlink_trio._util import ensure_private_dir


class ConfigurationError(Exception):
    """The service cannot start with the environment it was given (exit status 78)."""


def service_data_dir(name: str) -> Path:
    """``$HEARTHLINK_DATA_DIR/<name>/``, created owner-only (0700 whatever the umask)."""
    base = os.environ.get("HEARTHLINK_DATA_DIR")
    if not base:
        raise ConfigurationError("HEARTHLINK_DATA_DIR is not set")
    path = Path(base).expanduser() / name
    ensure_private_dir(path)
    return path


def env_number(name: str, default: float, *, minimum: float = 0.0) -> float:
    """The number in environment variable ``name`` (``default`` when unset or empty).

    Raises:
        ConfigurationError: the value is not a finite number >= ``minimum`` (exit 78).
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum or value == float("inf"):
        raise ConfigurationError(f"{name}={raw!r}: expected a number >= {minimum:g}")
    return value
