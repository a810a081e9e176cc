"""``hearthlink status --watch``: the status table, redrawn on every change until Ctrl-C.

A client of the event stream: the snapshot draws the table, each state change or
supervisor event draws it again from a fresh ``GET /v1/health`` (cheap, and exact for
every column), and a probe result moves the service's "last check". Plain ANSI: clear the
screen, home the cursor, print.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from hearthlink_trio.cli.statusview import render_status_table
from hearthlink_trio.control.errors import ControlError
from hearthlink_trio.control.stream import (
    Dropped,
    ProbeResult,
    Snapshot,
    StateChange,
    SupervisorLine,
    parse,
)

if TYPE_CHECKING:
    from hearthlink_trio.control.client import ControlClient

__all__ = ["watch_status"]

CLEAR = "\x1b[H\x1b[2J"
#: The kinds of event that change what the table shows (output lines never do).
WATCHED_TYPES = ("state", "probe", "supervisor")


def watch_status(client: ControlClient, *, out: TextIO | None = None) -> int:
    """Redraw until Ctrl-C (exit 0); exit 1 if no supervisor runs, or once it has gone."""
    out = sys.stdout if out is None else out
    try:
        while True:
            if not _follow(client, out):
                break
    except KeyboardInterrupt:
        return 0
    except ControlError as exc:
        print(exc, file=sys.stderr)
        return 1
    print("The supervisor has gone away", file=sys.stderr)
    return 1


def _follow(client: ControlClient, out: TextIO) -> bool:
    """Draw from one event stream; True if the stream dropped us (too slow: connect again),
    False once it ended (the supervisor has gone)."""
    health: dict[str, Any] | None = None
    for line in client.events(types=WATCHED_TYPES):
        event = parse(line)
        if isinstance(event, Dropped):
            return True
        if isinstance(event, Snapshot):
            health = dict(event.health)
        elif isinstance(event, StateChange | SupervisorLine):
            health = client.health()
        elif isinstance(event, ProbeResult) and event.ok and health is not None:
            for service in health["services"]:
                if service["name"] == event.service:
                    service["last_health_check"] = event.ts
        if health is not None:
            out.write(CLEAR + render_status_table(health))
            out.flush()
    return False
