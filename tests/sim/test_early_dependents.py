"""Processes the launcher started before the supervisor loaded, dependents among them: each
is taken over and announced at once, in dependency order, and said healthy at once when the
launcher found it passing its probe (so the log keeps "dependency healthy" before
"dependent started")."""

from __future__ import annotations

import signal
from pathlib import Path

import trio
from trio.testing import MockClock

from hearthlink_trio.supervisor.state import State
from tests.sim.harness import Script, Sim, no_process_left, simulate

BASE = {"health": {"startup_interval": 5, "startup_period": 60, "steady_interval": 30}}
#: Probes of these processes fail for a long time: only the launcher's finding passes them.
SLOW = Script(ready_after=1000)


def chain(*names: str) -> dict[str, object]:
    tables: dict[str, object] = dict(BASE)
    for index, name in enumerate(names):
        table: dict[str, object] = {"command": [name], "port": index + 1}
        if index:
            table["depends_on"] = [names[index - 1]]
        tables[f"services.{name}"] = table
    return tables


def story(sim: Sim) -> list[tuple[str, str]]:
    """(event, service) of every start, health and stop line, in order."""
    return [
        (event, fields["service"])
        for _, event, _, fields in sim.events.records
        if event in ("started", "healthy", "stopped")
    ]


async def test_a_chain_found_passing_is_healthy_at_once_and_announced_in_dependency_order(
    tmp_path: Path, clock: MockClock
) -> None:
    scripts = {"a": SLOW, "b": SLOW}
    async with simulate(
        tmp_path, chain("a", "b", "c"), scripts, early={"a": True, "b": True}
    ) as sim:
        await sim.until_state("c", State.HEALTHY, limit=1)
        assert story(sim) == [
            ("started", "a"),
            ("healthy", "a"),
            ("started", "b"),
            ("healthy", "b"),
            ("started", "c"),
            ("healthy", "c"),
        ]
        # Taken over, not started again; only c was started by the supervisor.
        assert [launch.name for launch in sim.launcher.launches] == ["a", "b", "c"]
        # a and b passed no probe of the supervisor's: they were found passing before.
        probed = {name for _, name, _ in sim.prober.probes}
        assert "a" not in probed and "b" not in probed


async def test_a_stop_at_once_after_the_take_over_stops_every_early_process_announced(
    tmp_path: Path, clock: MockClock
) -> None:
    scripts = {"a": SLOW, "b": SLOW}
    async with simulate(tmp_path, chain("a", "b"), scripts, early={"a": True, "b": True}) as sim:
        await sim.until(lambda: len(sim.launcher.alive("b")) == 1, limit=1)
        (a,), (b,) = sim.launcher.alive("a"), sim.launcher.alive("b")
        sim.supervisor.shutdown("Test over")
        await sim.supervisor.stopped.wait()
    assert a.signals == b.signals == [signal.SIGTERM]
    assert no_process_left(sim)
    assert story(sim) == [
        ("started", "a"),
        ("healthy", "a"),
        ("started", "b"),
        ("healthy", "b"),
        ("stopped", "b"),
        ("stopped", "a"),
    ]


async def test_a_service_without_a_probe_taken_over_is_said_healthy_once(
    tmp_path: Path, clock: MockClock
) -> None:
    tables = chain("a", "b")
    tables["services.a"] = {**tables["services.a"], "probe": "none"}  # type: ignore[dict-item]
    async with simulate(tmp_path, tables, early={"a": True}) as sim:
        await sim.until_state("b", State.HEALTHY, limit=5)
        await trio.sleep(10)  # virtual: its health loop has run a while
        assert story(sim) == [
            ("started", "a"),
            ("healthy", "a"),
            ("started", "b"),
            ("healthy", "b"),
        ]
