"""Synapse's token bucket and circuit breaker, on a fake clock."""

from __future__ import annotations

import pytest

from hearthlink_trio.services.synapse.guard import (
    BreakerOpen,
    Circuit,
    CircuitBreaker,
    TokenBucket,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tripped_and_waited(clock: Clock) -> CircuitBreaker:
    """A breaker (threshold 1, reset after 30 s) that failed once, 30 s ago on ``clock``."""
    breaker = CircuitBreaker(threshold=1, reset_after=30, clock=clock)
    breaker.before_call()
    breaker.failure()
    clock.now += 30
    return breaker


def test_bucket_grants_the_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=50, burst=100, clock=clock)
    assert [bucket.take() for _ in range(100)] == [0.0] * 100
    wait = bucket.take()
    assert wait == pytest.approx(1 / 50)
    clock.now += 0.1  # five tokens
    assert [bucket.take() for _ in range(5)] == [0.0] * 5
    assert bucket.take() > 0
    clock.now += 3600  # never more than the burst
    assert sum(bucket.take() == 0.0 for _ in range(150)) == 100


def test_bucket_with_rate_zero_never_refills() -> None:
    bucket = TokenBucket(rate=0, burst=1, clock=Clock())
    assert bucket.take() == 0.0
    assert bucket.take() == float("inf")


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=5, reset_after=30, clock=clock)
    for _ in range(4):
        breaker.before_call()
        breaker.failure()
    breaker.before_call()
    breaker.success()  # a success in between resets the count
    for _ in range(4):
        breaker.before_call()
        breaker.failure()
    assert breaker.state is Circuit.CLOSED
    breaker.before_call()
    breaker.failure()
    assert breaker.state is Circuit.OPEN
    with pytest.raises(BreakerOpen) as refused:
        breaker.before_call()
    assert refused.value.retry_after == pytest.approx(30)
    clock.now += 29.5
    with pytest.raises(BreakerOpen):
        breaker.before_call()


def test_half_open_allows_one_trial_whose_verdict_decides() -> None:
    clock = Clock()
    breaker = tripped_and_waited(clock)
    assert breaker.state is Circuit.HALF_OPEN
    breaker.before_call()  # the trial
    with pytest.raises(BreakerOpen):
        breaker.before_call()  # no second one while it runs
    breaker.failure()
    assert breaker.state is Circuit.OPEN
    clock.now += 30
    breaker.before_call()
    breaker.success()
    assert breaker.state is Circuit.CLOSED
    breaker.before_call()


def test_an_abandoned_trial_frees_the_next_call_to_be_the_trial() -> None:
    breaker = tripped_and_waited(Clock())
    breaker.before_call()
    breaker.abandon()
    assert breaker.state is Circuit.HALF_OPEN
    breaker.before_call()
    breaker.success()
    assert breaker.state is Circuit.CLOSED
