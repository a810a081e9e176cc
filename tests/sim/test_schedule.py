"""Scheduled tasks on the virtual clock: a day of cron runs, overlaps, clock jumps, every N,
manual runs, and a failed run retried within that run only."""

from __future__ import annotations

import signal
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from hearthlink_trio.supervisor import schedule
from hearthlink_trio.supervisor.state import State
from tests.sim.harness import Script, no_process_left, simulate

#: Local midnight: the virtual wall clock starts here.
MIDNIGHT = datetime(2026, 3, 1).timestamp()
DAY = 24 * 3600


class WallClock:
    """The scheduler's wall clock: trio's virtual clock from midnight, plus a settable jump."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return MIDNIGHT + trio.current_time() + self.offset


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> WallClock:
    clock = WallClock()
    monkeypatch.setattr(schedule, "wall_clock", clock)
    return clock


def config(**task: object) -> dict[str, object]:
    return {
        "restart": {"max_attempts": 2, "initial_backoff": 4, "max_backoff": 8},
        "services.job": {"command": ["job"], "kind": "task", **task},
    }


DONE_IN_A_SECOND = {"job": Script(exit_after=1, exit_code=0)}


@pytest.fixture
def memory_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder in memory where there is one: each run records its process group with two
    fsyncs, which on a disk cost far more than the scheduling this measures."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        yield Path(folder)


async def test_a_day_of_every_five_minutes_is_288_runs_none_at_start(
    tmp_path: Path, clock: MockClock, wall: WallClock, memory_dir: Path
) -> None:
    cfg = {"supervisor": {"data_dir": str(memory_dir)}, **config(schedule="*/5 * * * *")}
    began = time.perf_counter()
    async with simulate(tmp_path, cfg, DONE_IN_A_SECOND) as sim:
        await sim.until(lambda: sim.state("job") is State.STOPPED)
        assert sim.status("job")["next_run"] == MIDNIGHT + 300
        assert sim.supervisor.overall_status() == "healthy"  # idle is not "starting"
        await trio.sleep(DAY + 10)
        times = sim.launcher.times("job")
        assert times == [300.0 * k for k in range(1, 289)]
        status = sim.status("job")
        assert status["state"] == "completed"
        assert status["last_outcome"] == "completed"
        assert status["last_run"] is not None
        assert status["next_run"] == MIDNIGHT + DAY + 300
        assert len(sim.messages("scheduled_run")) == 288
    assert no_process_left(sim)
    # A day of runs, each with its wake-ups once a minute, in well under a second of CPU
    # on an idle machine; the bound leaves room for a loaded one.
    assert time.perf_counter() - began < 10


async def test_a_time_that_comes_while_a_run_goes_is_skipped_and_logged(
    tmp_path: Path, clock: MockClock, wall: WallClock
) -> None:
    seven_minutes = {"job": Script(exit_after=420, exit_code=0)}
    async with simulate(tmp_path, config(schedule="*/5 * * * *"), seven_minutes) as sim:
        await trio.sleep(1600)
        assert sim.launcher.times("job") == [300, 900, 1500]
        skipped = sim.messages("schedule_skipped")
        assert skipped == [
            "Skipped the 2026-03-01 00:10:00 run of job task: its previous run is still going",
            "Skipped the 2026-03-01 00:20:00 run of job task: its previous run is still going",
        ]


async def test_a_clock_set_forward_runs_once_not_a_burst_and_set_back_waits_sensibly(
    tmp_path: Path, clock: MockClock, wall: WallClock
) -> None:
    async with simulate(tmp_path, config(schedule="*/5 * * * *"), DONE_IN_A_SECOND) as sim:
        await trio.sleep(310)
        assert sim.launcher.times("job") == [300]
        wall.offset = 3 * 3600  # three hours ahead: 36 missed times
        await trio.sleep(70)
        # One run, at the next reading of the clock (within a minute), not 36.
        later = sim.launcher.times("job")[1:]
        assert len(later) == 1 and 310 < later[0] <= 370
        await trio.sleep(600)
        # Then the times go on from the new clock: every 5 minutes of it.
        for t in sim.launcher.times("job")[2:]:
            assert (MIDNIGHT + t + wall.offset) % 300 == 0
        runs = len(sim.launcher.times("job"))
        wall.offset -= 2 * 3600  # two hours back: the next 5-minute time, not in two hours
        await trio.sleep(360)
        assert len(sim.launcher.times("job")) == runs + 1


async def test_every_n_seconds(tmp_path: Path, clock: MockClock, wall: WallClock) -> None:
    async with simulate(tmp_path, config(schedule="every 90"), DONE_IN_A_SECOND) as sim:
        await trio.sleep(400)
        # Whole multiples of 90 s of the wall clock (midnight is one).
        assert sim.launcher.times("job") == [90, 180, 270, 360]


async def test_restart_runs_a_scheduled_task_now(
    tmp_path: Path, clock: MockClock, wall: WallClock
) -> None:
    async with simulate(tmp_path, config(schedule="0 3 * * *"), DONE_IN_A_SECOND) as sim:
        await trio.sleep(10)
        assert sim.launcher.times("job") == []
        assert sim.supervisor.restart("job") == "running it now (it is scheduled)"
        await sim.until_state("job", State.COMPLETED)
        assert sim.launcher.times("job") == [10]
        assert sim.status("job")["next_run"] == MIDNIGHT + 3 * 3600
        await trio.sleep(3 * 3600)
        assert sim.launcher.times("job") == [10, 3 * 3600]


async def test_a_failed_run_retries_within_that_run_only(
    tmp_path: Path, clock: MockClock, wall: WallClock
) -> None:
    failing = {"job": Script(exit_after=1, exit_code=1)}
    async with simulate(tmp_path, config(schedule="every 300"), failing) as sim:
        await trio.sleep(330)
        # 1 + max_attempts starts, backoffs 4 and 8 after each 1 s run, then given up.
        assert sim.launcher.times("job") == [300, 305, 314]
        status = sim.status("job")
        assert status["state"] == "failed"
        assert status["last_outcome"] == "failed: exited (exit status 1)"
        await trio.sleep(300)
        # The next time runs it again, with its whole restart policy.
        assert sim.launcher.times("job") == [300, 305, 314, 600, 605, 614]


async def test_a_dependent_of_a_scheduled_task_starts_once_it_has_completed(
    tmp_path: Path, clock: MockClock, wall: WallClock
) -> None:
    cfg = {
        **config(schedule="every 300"),
        "services.web": {"command": ["web"], "port": 1, "depends_on": {"job": "completed"}},
    }
    async with simulate(tmp_path, cfg, DONE_IN_A_SECOND) as sim:
        await trio.sleep(100)
        assert sim.launcher.times("web") == []
        await sim.until_state("web", State.HEALTHY)
        assert sim.launcher.times("web")[0] == 301
        await trio.sleep(300)
        # The next run does not touch it.
        assert sim.launcher.times("web") == [301]


async def test_a_reload_applies_a_changed_schedule_and_leaves_the_others_alone(
    tmp_path: Path, clock: MockClock, wall: WallClock
) -> None:
    other = {"services.web": {"command": ["web"], "port": 1}}
    cfg = {**config(schedule="every 300"), **other}
    async with simulate(tmp_path, cfg, DONE_IN_A_SECOND) as sim:
        await sim.until_state("web", State.HEALTHY)
        assert sim.status("job")["next_run"] == MIDNIGHT + 300
        sim.rewrite({**config(schedule="every 120"), **other})
        sim.supervisor.on_signal(signal.SIGHUP)
        await sim.until(lambda: sim.messages("reloaded") != [])
        await sim.until(lambda: sim.status("job")["next_run"] == MIDNIGHT + 120)
        await trio.sleep(300)
        assert sim.launcher.times("job") == [120, 240]
        assert sim.launcher.times("web") == [0]  # untouched


async def test_stop_holds_a_scheduled_task_and_start_resumes_its_schedule(
    tmp_path: Path, clock: MockClock, wall: WallClock
) -> None:
    async with simulate(tmp_path, config(schedule="every 300"), DONE_IN_A_SECOND) as sim:
        await trio.sleep(310)
        assert sim.supervisor.start_service("job") == (
            "not stopped: it waits for its next scheduled time (restart runs it now)"
        )
        assert sim.supervisor.stop_service("job") == "stopping"
        await trio.sleep(600)
        assert sim.launcher.times("job") == [300]  # held: no run at 600 nor 900
        assert sim.state("job") is State.STOPPED
        assert sim.supervisor.start_service("job") == "starting"
        await trio.sleep(300)
        assert sim.launcher.times("job") == [300, 1200]
