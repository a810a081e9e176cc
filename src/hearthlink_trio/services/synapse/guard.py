"""What stands between a caller and a plugin: a token bucket and a circuit breaker.

Both are plain objects with an injectable clock, so their rules are tested without a
server or real time. A call that either refuses never reaches the plugin.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; a call takes one."""

    def __init__(self, rate: float, burst: float, *, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def take(self) -> float:
        """Take a token: 0.0 when granted, else the seconds until one is available."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        if self.rate <= 0:
            return float("inf")
        return (1.0 - self._tokens) / self.rate


class Circuit(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class BreakerOpen(Exception):
    """The breaker refuses the call; ``retry_after`` seconds until a trial is allowed."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"circuit open, retry in {retry_after:.3g}s")
        self.retry_after = retry_after


@dataclass
class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``reset_after`` seconds open,
    lets one trial call through (half-open): its success closes the circuit, its failure
    opens it again for another ``reset_after``."""

    threshold: int
    reset_after: float
    clock: Clock = time.monotonic
    failures: int = 0
    _state: Circuit = Circuit.CLOSED
    _opened_at: float = 0.0
    _trial_running: bool = field(default=False, repr=False)

    @property
    def state(self) -> Circuit:
        if self._state is Circuit.OPEN and self.clock() - self._opened_at >= self.reset_after:
            return Circuit.HALF_OPEN
        return self._state

    def before_call(self) -> None:
        """Admit a call, or raise :class:`BreakerOpen`."""
        state = self.state
        if state is Circuit.CLOSED:
            return
        if state is Circuit.HALF_OPEN and not self._trial_running:
            self._state = Circuit.HALF_OPEN
            self._trial_running = True
            return
        if state is Circuit.HALF_OPEN:
            # A trial is under way: the others wait for its verdict.
            raise BreakerOpen(self.reset_after)
        raise BreakerOpen(self.reset_after - (self.clock() - self._opened_at))

    def success(self) -> None:
        self.failures = 0
        self._state = Circuit.CLOSED
        self._trial_running = False

    def failure(self) -> None:
        self.failures += 1
        if self._state is Circuit.HALF_OPEN or self.failures >= self.threshold:
            self._state = Circuit.OPEN
            self._opened_at = self.clock()
        self._trial_running = False

    def abandon(self) -> None:
        """An admitted call ended without a verdict (it was cancelled): free the trial."""
        self._trial_running = False
        if self._state is Circuit.HALF_OPEN:
            # Still half-open: the next call becomes the trial.
            self._state = Circuit.OPEN
            self._opened_at = self.clock() - self.reset_after
