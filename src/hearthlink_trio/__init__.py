"""hearthlink: a structured-concurrency process supervisor on Trio."""

from __future__ import annotations

# The single source of the version: pyproject.toml reads it from here (hatch), and so
# every service's /health reports it without importing importlib.metadata at start.
__version__ = "0.1.0"

__all__ = ["__version__"]
