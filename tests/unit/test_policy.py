"""The backoff and probe-schedule policy: pure functions of the time given."""

from __future__ import annotations

import pytest

from hearthlink_trio.config.resolved import Health, Restart
from hearthlink_trio.supervisor.policy import (
    FAILURE_RETRY_INTERVAL,
    STARTING_PROBE_MAX,
    STARTING_PROBE_MIN,
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
        assert tracker.next_delay(float(t)) == (
            STARTING_PROBE_MIN if t == 0 else STARTING_PROBE_MAX
        )
    assert tracker.observe(False, 10.0) is Verdict.FAILED
    assert tracker.observe(False, 10.1) is Verdict.FAILED
    assert tracker.observe(False, 10.2) is Verdict.UNHEALTHY


def test_probes_before_the_first_pass_grow_from_5_ms_to_100_ms_with_the_process_age() -> None:
    tracker = ProbeTracker(Health(), supervisor_start=0, process_start=3.0)
    ages = [0.0, 0.004, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 30.0]
    delays = [tracker.next_delay(3.0 + age) for age in ages]
    assert delays == pytest.approx([0.005, 0.005, 0.005, 0.01, 0.025, 0.05, 0.1, 0.1, 0.1])
    # A service that listens after t is seen within about t/2: the probe after t comes by
    # then (here t = 0.3 s, from the first probe on).
    now, probes = 3.0, []
    while now < 3.3:
        now += tracker.next_delay(now)
        probes.append(now)
    assert probes[-1] - 3.3 <= 0.3 / 2
    assert len(probes) < 0.3 / 0.02  # fewer than a fixed 20 ms would make


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
