"""Rolling restarts of services with a held socket, on the virtual clock."""

from __future__ import annotations

import signal
from pathlib import Path

import trio
from trio.testing import MockClock

from hearthlink_trio.supervisor.state import State
from tests.helpers import free_port
from tests.sim.harness import Script, no_process_left, simulate

HEALTH = {"startup_interval": 5, "startup_period": 60, "steady_interval": 30}


def stack(**services: dict[str, object]) -> dict[str, object]:
    return {"health": HEALTH, **{f"services.{name}": t for name, t in services.items()}}


WEB = {"command": ["w"], "port": 1, "socket": True}


async def test_the_new_process_starts_beside_the_old_which_stops_once_it_is_ready(
    tmp_path: Path, clock: MockClock
) -> None:
    scripts = {"web": [Script(), Script(ready_after=2)]}
    async with simulate(tmp_path, stack(web=WEB), scripts) as sim:
        await sim.until_state("web", State.HEALTHY)
        old = sim.launcher.current["web"]
        asked = sim.supervisor.ctx.records["web"]
        assert sim.supervisor.restart("web") == (
            f"rolling restart: a new process starts beside pid {old.pid}, which serves until "
            "the new one is ready"
        )
        await sim.until(lambda: bool(sim.messages("stopped")))
        new = sim.launcher.current["web"]
        (new_ready,) = (t for t, event, _, _ in sim.events.records if event == "rolling_ready")
        launched_at = round(new.launched - sim.t0, 3)
        ready_at = round(new_ready - sim.t0, 3)
        # Started beside the old one; the old one stopped only once the new one passed.
        assert ready_at - launched_at >= 2
        assert sim.when("Stopped web service") >= ready_at
        assert old.signals == [signal.SIGTERM]
        assert new.alive and new.signals == []
        # The service never stopped meanwhile: healthy throughout, then the new pid.
        await sim.until_state("web", State.HEALTHY)
        assert asked.pid == new.pid
        assert sim.status("web")["status"] == "running"
        # The old one's exit was no crash: nothing else was started, nothing counted.
        assert sim.messages("exited") == [] and len(sim.launcher.launches) == 2
        assert asked.restart_count == 0
    assert no_process_left(sim)


async def test_a_new_process_that_fails_is_stopped_and_the_old_keeps_serving(
    tmp_path: Path, clock: MockClock
) -> None:
    scripts = {"web": [Script(), Script(exit_after=0.5, ready_after=1), Script(ready_after=1000)]}
    async with simulate(tmp_path, stack(web=WEB), scripts) as sim:
        await sim.until_state("web", State.HEALTHY)
        old = sim.launcher.current["web"]
        sim.supervisor.restart("web")
        await sim.until(lambda: bool(sim.messages("rolling_failed")))
        assert sim.messages("rolling_failed") == [
            "Rolling restart of web failed: the new process exited (exit status 1), "
            f"web keeps running (pid {old.pid})"
        ]
        # Never ready: given up after startup_period, stopped, the old one still serves.
        sim.supervisor.restart("web")
        await sim.until(lambda: len(sim.messages("rolling_failed")) == 2)
        assert sim.messages("rolling_failed")[1] == (
            "Rolling restart of web failed: the new process was not ready within 60s, "
            f"web keeps running (pid {old.pid})"
        )
        never_ready = sim.launcher.launches[-1].process
        assert never_ready.signals == [signal.SIGTERM] and not never_ready.alive
        assert old.alive and old.signals == []
        assert sim.state("web") is State.HEALTHY
        record = sim.supervisor.ctx.records["web"]
        assert record.pid == old.pid
        assert "rolling restart failed" in (record.error_message or "")
    assert no_process_left(sim)


async def test_replicas_are_replaced_one_at_a_time(tmp_path: Path, clock: MockClock) -> None:
    replicas = {**WEB, "replicas": 3}
    scripts = {f"web-{n}": [Script(), Script(ready_after=2)] for n in (1, 2, 3)}
    async with simulate(tmp_path, stack(web=replicas), scripts) as sim:
        for n in (1, 2, 3):
            await sim.until_state(f"web-{n}", State.HEALTHY)
        first = {n: sim.launcher.current[f"web-{n}"] for n in (1, 2, 3)}
        began = round(clock.current_time() - sim.t0, 3)
        sim.supervisor.restart("web")
        await sim.until(lambda: all(p.returncode is not None for p in first.values()))
        starts = sorted(sim.launcher.times(f"web-{n}")[1] - began for n in (1, 2, 3))
        # Each successor starts once the one before is ready (2 s each).
        assert starts[1] - starts[0] >= 2 and starts[2] - starts[1] >= 2
        assert starts[2] < 6.5
        # At any moment at least three processes were up: each old one stopped after its
        # successor was ready.
        assert len(sim.messages("rolling_ready")) == 3
    assert no_process_left(sim)


async def test_a_reload_that_changes_the_service_rolls_it(tmp_path: Path, clock: MockClock) -> None:
    web = {**WEB, "port": free_port()}
    scripts = {"web": [Script(), Script(ready_after=2)]}
    async with simulate(tmp_path, stack(web=web), scripts) as sim:
        await sim.until_state("web", State.HEALTHY)
        old = sim.launcher.current["web"]
        runner = sim.supervisor.runners["web"]
        sim.rewrite(stack(web={**web, "env": {"V": "2"}}))
        sim.supervisor.on_signal(signal.SIGHUP)
        await sim.until(lambda: sim.supervisor.runners["web"] is not runner)
        new = sim.launcher.current["web"]
        assert new.env["V"] == "2" and new.alive
        (ready_at,) = (t for t, event, _, _ in sim.events.records if event == "rolling_ready")
        assert ready_at - new.launched >= 2
        assert sim.when("Stopped web service") >= round(ready_at - sim.t0, 3)
        # The new runner watches the successor: healthy, its pid, nothing else started.
        await sim.until_state("web", State.HEALTHY)
        assert sim.supervisor.runners["web"].service.env == {"V": "2"}
        assert sim.supervisor.ctx.records["web"].pid == new.pid
        assert len(sim.launcher.launches) == 2
        assert sim.supervisor.config.service("web").env == {"V": "2"}
        assert old.signals == [signal.SIGTERM]
    assert no_process_left(sim)


async def test_a_reload_whose_new_process_fails_keeps_the_old_config_running(
    tmp_path: Path, clock: MockClock
) -> None:
    web = {**WEB, "port": free_port()}
    scripts = {"web": [Script(), Script(exit_after=0.5, ready_after=1), Script()]}
    async with simulate(tmp_path, stack(web=web), scripts) as sim:
        await sim.until_state("web", State.HEALTHY)
        old = sim.launcher.current["web"]
        runner = sim.supervisor.runners["web"]
        sim.rewrite(stack(web={**web, "env": {"V": "2"}}))
        sim.supervisor.on_signal(signal.SIGHUP)
        await sim.until(lambda: bool(sim.messages("rolling_failed")))
        await trio.sleep(1)
        assert old.alive and old.signals == []
        assert sim.supervisor.runners["web"] is runner
        assert sim.supervisor.config.service("web").env == {}
        assert sim.state("web") is State.HEALTHY
        # A later reload tries again (the file still asks for V=2), and now it rolls.
        sim.supervisor.on_signal(signal.SIGHUP)
        await sim.until(lambda: bool(sim.messages("rolling_ready")))
        await sim.until(lambda: not old.alive)
        assert sim.supervisor.config.service("web").env == {"V": "2"}
    assert no_process_left(sim)


async def test_a_shutdown_during_a_rolling_reload_leaves_no_process(
    tmp_path: Path, clock: MockClock
) -> None:
    web = {**WEB, "port": free_port()}
    scripts = {"web": [Script(), Script(ready_after=2)]}
    async with simulate(tmp_path, stack(web=web), scripts) as sim:
        await sim.until_state("web", State.HEALTHY)
        sim.rewrite(stack(web={**web, "env": {"V": "2"}}))
        sim.supervisor.on_signal(signal.SIGHUP)
        # The successor is ready and the old process stopping: stop everything now.
        await sim.until(lambda: bool(sim.messages("rolling_ready")))
        sim.supervisor.shutdown("Test over")
        await sim.supervisor.stopped.wait()
    assert len(sim.launcher.launches) == 2
    assert no_process_left(sim)
