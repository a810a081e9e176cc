"""Pure supervision policy: the restart backoff and the health-probe schedule.

No I/O and no clock of its own: callers pass ``now``, so the same code runs on trio's real
clock and on its virtual one in tests.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hearthlink_trio.config.resolved import Health, Restart

#: Before a service's first pass the probe period grows with the time since its process
#: started: this share of it, at least STARTING_PROBE_MIN and at most STARTING_PROBE_MAX.
#: A service that listens after t is noticed within about t/2 (5 ms for the quickest), and
#: one that takes a second to start costs 15 probes rather than 50 at a fixed 20 ms: a
#: refused connect is 0.1-0.25 ms of the supervisor's CPU, taken from the services that are
#: starting on the same cores.
STARTING_PROBE_GROWTH = 0.5
STARTING_PROBE_MIN = 0.005
STARTING_PROBE_MAX = 0.1
#: After a failed probe of a healthy service, re-probe this soon (or sooner, if the
#: configured period is shorter) instead of waiting a full period.
FAILURE_RETRY_INTERVAL = 1.0


def starting_probe_delay(since_start: float) -> float:
    """The probe period of a process ``since_start`` seconds old that has not passed yet."""
    return min(STARTING_PROBE_MAX, max(STARTING_PROBE_MIN, since_start * STARTING_PROBE_GROWTH))


def backoff_delay(attempt: int, policy: Restart) -> float:
    """Seconds to wait before restart number ``attempt`` (1-based): 1, 2, 4, … capped."""
    if attempt < 1:
        return 0.0
    delay = policy.initial_backoff * (2.0 ** (attempt - 1))
    return min(delay, policy.max_backoff)


class Verdict(enum.Enum):
    """What one probe result means for the service."""

    PASSED = "passed"  # healthy
    FIRST_PASS = "first_pass"  # healthy for the first time since this process started
    WAITING = "waiting"  # failed, but still within the start-up grace
    FAILED = "failed"  # failed, below the threshold
    UNHEALTHY = "unhealthy"  # failure_threshold consecutive failures: restart it


@dataclass
class ProbeTracker:
    """The probe schedule and failure count of one process incarnation.

    Before the first pass, probes come :func:`starting_probe_delay` apart and failures
    are start-up delay until ``startup_period`` has passed since the process started (a
    restarted service gets the same grace as a fresh one). After the first pass, the period
    is ``startup_interval`` until ``startup_period`` from supervisor start, then
    ``steady_interval``; every failure counts, and after one the next probe comes within
    :data:`FAILURE_RETRY_INTERVAL`.
    """

    health: Health
    supervisor_start: float
    process_start: float
    passed_once: bool = False
    consecutive_failures: int = 0

    def steady(self, now: float) -> bool:
        return now >= self.supervisor_start + self.health.startup_period

    def period(self, now: float) -> float:
        """The regular probe period at ``now`` for a service that has passed once."""
        if self.steady(now):
            return self.health.steady_interval
        return self.health.startup_interval

    def next_delay(self, now: float) -> float:
        """Seconds from ``now`` (the end of the last probe) to the next probe."""
        if not self.passed_once:
            return starting_probe_delay(now - self.process_start)
        period = self.period(now)
        if self.consecutive_failures:
            return min(period, FAILURE_RETRY_INTERVAL)
        return period

    def observe(self, passed: bool, now: float) -> Verdict:
        """Record one probe result taken at ``now``."""
        if passed:
            self.consecutive_failures = 0
            if not self.passed_once:
                self.passed_once = True
                return Verdict.FIRST_PASS
            return Verdict.PASSED
        if not self.passed_once and now < self.process_start + self.health.startup_period:
            return Verdict.WAITING
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.health.failure_threshold:
            return Verdict.UNHEALTHY
        return Verdict.FAILED
