"""``hearthlink status``: the one function behind the command, whichever way it is reached.

The argument parser calls :func:`show_status` with what it parsed; the console script
calls it directly for the exact command lines ``hearthlink status`` and ``hearthlink
status --json``, before the parser (which costs more to import than the whole answer
should take) is loaded. Both therefore print the same bytes and exit with the same code.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from hearthlink_trio.cli.target import target

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["show_status"]


def show_status(config: list[Path] | None, *, as_json: bool = False, watch: bool = False) -> int:
    """Print the running supervisor's status (the table, or the JSON object with
    ``as_json``; redrawn until Ctrl-C with ``watch``) and return the exit code: 0, or 1
    with the reason on stderr when no supervisor answers."""
    from hearthlink_trio.control.errors import ControlError

    _, client = target(config)
    if watch:
        from hearthlink_trio.cli.statuswatch import watch_status

        return watch_status(client)
    try:
        health = client.health()
    except ControlError as exc:
        print(exc, file=sys.stderr)
        return 1
    if as_json:
        import json

        print(json.dumps(health, indent=2))
    else:
        from hearthlink_trio.cli.statusview import render_status_table

        print(render_status_table(health))
    return 0
