"""Faults on the virtual clock: wall-clock steps, and the line of a stop that waits."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from trio.testing import MockClock

from hearthlink_trio.supervisor.state import State
from tests.sim.harness import Script, simulate

ONE = {"command": ["svc"], "port": 1}
STACK = {
    "health": {"startup_interval": 5, "startup_period": 60, "steady_interval": 30},
    "restart": {"max_attempts": 5, "initial_backoff": 1, "max_backoff": 8},
    "services.svc": ONE,
}


async def test_the_schedule_never_reads_wall_time(
    tmp_path: Path, clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wall clock steps a day forward, then back, at every reading: NTP at its worst.
    steps = itertools.cycle([86400.0, -86400.0, 3600.0, -7200.0])
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + next(steps))
    async with simulate(tmp_path, STACK, {"svc": Script(exit_after=0)}) as sim:
        await sim.until_state("svc", State.FAILED)
        # Exactly the backoff of a steady clock: 1, 2, 4, 8, 8 (capped).
        assert sim.launcher.times("svc") == [0, 1, 3, 7, 15, 23]


async def test_a_stop_that_waits_says_so_once_a_second(tmp_path: Path, clock: MockClock) -> None:
    config = {**STACK, "services.svc": {**ONE, "stop_timeout": 3.5}}
    async with simulate(tmp_path, config, {"svc": Script(honours_stop=False)}) as sim:
        await sim.until_state("svc", State.HEALTHY)
        pid = sim.status("svc")["pid"]
        sim.supervisor.shutdown()
        await sim.supervisor.stopped.wait()
    assert sim.messages("waiting_to_stop") == [
        f"waiting for svc to stop (pid {pid}, SIGTERM sent {n}s ago, 1 process left in its group)"
        for n in (1, 2, 3)
    ]
