"""Restarts on file changes and dependents that follow a restart, on the virtual clock.

The watcher's thread (watchfiles) is the one part not here: a test hands changes to a
service's :class:`ServiceWatch` as the watcher would, and reads what the supervisor did.
The e2e tests (tests/e2e/test_watch.py) run the real watcher on real files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from trio.testing import MockClock

from hearthlink_trio.control.stream import StateChange, StreamEvent
from hearthlink_trio.supervisor.state import State
from hearthlink_trio.supervisor.watch import (
    BATCH_FROM_ARRIVAL,
    BATCH_SECONDS,
    ServiceWatch,
    watch_files,
)
from tests.sim.harness import Script, Sim, simulate

FAST = {
    "health": {"startup_interval": 5, "startup_period": 60, "steady_interval": 30},
    "restart": {"max_attempts": 2, "initial_backoff": 4, "max_backoff": 8},
}


def config(**services: dict[str, object]) -> dict[str, object]:
    return {**FAST, **{f"services.{name}": table for name, table in services.items()}}


def svc(port: int, **more: object) -> dict[str, object]:
    return {"command": ["svc"], "port": port, **more}


@asynccontextmanager
async def watching(sim: Sim, name: str) -> AsyncIterator[ServiceWatch]:
    """Table ``name``'s watch of ``**/*.py``, running, fed by the test instead of the
    watcher."""
    supervisor = sim.supervisor
    replicas = [
        dataclasses.replace(svc, watch=("**/*.py",))
        for svc in supervisor.config.services
        if svc.group == name
    ]
    watch = ServiceWatch(supervisor.ctx, replicas, supervisor.restart_on_change)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run)
        await trio.sleep(0)
        yield watch
        nursery.cancel_scope.cancel()


def state_events(sim: Sim) -> list[StateChange]:
    """Every state event published from now on (the event stream's objects)."""
    seen: list[StateChange] = []
    ctx = sim.supervisor.ctx
    publish = ctx.publish

    def record(event: StreamEvent) -> None:
        if isinstance(event, StateChange):
            seen.append(event)
        publish(event)

    ctx.publish = record
    return seen


async def test_changes_are_gathered_for_200ms_then_the_service_restarts_once(
    tmp_path: Path, clock: MockClock
) -> None:
    async with simulate(tmp_path, config(web=svc(1))) as sim:
        await sim.until_state("web", State.HEALTHY)
        await trio.sleep(10)
        seen = state_events(sim)
        async with watching(sim, "web") as watch:
            first = trio.current_time() - sim.launcher.t0
            watch.offer(tmp_path / "app.py")
            await trio.sleep(0.05)
            watch.offer(tmp_path / "models.py")
            await trio.sleep(0.1)
            watch.offer(tmp_path / "app.py")
            watch.offer(tmp_path / "README.md")  # not watched
            await sim.until(lambda: len(sim.launcher.times("web")) == 2)
            restarted_at = sim.launcher.times("web")[1]
            # The step the watcher took to see the first change is part of the 200 ms.
            assert first + BATCH_FROM_ARRIVAL <= restarted_at < first + BATCH_FROM_ARRIVAL + 0.01
            await sim.until_state("web", State.HEALTHY)
            await trio.sleep(30)
        assert len(sim.launcher.times("web")) == 2
        assert sim.messages("files_changed") == [
            "web: 2 files changed (app.py, models.py), restarting"
        ]
        assert sim.messages("manual_restart") == []
        # Not counted; every state change of the restart says why, until it is healthy.
        assert sim.status("web")["restart_count"] == 0
        reason = "2 files changed (app.py, models.py)"
        moves = [(e.state, e.reason) for e in seen if e.state != e.previous]
        assert moves[:3] == [
            ("stopping", reason),
            ("starting", reason),
            ("healthy", reason),
        ]


async def test_a_change_resets_a_failed_service_and_cuts_a_backoff_short(
    tmp_path: Path, clock: MockClock
) -> None:
    crash = Script(exit_after=0.5)
    scripts = {"web": [crash, crash, crash, Script(), crash, Script()]}
    async with simulate(tmp_path, config(web=svc(1)), scripts) as sim:
        await sim.until_state("web", State.FAILED)
        assert sim.status("web")["restart_count"] == 2
        async with watching(sim, "web") as watch:
            watch.offer(tmp_path / "app.py")
            await sim.until_state("web", State.HEALTHY)
            assert sim.status("web")["restart_count"] == 0
            # The next process crashes: a backoff of 4 s, which a change ends at once.
            await sim.until(lambda: len(sim.launcher.times("web")) == 4)
            sim.launcher.current["web"].exit(1)
            await sim.until_state("web", State.BACKOFF)
            began = trio.current_time()
            watch.offer(tmp_path / "app.py")
            await sim.until_state("web", State.HEALTHY)
            assert trio.current_time() - began < BATCH_SECONDS + 0.1
            assert sim.status("web")["restart_count"] == 0


async def test_a_service_stopped_by_hand_is_not_started_by_a_change(
    tmp_path: Path, clock: MockClock
) -> None:
    async with simulate(tmp_path, config(web=svc(1))) as sim:
        await sim.until_state("web", State.HEALTHY)
        sim.supervisor.stop_service("web")
        await sim.until_state("web", State.STOPPED)
        async with watching(sim, "web") as watch:
            watch.offer(tmp_path / "app.py")
            await trio.sleep(5)
        assert sim.state("web") is State.STOPPED
        assert len(sim.launcher.times("web")) == 1
        assert sim.messages("files_changed") == [
            "web: 1 file changed (app.py), not restarted: stopped by hand; not started"
        ]


CASCADE = config(
    db=svc(1),
    api=svc(2, depends_on={"db": {"condition": "healthy", "restart": True}}),
    web=svc(3, depends_on={"api": {"restart": True}, "db": {"restart": True}}),
    plain=svc(4, depends_on=["db"]),
)
READY_IN_2 = {name: Script(ready_after=2) for name in ("db", "api", "web", "plain")}


async def test_dependents_follow_a_manual_restart_in_dependency_order(
    tmp_path: Path, clock: MockClock
) -> None:
    async with simulate(tmp_path, CASCADE, READY_IN_2) as sim:
        await sim.until(lambda: all(sim.state(n) is State.HEALTHY for n in READY_IN_2))
        await trio.sleep(10)
        began = round(trio.current_time() - sim.launcher.t0, 3)
        assert sim.supervisor.restart("db") == "restarting"
        await sim.until(lambda: len(sim.launcher.times("web")) == 2)
        await sim.until_state("web", State.HEALTHY)
        await trio.sleep(30)
        # db anew; api once db is healthy (2 s); web once api is healthy again (2 s more),
        # once, though it follows both; plain (no restart = true) keeps running.
        db, api, web = (sim.launcher.times(n)[1] - began for n in ("db", "api", "web"))
        assert db < 0.1
        assert 2 <= api < 2.2
        assert 4 <= web < 4.3
        assert len(sim.launcher.times("db")) == 2
        assert len(sim.launcher.times("api")) == 2
        assert len(sim.launcher.times("web")) == 2
        assert len(sim.launcher.times("plain")) == 1
        assert sim.messages("dependency_restart") == [
            "api: db was restarted and is healthy again, restarting",
            "web: db was restarted and is healthy again, restarting",
        ]
        assert [sim.status(n)["restart_count"] for n in ("db", "api", "web")] == [0, 0, 0]


async def test_dependents_follow_a_crash_restart_once_it_is_healthy_again(
    tmp_path: Path, clock: MockClock
) -> None:
    scripts = {**READY_IN_2, "db": [Script(ready_after=2, exit_after=20), Script(ready_after=3)]}
    async with simulate(tmp_path, CASCADE, scripts) as sim:
        await sim.until(lambda: len(sim.launcher.times("web")) == 2)
        await sim.until_state("web", State.HEALTHY)
        # db crashed at 20, waited its 4 s backoff, started at 24 and was healthy at 27.
        assert sim.launcher.times("db")[1] == 24
        assert 27 <= sim.launcher.times("api")[1] < 27.2
        assert 29 <= sim.launcher.times("web")[1] < 29.3
        assert len(sim.launcher.times("plain")) == 1
        assert sim.status("db")["restart_count"] == 1
        assert sim.status("api")["restart_count"] == 0


async def test_replicas_restart_one_at_a_time_on_a_change(tmp_path: Path, clock: MockClock) -> None:
    cfg = config(web=svc(1, replicas=3))
    scripts = {f"web-{n}": Script(ready_after=2) for n in (1, 2, 3)}
    async with simulate(tmp_path, cfg, scripts) as sim:
        await sim.until(lambda: all(sim.state(n) is State.HEALTHY for n in scripts))
        await trio.sleep(10)
        async with watching(sim, "web") as watch:
            watch.offer(tmp_path / "app.py")
            await sim.until(lambda: len(sim.launcher.times("web-3")) == 2)
            await sim.until_state("web-3", State.HEALTHY)
        first, second, third = (sim.launcher.times(n)[1] for n in scripts)
        # Each starts once the one before is healthy again (2 s): never two down at once.
        assert 2 <= second - first < 2.1
        assert 2 <= third - second < 2.1
        assert sim.messages("files_changed") == [
            f"web-{n}: 1 file changed (app.py), restarting" for n in (1, 2, 3)
        ]


async def test_a_watcher_that_fails_says_so_and_the_services_keep_running(
    tmp_path: Path, clock: MockClock
) -> None:
    async with simulate(tmp_path, config(web=svc(1))) as sim:
        await sim.until_state("web", State.HEALTHY)
        supervisor = sim.supervisor
        # Its folder went away after the config was checked.
        gone = dataclasses.replace(
            supervisor.config.service("web"), cwd=tmp_path / "gone", watch=("**/*.py",)
        )
        with trio.fail_after(5):
            await watch_files(supervisor.ctx, [gone], supervisor.restart_on_change)
        [line] = sim.messages("watch_failed")
        assert line.startswith(f"Watching files stopped: no such folder: {tmp_path / 'gone'}")
        assert line.endswith("; services are no longer restarted on changes")
        assert sim.state("web") is State.HEALTHY


async def test_a_change_after_a_crash_restarts_at_once_not_after_the_crash_loop(
    tmp_path: Path, clock: MockClock
) -> None:
    crash = Script(exit_after=0.5, ready_after=10)  # crashes before it is ever ready
    scripts = {"web": [Script(), crash, crash, crash, Script()]}
    cfg = {**config(web=svc(1)), "restart": {"max_attempts": 5, "initial_backoff": 8}}
    async with simulate(tmp_path, cfg, scripts) as sim:
        await sim.until_state("web", State.HEALTHY)
        async with watching(sim, "web") as watch:
            watch.offer(tmp_path / "app.py")  # a broken version: it crashes at start
            await sim.until(lambda: len(sim.launcher.times("web")) == 2)
            await sim.until_state("web", State.BACKOFF)
            fixed = trio.current_time()
            watch.offer(tmp_path / "app.py")  # the fix, during the 8 s backoff
            await sim.until(lambda: len(sim.launcher.times("web")) == 3)
            # The fix restarted it at once; it crashes too (scripted), and so on: what
            # matters is that the second change did not wait for the backoff.
            assert trio.current_time() - fixed < BATCH_SECONDS + 0.1
