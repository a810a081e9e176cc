"""A real stack's shapes: tasks, dependency conditions, restart policies, probes, replicas."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from hearthlink_trio.supervisor.state import State
from tests.sim.harness import Script, simulate

BASE = {
    "health": {"startup_interval": 5, "startup_period": 10, "steady_interval": 30},
    "restart": {"max_attempts": 2, "initial_backoff": 1, "max_backoff": 4},
}


def config(**tables: dict[str, object]) -> dict[str, object]:
    return {**BASE, **{f"services.{name}": table for name, table in tables.items()}}


def task(**more: object) -> dict[str, object]:
    return {"command": ["task"], "kind": "task", **more}


def svc(port: int, **more: object) -> dict[str, object]:
    return {"command": ["svc"], "port": port, **more}


async def test_a_task_that_exits_0_is_completed_and_lets_its_dependent_start(
    tmp_path: Path, clock: MockClock
) -> None:
    cfg = config(
        db=svc(1),
        migrate=task(depends_on=["db"]),
        app=svc(2, depends_on={"migrate": "completed", "db": "healthy"}),
    )
    scripts = {"db": Script(ready_after=1), "migrate": Script(exit_after=2, exit_code=0)}
    async with simulate(tmp_path, cfg, scripts) as sim:
        await sim.until_state("app", State.HEALTHY)
        assert sim.launcher.times("migrate") == pytest.approx([1.001], abs=0.06)
        assert sim.launcher.times("app")[0] >= sim.launcher.times("migrate")[0] + 2
        status = sim.status("migrate")
        assert (status["state"], status["status"], status["completed"]) == (
            "completed",
            "stopped",
            True,
        )
        assert "migrate task completed (exit status 0)" in sim.lines()
        assert sim.supervisor.overall_status() == "healthy"
        # A dependency's later restart does not run the task again...
        sim.supervisor.restart("db")
        await sim.until(lambda: len(sim.launcher.times("db")) == 2)
        await sim.until_state("db", State.HEALTHY)
        assert len(sim.launcher.times("migrate")) == 1
        # ...a manual restart does.
        assert sim.supervisor.restart("migrate") == "restarting"
        await sim.until(lambda: len(sim.launcher.times("migrate")) == 2)
        await sim.until_state("migrate", State.COMPLETED)


async def test_a_failing_task_is_retried_then_its_dependent_waits_naming_it(
    tmp_path: Path, clock: MockClock
) -> None:
    cfg = config(migrate=task(), app=svc(2, depends_on={"migrate": "completed"}))
    async with simulate(tmp_path, cfg, {"migrate": Script(exit_after=0.5, exit_code=3)}) as sim:
        await sim.until_state("migrate", State.FAILED)
        assert len(sim.launcher.times("migrate")) == 3  # on-failure: 1 + max_attempts
        expected = "waiting for migrate to complete (migrate failed: exited (exit status 3))"
        await sim.until(lambda: sim.status("app")["error_message"] == expected, limit=1)
        assert sim.state("app") is State.WAITING
        assert sim.launcher.times("app") == []


async def test_a_critical_task_that_gives_up_stops_everything(
    tmp_path: Path, clock: MockClock
) -> None:
    cfg = config(migrate=task(critical=True, restart="never"), app=svc(2))
    async with simulate(tmp_path, cfg, {"migrate": Script(exit_after=0.5)}) as sim:
        await sim.supervisor.stopped.wait()
    assert sim.result == [1]
    assert len(sim.launcher.times("migrate")) == 1


async def test_started_condition_does_not_wait_for_health(tmp_path: Path, clock: MockClock) -> None:
    cfg = config(cache=svc(1), web=svc(2, depends_on={"cache": "started"}))
    async with simulate(tmp_path, cfg, {"cache": Script(ready_after=5)}) as sim:
        await sim.until(lambda: bool(sim.launcher.times("web")))
        assert sim.launcher.times("web")[0] < 0.1
        assert sim.state("cache") is State.STARTING


@pytest.mark.parametrize(
    ("policy", "code", "starts", "state"),
    [
        ("always", 0, 3, State.FAILED),
        ("on-failure", 0, 1, State.COMPLETED),
        ("on-failure", 1, 3, State.FAILED),
        ("never", 1, 1, State.FAILED),
        ("never", 0, 1, State.COMPLETED),
    ],
)
async def test_restart_policies_of_services(
    tmp_path: Path, clock: MockClock, policy: str, code: int, starts: int, state: State
) -> None:
    cfg = config(svc=svc(1, restart=policy))
    async with simulate(tmp_path, cfg, {"svc": Script(exit_after=1, exit_code=code)}) as sim:
        await sim.until_state("svc", state)
        await trio.sleep(30)
        assert len(sim.launcher.times("svc")) == starts
        assert sim.state("svc") is state


async def test_a_log_probe_passes_on_a_matching_line_and_stays_passed(
    tmp_path: Path, clock: MockClock
) -> None:
    cfg = config(worker={"command": ["w"], "probe": {"log": r"ready after \d+ ms"}})
    scripts = {"worker": Script(output=("booting", "ready after 12 ms"))}
    async with simulate(tmp_path, cfg, scripts) as sim:
        await sim.until_state("worker", State.HEALTHY)
        assert sim.prober.probes == []  # the output is watched, nothing is probed
        await trio.sleep(120)
        assert sim.state("worker") is State.HEALTHY
        assert sim.status("worker")["port"] is None


async def test_a_log_probe_that_never_matches_restarts_after_the_startup_period(
    tmp_path: Path, clock: MockClock
) -> None:
    cfg = config(worker={"command": ["w"], "probe": {"log": "ready"}})
    async with simulate(tmp_path, cfg, {"worker": Script(output=("booting",))}) as sim:
        await sim.until(lambda: len(sim.launcher.times("worker")) == 2)
        assert 10 <= sim.launcher.times("worker")[1] < 13
        assert sim.messages("unhealthy")[0] == (
            "worker service unhealthy (no output line matched 'ready' yet), scheduling restart"
        )


async def test_probe_none_is_ready_when_started_and_a_crash_is_still_seen(
    tmp_path: Path, clock: MockClock
) -> None:
    cfg = config(worker={"command": ["w"], "probe": "none"})
    async with simulate(tmp_path, cfg, {"worker": [Script(exit_after=5), Script()]}) as sim:
        await sim.until_state("worker", State.HEALTHY)
        assert round(clock.current_time() - sim.t0, 3) == 0
        await sim.until(lambda: len(sim.launcher.times("worker")) == 2)
        assert sim.launcher.times("worker")[1] == 6  # exit at 5, backoff 1


async def test_replicas_are_services_of_their_own_and_restart_by_table_name(
    tmp_path: Path, clock: MockClock
) -> None:
    cfg = config(web=svc(7000, replicas=3, command=["web", "--port", "{port}", "--n", "{replica}"]))
    async with simulate(tmp_path, cfg) as sim:
        await sim.until(lambda: sim.supervisor.overall_status() == "healthy")
        names = [s["name"] for s in sim.supervisor.health()["services"]]
        assert names == ["web-1", "web-2", "web-3"]
        assert [sim.status(n)["port"] for n in names] == [7000, 7001, 7002]
        logs = tmp_path / "data" / "logs"
        assert all((logs / f"{n}.log").exists() for n in names)  # `hearthlink logs web-2`
        argv = sim.launcher.current["web-2"]
        assert argv.env["HEARTHLINK_WEB_3_URL"] == "http://127.0.0.1:7002"
        assert sim.supervisor.config.service("web-2").argv == ("web", "--port", "7001", "--n", "2")
        sim.supervisor.restart("web-2")
        await sim.until(lambda: len(sim.launcher.times("web-2")) == 2)
        assert [len(sim.launcher.times(n)) for n in names] == [1, 2, 1]
        answer = sim.supervisor.restart("web")
        assert answer == "web-1: restarting; web-2: restarting; web-3: restarting", answer
        # Every replica restarts once more, and only once.
        await sim.until(lambda: [len(sim.launcher.times(n)) for n in names] == [2, 3, 2], limit=5)
        await trio.sleep(5)
        assert [len(sim.launcher.times(n)) for n in names] == [2, 3, 2]


async def test_environment_precedence(tmp_path: Path, clock: MockClock) -> None:
    (tmp_path / "all.env").write_text("A=all\nB=all\nC=all\nHEARTHLINK_SERVICE=spoofed\n")
    (tmp_path / "svc.env").write_text("B=svc\nC=svc\n")
    cfg = config(svc=svc(1, env_file="svc.env", env={"C": "table"}))
    cfg["supervisor"] = {"data_dir": str(tmp_path / "data"), "env_file": "all.env"}
    async with simulate(tmp_path, cfg) as sim:
        await sim.until_state("svc", State.HEALTHY)
        env = sim.launcher.current["svc"].env
    assert (env["A"], env["B"], env["C"]) == ("all", "svc", "table")
    assert env["HEARTHLINK_SERVICE"] == "svc"  # injected values win over env files


async def test_kill_mode_and_stop_signal_reach_the_stop(tmp_path: Path, clock: MockClock) -> None:
    cfg = config(db=svc(1, kill_mode="mixed", stop_signal="SIGINT"), web=svc(2))
    async with simulate(tmp_path, cfg) as sim:
        await sim.until(lambda: sim.supervisor.overall_status() == "healthy")
        db, web = sim.launcher.current["db"], sim.launcher.current["web"]
    assert (db.kill_mode, db.signals) == ("mixed", [signal.SIGINT])
    assert (web.kill_mode, web.signals) == ("group", [signal.SIGTERM])
