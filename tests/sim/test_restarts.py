"""Restart, backoff, give-up, critical, exit 78, stable_after and health: scripted histories."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from hearthlink_trio.supervisor.policy import FAILURE_RETRY_INTERVAL, STARTING_PROBE_INTERVAL
from hearthlink_trio.supervisor.state import State
from tests.sim.harness import Script, no_process_left, simulate

ONE = {"command": ["svc"], "port": 1}


def stack(restart: dict[str, object] | None = None, **services: dict[str, object]) -> dict:
    return {
        "health": {"startup_interval": 5, "startup_period": 60, "steady_interval": 30},
        "restart": {"max_attempts": 5, "initial_backoff": 1, "max_backoff": 8, **(restart or {})},
        **{f"services.{name}": table for name, table in services.items()},
    }


async def test_crash_loop_backs_off_doubling_then_gives_up(
    tmp_path: Path, clock: MockClock
) -> None:
    async with simulate(tmp_path, stack(svc=ONE), {"svc": Script(exit_after=0)}) as sim:
        await sim.until_state("svc", State.FAILED)
        # Started 1 + max_attempts times; waits 1, 2, 4, 8, 8 (capped).
        assert sim.launcher.times("svc") == [0, 1, 3, 7, 15, 23]
        assert sim.messages("restarted") == [
            "Service svc restarted (attempt 1), next backoff: 2s",
            "Service svc restarted (attempt 2), next backoff: 4s",
            "Service svc restarted (attempt 3), next backoff: 8s",
            "Service svc restarted (attempt 4), next backoff: 8s",
            "Service svc restarted (attempt 5), next backoff: 8s",
        ]
        assert sim.messages("gave_up") == ["Service svc has failed 5 times, not restarting"]
        status = sim.status("svc")
        assert (status["status"], status["restart_count"]) == ("error", 5)
        assert status["error_message"] == "exited (exit status 1)"
        assert sim.supervisor.overall_status() == "degraded"
    assert sim.result == [0]


async def test_a_critical_service_giving_up_stops_everything_with_exit_1(
    tmp_path: Path, clock: MockClock
) -> None:
    config = stack(
        {"max_attempts": 1}, db={**ONE, "critical": True}, web={"command": ["w"], "port": 2}
    )
    async with simulate(tmp_path, config, {"db": Script(exit_after=0.5)}) as sim:
        await sim.supervisor.stopped.wait()
    assert sim.result == [1]
    assert "Fatal: critical service db gave up: exited (exit status 1), stopping all services" in (
        sim.lines()
    )
    assert no_process_left(sim)


async def test_exit_78_fails_at_once_with_its_last_line(tmp_path: Path, clock: MockClock) -> None:
    script = Script(exit_after=0.2, exit_code=78, output=("starting", f"key {'s' * 3} is wrong"))
    async with simulate(tmp_path, stack(svc=ONE), {"svc": script}) as sim:
        await sim.until_state("svc", State.FAILED)
        assert sim.launcher.times("svc") == [0]
        assert sim.status("svc")["error_message"] == "key sss is wrong"
        assert sim.messages("gave_up") == [
            "svc service exited with status 78 (configuration error), not restarting"
        ]


async def test_a_secret_in_the_last_line_is_masked(tmp_path: Path, clock: MockClock) -> None:
    from tests.sim.harness import TOKEN

    script = Script(exit_after=0.2, exit_code=78, output=(f"bad token {TOKEN}",))
    async with simulate(tmp_path, stack(svc=ONE), {"svc": script}) as sim:
        await sim.until_state("svc", State.FAILED)
        assert sim.status("svc")["error_message"] == "bad token ***"


async def test_restart_count_resets_once_healthy_for_stable_after(
    tmp_path: Path, clock: MockClock
) -> None:
    scripts = {"svc": [Script(exit_after=0.5), Script(exit_after=0.5), Script()]}
    async with simulate(tmp_path, stack({"stable_after": 10}, svc=ONE), scripts) as sim:
        await sim.until(lambda: len(sim.launcher.times("svc")) == 3)
        third = sim.launcher.times("svc")[2]
        await sim.until(lambda: sim.status("svc")["restart_count"] == 0)
        # First pass ~0.05 s after the third start; reset stable_after later, not at a probe.
        now = round(trio.current_time() - sim.t0, 2)
        assert now == pytest.approx(third + STARTING_PROBE_INTERVAL + 0.001 + 10, abs=0.01)
        assert sim.status("svc")["restart_backoff"] == 1


async def test_probe_schedule_fast_then_startup_interval_then_steady(
    tmp_path: Path, clock: MockClock
) -> None:
    script = Script(ready_after=2.5 * STARTING_PROBE_INTERVAL, unhealthy_after=75)
    config = stack(svc=ONE)
    config["health"]["failure_threshold"] = 3  # type: ignore[index]
    async with simulate(tmp_path, config, {"svc": script}) as sim:
        await sim.until(lambda: len(sim.launcher.times("svc")) == 2)
        times = [round(t - sim.t0, 3) for t, name, _ in sim.prober.probes if name == "svc"]
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
        # Fast probes before the first pass (each probe takes 1 ms here)...
        assert gaps[:2] == pytest.approx([STARTING_PROBE_INTERVAL + 0.001] * 2)
        # ... then every startup_interval until 60 s after supervisor start, then 30 s ...
        assert gaps[3:14] == pytest.approx([5.001] * 11)
        assert 30.001 in gaps
        # ... and after a failure, re-probe at short spacing: three failures, a restart.
        assert gaps[-2:] == pytest.approx([FAILURE_RETRY_INTERVAL + 0.001] * 2)
        assert sim.messages("unhealthy") == ["svc service unhealthy (HTTP 503), scheduling restart"]


async def test_one_failed_probe_below_the_threshold_does_not_restart(
    tmp_path: Path, clock: MockClock
) -> None:
    scripts = {"svc": Script(unhealthy_after=10)}
    async with simulate(tmp_path, stack(svc=ONE), scripts) as sim:
        await sim.until_state("svc", State.UNHEALTHY)
        assert sim.status("svc")["status"] == "running"
        assert sim.supervisor.overall_status() == "degraded"
        assert len(sim.launcher.times("svc")) == 1


async def test_a_program_that_cannot_start_backs_off_and_gives_up(
    tmp_path: Path, clock: MockClock
) -> None:
    config = stack({"max_attempts": 2}, svc=ONE)
    async with simulate(tmp_path, config, {"svc": Script(start_error=True)}) as sim:
        await sim.until_state("svc", State.FAILED)
        assert sim.launcher.times("svc") == [0, 1, 3]
        assert sim.status("svc")["error_message"] == "could not start: No such file or directory"


async def test_a_spawn_failing_with_any_error_is_the_service_failure(
    tmp_path: Path, clock: MockClock
) -> None:
    # subprocess raises ValueError for a NUL byte in an argument or the environment: the
    # service fails with the reason, the supervisor carries on.
    config = stack({"max_attempts": 1}, svc=ONE)
    script = Script(start_raises=ValueError("embedded null byte"))
    async with simulate(tmp_path, config, {"svc": script}) as sim:
        await sim.until_state("svc", State.FAILED)
        assert sim.launcher.times("svc") == [0, 1]
        assert sim.status("svc")["error_message"] == "could not start: embedded null byte"


async def test_startup_grace_failures_do_not_count_until_startup_period(
    tmp_path: Path, clock: MockClock
) -> None:
    config = stack({"max_attempts": 0}, svc=ONE)
    config["health"]["startup_period"] = 2  # type: ignore[index]
    async with simulate(tmp_path, config, {"svc": Script(ready_after=1000)}) as sim:
        await sim.until_state("svc", State.FAILED)
        # 2 s of grace from the process start, then three counted failures in a row.
        assert 2.0 < trio.current_time() - sim.t0 < 2.3
        assert sim.launcher.times("svc") == [0]
        assert sim.messages("unhealthy") == ["svc service unhealthy (HTTP 503), scheduling restart"]


@pytest.mark.parametrize("backoff", [0.0, 0.1])
async def test_zero_and_fractional_backoffs(
    tmp_path: Path, backoff: float, clock: MockClock
) -> None:
    config = stack({"initial_backoff": backoff, "max_attempts": 3, "max_backoff": 1}, svc=ONE)
    async with simulate(tmp_path, config, {"svc": Script(exit_after=0)}) as sim:
        await sim.until_state("svc", State.FAILED)
        assert sim.launcher.times("svc") == pytest.approx([0, backoff, 3 * backoff, 7 * backoff])
        expected = f"next backoff: {min(1, 2 * backoff):g}s"
        assert sim.messages("restarted")[0].endswith(expected)
