"""The configuration: the file model, loading with one line per problem, the dependency graph.

``load_config(path)`` is the entry point; what it returns (:class:`Config`,
:class:`Service`) is plain, frozen data that the supervisor runs. Loading imports the file
model (pydantic) only when it is called: the names below that need it are looked up on
first use, so that importing a ``Config`` for its type costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hearthlink_trio.config.lookup import config_path, default_config_path
from hearthlink_trio.config.resolved import Config, Health, Probe, Restart, Service

if TYPE_CHECKING:
    from hearthlink_trio.config.load import load_config

__all__ = [
    "Config",
    "Health",
    "Probe",
    "Restart",
    "Service",
    "config_path",
    "default_config_path",
    "load_config",
]

_LOADING = ("load_config",)


def __getattr__(name: str) -> Any:
    if name in _LOADING:
        from hearthlink_trio.config import load

        return getattr(load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
