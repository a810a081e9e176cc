"""The backoff and probe-schedule policy: pure functions of the time given."""

from __future__ import annotations

from hearthlink_trio.config.resolved import Health, Restart
from hearthlink_trio.supervisor.policy import (
    FAILURE_RETRY_INTERVAL,
    STARTING_PROBE_INTERVAL,
    ProbeTracker,
    Verdict,
    backoff_delay,
)


def test_backoff_doubles_from_initial_and_caps() -> None:
    policy = Restart()
    assert [backoff_delay(n, policy) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    fast = Restart(initial_backoff=0.1, max_backoff=0.4)
    assert [backoff_delay(n, fast) for n in range(1, 5)] == [0.1, 0.2, 0.4, 0.4]
    assert backoff_delay(3, Restart(initial_backoff=0)) == 0


def test_failures_during_startup_grace_do_not_count() -> None:
    tracker = ProbeTracker(Health(startup_period=10), supervisor_start=0, process_start=0)
    for t in range(9):
        assert tracker.observe(False, float(t)) is Verdict.WAITING
        assert tracker.next_delay(float(t)) == STARTING_PROBE_INTERVAL
    assert tracker.observe(False, 10.0) is Verdict.FAILED
    assert tracker.observe(False, 10.1) is Verdict.FAILED
    assert tracker.observe(False, 10.2) is Verdict.UNHEALTHY


def test_after_first_pass_every_failure_counts_and_one_pass_resets() -> None:
    tracker = ProbeTracker(Health(), supervisor_start=0, process_start=0)
    assert tracker.observe(True, 1) is Verdict.FIRST_PASS
    assert tracker.observe(False, 2) is Verdict.FAILED
    assert tracker.next_delay(2) == FAILURE_RETRY_INTERVAL
    assert tracker.observe(False, 3) is Verdict.FAILED
    assert tracker.observe(True, 4) is Verdict.PASSED
    assert tracker.observe(False, 5) is Verdict.FAILED
    assert tracker.observe(False, 6) is Verdict.FAILED
    assert tracker.observe(False, 7) is Verdict.UNHEALTHY
