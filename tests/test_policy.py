"""Backoff and probe schedules, on trio's virtual clock (no real time passes)."""

from __future__ import annotations

import itertools
import logging
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from hearthlink_trio.config import HealthSection, RestartSection, load_config
from hearthlink_trio.output import Console
from hearthlink_trio.policy import (
    FAILURE_RETRY_INTERVAL,
    STARTING_PROBE_INTERVAL,
    ProbeTracker,
    Verdict,
    backoff_delay,
)
from hearthlink_trio.supervisor import End, Outcome, ServiceRunner, State, Supervisor
from tests.sup import write_config


def test_backoff_doubles_from_initial_and_caps() -> None:
    policy = RestartSection()
    assert [backoff_delay(n, policy) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    fast = RestartSection(initial_backoff=0.1, max_backoff=0.4)
    assert [backoff_delay(n, fast) for n in range(1, 5)] == [0.1, 0.2, 0.4, 0.4]
    assert backoff_delay(3, RestartSection(initial_backoff=0)) == 0


def test_failures_during_startup_grace_do_not_count() -> None:
    tracker = ProbeTracker(HealthSection(startup_period=10), supervisor_start=0, process_start=0)
    for t in range(9):
        assert tracker.observe(False, float(t)) is Verdict.WAITING
        assert tracker.next_delay(float(t)) == STARTING_PROBE_INTERVAL
    assert tracker.observe(False, 10.0) is Verdict.FAILED
    assert tracker.observe(False, 10.1) is Verdict.FAILED
    assert tracker.observe(False, 10.2) is Verdict.UNHEALTHY


def test_after_first_pass_every_failure_counts_and_one_pass_resets() -> None:
    tracker = ProbeTracker(HealthSection(), supervisor_start=0, process_start=0)
    assert tracker.observe(True, 1) is Verdict.FIRST_PASS
    assert tracker.observe(False, 2) is Verdict.FAILED
    assert tracker.next_delay(2) == FAILURE_RETRY_INTERVAL
    assert tracker.observe(False, 3) is Verdict.FAILED
    assert tracker.observe(True, 4) is Verdict.PASSED
    assert tracker.observe(False, 5) is Verdict.FAILED
    assert tracker.observe(False, 6) is Verdict.FAILED
    assert tracker.observe(False, 7) is Verdict.UNHEALTHY


def _supervisor(tmp_path: Path, health: dict[str, float], restart: dict[str, float]) -> Supervisor:
    path = write_config(
        tmp_path / "c.toml",
        {
            "supervisor": {"data_dir": str(tmp_path / "data")},
            "health": health,
            "restart": restart,
            "services.svc": {"command": ["true"], "port": 1},
        },
    )
    config = load_config(path, environ={})
    console = Console(sys.stdout.buffer, colour=False)
    return Supervisor(config, logging.getLogger("test"), token="t", vault_key=None, console=console)


class ScriptedProber:
    """Answers probes from a script of results and records when each probe happened."""

    def __init__(self, results: list[bool]) -> None:
        self.results = results
        self.times: list[float] = []

    async def probe(self, url: str) -> str | None:
        self.times.append(trio.current_time())
        ok = self.results.pop(0) if self.results else True
        return None if ok else "HTTP 503"


async def test_probe_schedule_on_virtual_clock(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    sup = _supervisor(
        tmp_path,
        {
            "startup_interval": 5,
            "startup_period": 60,
            "steady_interval": 30,
            "failure_threshold": 3,
        },
        {},
    )
    sup.started = trio.current_time()
    # Three start-up failures, the first pass, healthy until t≈70, then three failures.
    start_failures = [False] * 3
    healthy = [True] * 20
    prober = ScriptedProber([*start_failures, *healthy, False, False, False])
    sup.prober = prober  # type: ignore[assignment]
    runner = sup.runners["svc"]
    reason = await runner._health_loop()
    assert reason == "unhealthy (HTTP 503)"
    times = [round(t - sup.started, 3) for t in prober.times]
    # Fast probes before the first pass...
    assert times[:4] == [0.05, 0.1, 0.15, 0.2]
    # ... then every startup_interval until 60 s after supervisor start ...
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert gaps[3:14] == [5.0] * 11
    # ... then the steady period, and a failure is re-probed at short spacing.
    assert 30.0 in gaps
    assert gaps[-2:] == [FAILURE_RETRY_INTERVAL, FAILURE_RETRY_INTERVAL]
    assert runner.state is State.UNHEALTHY


async def test_restart_count_resets_after_stable_period(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    sup = _supervisor(
        tmp_path,
        {"startup_interval": 5, "startup_period": 0, "steady_interval": 30},
        {"stable_after": 10},
    )
    sup.started = trio.current_time()
    prober = ScriptedProber([True] * 5 + [False] * 3)
    sup.prober = prober  # type: ignore[assignment]
    runner = sup.runners["svc"]
    runner.restart_count = 2
    counts: list[tuple[float, int]] = []

    async def watch() -> None:
        while True:
            await sup.wait_changed()
            counts.append((trio.current_time() - sup.started, runner.restart_count))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await runner._health_loop()
        nursery.cancel_scope.cancel()
    resets = [t for t, c in counts if c == 0]
    # First pass at 0.05 s; the count goes to zero 10 s later, not at the next 30 s probe.
    assert resets and resets[0] == pytest.approx(10.05)


class ScriptedRunner(ServiceRunner):
    """A runner whose process 'crashes' at once, to time the restart loop."""

    starts: list[float]

    async def _incarnation(self, attempt: int) -> Outcome:
        self.starts.append(trio.current_time())
        await trio.sleep(0)
        return Outcome(End.EXITED, "exited (exit status 1)")


async def test_backoff_sequence_and_give_up_on_virtual_clock(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    sup = _supervisor(tmp_path, {}, {"max_attempts": 5, "initial_backoff": 1, "max_backoff": 8})
    runner = ScriptedRunner(sup, sup.config.services[0], 0, {})
    runner.starts = []
    sup.runners["svc"] = runner
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run)
        while runner.state is not State.FAILED:
            await sup.wait_changed()
        nursery.cancel_scope.cancel()
    starts = [round(t - t0, 3) for t in runner.starts]
    # Started 1 + max_attempts times; waits 1, 2, 4, 8, 8 (capped).
    assert starts == [0, 1, 3, 7, 15, 23]
    assert runner.restart_count == 5
    assert runner.snapshot()["status"] == "stopped"  # cancelled at the end
