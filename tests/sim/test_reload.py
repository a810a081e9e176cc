"""Reloads planned against the running state: added, removed, changed, dependents waiting."""

from __future__ import annotations

import signal
from pathlib import Path

import trio
from trio.testing import MockClock

from hearthlink_trio.supervisor.state import State
from tests.helpers import free_port, free_ports
from tests.sim.harness import Script, simulate

HEALTH = {"startup_interval": 5, "startup_period": 60, "steady_interval": 30, "timeout": 5}
RESTART = {"max_attempts": 0, "initial_backoff": 1}


def tables(health: dict[str, object] | None = None, **services: dict[str, object]) -> dict:
    return {
        "health": {**HEALTH, **(health or {})},
        "restart": RESTART,
        **{f"services.{name}": table for name, table in services.items()},
    }


def svc(port: int, **more: object) -> dict[str, object]:
    return {"command": ["svc"], "port": port, **more}


async def test_added_removed_changed_and_unchanged(tmp_path: Path, clock: MockClock) -> None:
    # One block: four calls of free_port() may hand out the same port twice.
    base = free_ports(4)
    keep, drop, change, new = (base + i for i in range(4))
    before = tables(keep=svc(keep), drop=svc(drop), change=svc(change))
    async with simulate(tmp_path, before) as sim:
        await sim.until(lambda: sim.supervisor.overall_status() == "healthy")
        sim.rewrite(tables(keep=svc(keep), change=svc(change, env={"V": "2"}), new=svc(new)))
        sim.supervisor.on_signal(signal.SIGHUP)
        await sim.until(lambda: "new" in sim.supervisor.ctx.records)
        await sim.until(lambda: sim.supervisor.overall_status() == "healthy")
        assert sim.messages("reloaded") == [
            "Config reloaded: added new; removed drop; changed change"
        ]
        assert list(sim.supervisor.ctx.records) == ["keep", "change", "new"]
        assert sim.launcher.times("keep") == [0]  # untouched
        assert len(sim.launcher.times("change")) == 2
        assert sim.launcher.current["change"].env["V"] == "2"
        assert "Stopped drop service" in sim.lines()


async def test_a_dependent_waiting_on_a_replaced_service_waits_on_its_successor(
    tmp_path: Path, clock: MockClock
) -> None:
    base = free_ports(2)
    vault, alden = base, base + 1
    broken = tables(vault=svc(vault, env={"BROKEN": "1"}), alden=svc(alden, depends_on=["vault"]))
    scripts = {"vault": [Script(exit_after=0), Script()]}
    async with simulate(tmp_path, broken, scripts) as sim:
        await sim.until_state("vault", State.FAILED)
        assert sim.state("alden") is State.WAITING
        # The Vault's config is fixed; SIGHUP replaces its runner.
        sim.rewrite(tables(vault=svc(vault), alden=svc(alden, depends_on=["vault"])))
        sim.supervisor.on_signal(signal.SIGHUP)
        await sim.until_state("alden", State.HEALTHY, limit=30)
        assert sim.launcher.times("alden") != []


async def test_a_service_added_by_a_reload_gets_its_secret(
    tmp_path: Path, clock: MockClock
) -> None:
    base = free_ports(2)
    web, vault = base, base + 1
    async with simulate(tmp_path, tables(web=svc(web))) as sim:
        await sim.until_state("web", State.HEALTHY)
        secrets = {"HEARTHLINK_VAULT_KEY": "vault.key"}
        sim.rewrite(tables(web=svc(web), vault=svc(vault, secrets=secrets)))
        sim.supervisor.on_signal(signal.SIGHUP)
        await sim.until(lambda: "vault" in sim.launcher.current)
        key = (tmp_path / "data" / "vault.key").read_text().strip()
        assert sim.launcher.current["vault"].env["HEARTHLINK_VAULT_KEY"] == key
        assert len(key) == 44


async def test_health_timeout_and_restart_policy_changes_apply(
    tmp_path: Path, clock: MockClock
) -> None:
    port = free_port()
    async with simulate(tmp_path, tables(svc=svc(port))) as sim:
        await sim.until_state("svc", State.HEALTHY)
        sim.rewrite(tables({"timeout": 0.25, "steady_interval": 7}, svc=svc(port)))
        sim.supervisor.on_signal(signal.SIGHUP)
        await trio.sleep(0.1)  # virtual time: the reload runs in the background
        assert sim.messages("reloaded") == ["Config reloaded: no service changed"]
        reloaded_at = clock.current_time()
        await trio.sleep(15)
        later = [timeout for t, _, timeout in sim.prober.probes if t > reloaded_at]
        assert later and set(later) == {0.25}
        assert sim.launcher.times("svc") == [0]  # [health] is not the service's own table


async def test_a_bad_new_config_is_refused_whole(tmp_path: Path, clock: MockClock) -> None:
    port = free_port()
    async with simulate(tmp_path, tables(svc=svc(port))) as sim:
        await sim.until_state("svc", State.HEALTHY)
        sim.config_path.write_text("[services.svc]\nport = 'x'\n")
        sim.supervisor.on_signal(signal.SIGHUP)
        await trio.sleep(1)
        assert sim.messages("reload_refused") == [
            "Config reload refused; the running services keep their config"
        ]
        assert sim.state("svc") is State.HEALTHY
        assert sim.launcher.times("svc") == [0]
