"""A task's ``schedule``: a 5-field cron expression (local time) or ``every N`` seconds.

Pure: parsing and the next time after a given moment. The waiting (on trio's clock, with
the wall clock read again as it goes) is the supervisor's. The cron parser (cronsim) is
imported only when a cron expression is parsed or computed, so a config without one never
loads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

#: How many fields a cron expression has: minute, hour, day of month, month, day of week.
CRON_FIELDS = 5
#: The longest ``every``: a year. Past it the next time is a date no clock will show.
MAX_EVERY_SECONDS = 366 * 24 * 3600


@dataclass(frozen=True)
class Schedule:
    """A parsed ``schedule``: ``every`` seconds, or a cron expression."""

    text: str
    every: float = 0.0
    cron: str = ""

    def next_after(self, now: float) -> float:
        """The first time this schedule names strictly after ``now`` (both Unix seconds).

        ``every N`` counts from the Unix epoch (whole multiples of N), so the times do not
        drift with how long a run took or when the supervisor started.
        """
        if self.every:
            return (math.floor(now / self.every) + 1) * self.every
        from cronsim import CronSim

        # Naive local time in and out: the expression speaks of the local clock.
        return next(CronSim(self.cron, datetime.fromtimestamp(now))).timestamp()


def parse_schedule(text: str) -> Schedule:
    """``text`` as a :class:`Schedule`.

    Raises:
        ValueError: the text is neither ``every N`` (N > 0 seconds) nor a valid 5-field
            cron expression; the message says what is wrong.
    """
    words = text.split()
    if words and words[0] == "every":
        if len(words) != 2:
            raise ValueError(f"write 'every N' with N in seconds (got {text!r})")
        try:
            every = float(words[1])
        except ValueError:
            raise ValueError(f"'every' needs a number of seconds (got {words[1]!r})") from None
        if not math.isfinite(every) or every <= 0:
            raise ValueError(f"'every' needs a number of seconds above 0 (got {words[1]!r})")
        if every > MAX_EVERY_SECONDS:
            raise ValueError(
                f"'every' is at most {MAX_EVERY_SECONDS} seconds, a year (got {words[1]!r}; "
                "a cron expression names rarer times)"
            )
        return Schedule(text, every=every)
    if len(words) != CRON_FIELDS:
        raise ValueError(
            f"{text!r} is not a 5-field cron expression (minute hour day month weekday, "
            "e.g. '*/5 * * * *') nor 'every N'"
        )
    from cronsim import CronSim, CronSimError

    cron = " ".join(words)
    try:
        CronSim(cron, datetime.now())
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression {text!r}: {exc}") from None
    return Schedule(text, cron=cron)
