"""Waiting for a scheduled task's times.

The times (:mod:`hearthlink_trio.config.schedule`) are computed from the wall clock
(:data:`wall_clock`, a seam the tests replace) but waited for on trio's clock, in naps of
at most :data:`RECHECK_SECONDS`: after each nap the wall clock is read again, so a clock set
forward runs the task once (not once per missed time) and a clock set back waits for the
time it now names.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from hearthlink_trio.config.schedule import Schedule, parse_schedule

__all__ = [
    "RECHECK_SECONDS",
    "Schedule",
    "next_due",
    "parse_schedule",
    "sleep_until_due",
    "wall_clock",
]

#: The longest nap between two readings of the wall clock while a run is waited for.
RECHECK_SECONDS = 60.0

#: Unix seconds now; replaced by the tests to move or jump the wall clock.
wall_clock: Callable[[], float] = time.time


def next_due(schedule: Schedule) -> float:
    """The first time ``schedule`` names after now (the wall clock)."""
    return schedule.next_after(wall_clock())


async def sleep_until_due(schedule: Schedule, due: float) -> float:
    """Sleep until the wall clock reaches ``due``; returns the time that was reached.

    A clock set back in the meantime makes the time it now names the one waited for (if
    sooner); a clock set forward past ``due`` ends the wait at the next reading.
    """
    while True:
        now = wall_clock()
        if now >= due:
            return due
        due = min(due, schedule.next_after(now))
        await trio.sleep(min(due - now, RECHECK_SECONDS))
