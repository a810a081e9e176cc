"""The command line: ``hearthlink run``, ``check``, ``status``, ``restart``, ``stop``, ``logs``…"""

from __future__ import annotations

from hearthlink_trio.cli.app import main

__all__ = ["main"]
