"""The configuration: the file model, loading with one line per problem, the dependency graph.

``load_config(path)`` is the entry point; what it returns (:class:`Config`,
:class:`Service`) is plain, frozen data that the supervisor runs.
"""

from __future__ import annotations

from hearthlink_trio.config.load import config_path, default_config_path, load_config
from hearthlink_trio.config.model import HealthSection, RestartSection
from hearthlink_trio.config.resolved import Config, Service

__all__ = [
    "Config",
    "HealthSection",
    "RestartSection",
    "Service",
    "config_path",
    "default_config_path",
    "load_config",
]
