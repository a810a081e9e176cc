"""The memory watch on the virtual clock, with scripted readings: two in a row over the limit
restart the service (counted, with backoff); one spike does not; no limit, no readings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio
from trio.testing import MockClock

from hearthlink_trio.supervisor.state import State
from tests.sim.harness import Sim, simulate

MIB = 1024 * 1024


class ScriptedMeter:
    """Memory readings by service, from the reading's time since its process was launched."""

    def __init__(self, sim: Sim, curves: dict[str, Callable[[int, float], int | None]]) -> None:
        self.sim = sim
        self.curves = curves
        self.reads: list[tuple[str, float]] = []

    def read(self, service: str, leader: int | None) -> int | None:
        process = self.sim.launcher.current[service]
        assert leader == process.pid
        nth = sum(1 for launch in self.sim.launcher.launches if launch.name == service)
        age = round(trio.current_time() - process.launched, 3)
        self.reads.append((service, round(trio.current_time() - self.sim.t0, 3)))
        curve = self.curves.get(service, lambda nth, age: 7 * MIB)
        return curve(nth, age)


def stack(**services: dict[str, object]) -> dict[str, object]:
    return {
        "health": {"startup_interval": 5, "startup_period": 60, "steady_interval": 30},
        "restart": {"max_attempts": 2, "initial_backoff": 1, "max_backoff": 8},
        **{f"services.{name}": table for name, table in services.items()},
    }


async def test_two_readings_in_a_row_over_the_limit_restart_it(
    tmp_path: Path, clock: MockClock
) -> None:
    def hog(nth: int, age: float) -> int:
        if nth > 1:
            return 50 * MIB  # the new process behaves
        # A spike at 2 s is forgiven; 4 s and 5 s in a row are not.
        return {2.0: 150 * MIB, 4.0: 530 * MIB, 5.0: 530 * MIB}.get(age, 50 * MIB)

    config = stack(
        hog={"command": ["hog"], "probe": "none", "max_memory": "512M"},
        calm={"command": ["calm"], "probe": "none"},
    )
    async with simulate(tmp_path, config) as sim:
        meter = ScriptedMeter(sim, {"hog": hog})
        sim.supervisor.ctx.memory = meter  # type: ignore[assignment]
        await sim.until(lambda: len(sim.launcher.times("hog")) == 2)
        await trio.sleep(30)
        assert sim.launcher.times("hog") == [0, 6]  # stopped at 5 s, backoff 1 s
        assert sim.launcher.times("calm") == [0]
        assert sim.messages("over_memory") == [
            "hog service memory 530 MiB over max_memory 512 MiB, scheduling restart"
        ]
        assert "Service hog restarted (attempt 1), next backoff: 2s" in sim.messages("restarted")
        # Read once a second, only the service with a limit.
        assert {name for name, _ in meter.reads} == {"hog"}
        assert [t for _, t in meter.reads][:5] == [1, 2, 3, 4, 5]
        status = sim.status("hog")
        assert status["state"] == "healthy"
        assert status["restart_count"] == 1
        assert status["memory_bytes"] == 50 * MIB
        # `status` shows every service's memory, limited or not.
        assert sim.status("calm")["memory_bytes"] == 7 * MIB


async def test_a_service_always_over_its_limit_gives_up_like_a_crash_loop(
    tmp_path: Path, clock: MockClock
) -> None:
    config = stack(hog={"command": ["hog"], "probe": "none", "max_memory": 1000})
    async with simulate(tmp_path, config) as sim:
        sim.supervisor.ctx.memory = ScriptedMeter(sim, {"hog": lambda nth, age: 2000})  # type: ignore[assignment]
        await sim.until_state("hog", State.FAILED)
        # 2 s to be over twice, then backoffs of 1 and 2 s.
        assert sim.launcher.times("hog") == [0, 3, 7]
        status = sim.status("hog")
        assert status["restart_count"] == 2
        assert status["error_message"] == "memory 2.0 KiB over max_memory 1000 B"
