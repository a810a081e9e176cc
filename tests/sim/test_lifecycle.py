"""Dependencies, manual restarts in every state, shutdown order, the second signal, secrets."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from hearthlink_trio.supervisor.state import State
from tests.sim.harness import Script, no_process_left, simulate

FAST = {
    "health": {"startup_interval": 5, "startup_period": 60, "steady_interval": 30},
    "restart": {"max_attempts": 2, "initial_backoff": 4, "max_backoff": 8},
}


def config(**services: dict[str, object]) -> dict[str, object]:
    return {**FAST, **{f"services.{name}": table for name, table in services.items()}}


def svc(port: int, **more: object) -> dict[str, object]:
    return {"command": ["svc"], "port": port, **more}


async def test_a_dependent_starts_once_its_dependency_is_healthy(
    tmp_path: Path, clock: MockClock
) -> None:
    cfg = config(db=svc(1), web=svc(2, depends_on=["db"]))
    async with simulate(tmp_path, cfg, {"db": Script(ready_after=3)}) as sim:
        await sim.until_state("web", State.HEALTHY)
        assert sim.status("web")["error_message"] is None
        assert sim.launcher.times("db") == [0]
        assert 3 <= sim.launcher.times("web")[0] < 3.1
        assert sim.supervisor.overall_status() == "healthy"
    stops = [m for m in sim.lines() if m.startswith("Stopped")]
    assert stops == ["Stopped web service", "Stopped db service"]
    assert no_process_left(sim)


async def test_a_dependent_of_a_failed_service_waits_and_says_why(
    tmp_path: Path, clock: MockClock
) -> None:
    cfg = config(db=svc(1), web=svc(2, depends_on=["db"]))
    async with simulate(tmp_path, cfg, {"db": Script(exit_after=0)}) as sim:
        await sim.until_state("db", State.FAILED)
        expected = "waiting for db to be healthy (db failed: exited (exit status 1))"
        await sim.until(lambda: sim.status("web")["error_message"] == expected, limit=1)
        assert sim.state("web") is State.WAITING
        # Start-up is over (nothing else will start by itself): degraded, not starting.
        assert sim.supervisor.overall_status() == "degraded"


async def test_manual_restart_of_a_running_service_is_immediate_and_not_counted(
    tmp_path: Path, clock: MockClock
) -> None:
    async with simulate(tmp_path, config(svc=svc(1))) as sim:
        await sim.until_state("svc", State.HEALTHY)
        assert sim.supervisor.restart("svc") == "restarting"
        await sim.until(lambda: len(sim.launcher.times("svc")) == 2)
        assert sim.status("svc")["restart_count"] == 0
        first = sim.launcher.launches[0].process
        assert first.signals == [signal.SIGTERM]
        assert "Manual restart of svc service" in sim.lines()


async def test_manual_restart_in_backoff_keeps_the_remaining_wait(
    tmp_path: Path, clock: MockClock
) -> None:
    scripts = {"svc": [Script(exit_after=1), Script()]}
    async with simulate(tmp_path, config(svc=svc(1)), scripts) as sim:
        await sim.until_state("svc", State.BACKOFF)
        answer = sim.supervisor.restart("svc")
        assert answer == "in backoff; it restarts when its wait is over"
        await sim.until_state("svc", State.STARTING)
        assert sim.launcher.times("svc") == [0, 5]  # crashed at 1, waited the full 4 s


async def test_manual_restart_of_a_failed_service_resets_its_count(
    tmp_path: Path, clock: MockClock
) -> None:
    scripts = {"svc": [Script(exit_after=0)] * 3 + [Script()]}
    async with simulate(tmp_path, config(svc=svc(1)), scripts) as sim:
        await sim.until_state("svc", State.FAILED)
        assert sim.status("svc")["restart_count"] == 2
        assert sim.supervisor.restart("svc") == "restarting"
        await sim.until_state("svc", State.HEALTHY)
        assert sim.status("svc")["restart_count"] == 0
        assert len(sim.launcher.times("svc")) == 4


async def test_manual_restart_while_waiting_for_dependencies_says_so_and_is_not_lost(
    tmp_path: Path, clock: MockClock
) -> None:
    cfg = config(db=svc(1), web=svc(2, depends_on=["db"]))
    async with simulate(tmp_path, cfg, {"db": Script(ready_after=10)}) as sim:
        await sim.until(lambda: sim.status("web")["error_message"] is not None)
        answer = sim.supervisor.restart("web")
        assert answer == "not started yet (waiting for db to be healthy)"
        await sim.until_state("web", State.HEALTHY)
        # It started once, when db became healthy.
        assert len(sim.launcher.times("web")) == 1
        assert sim.launcher.times("web")[0] >= 10


async def test_shutdown_stops_dependents_first_and_independents_together(
    tmp_path: Path, clock: MockClock
) -> None:
    cfg = config(
        db=svc(1), api=svc(2, depends_on=["db"]), web=svc(3, depends_on=["api"]), cron=svc(4)
    )
    scripts = {name: Script(stop_takes=1) for name in ("db", "api", "web", "cron")}
    async with simulate(tmp_path, cfg, scripts) as sim:
        await sim.until(lambda: sim.supervisor.overall_status() == "healthy")
        began = round(clock.current_time() - sim.t0, 3)
        sim.supervisor.on_signal(signal.SIGTERM)
        await sim.supervisor.stopped.wait()
    stopped = {m.split()[1]: sim.when(m) - began for m in sim.lines() if m.startswith("Stopped")}
    # Concurrently, each taking 1 s (approx: the start-up probes leave non-round times).
    assert stopped["web"] == pytest.approx(1) and stopped["cron"] == pytest.approx(1)
    assert stopped["api"] == pytest.approx(2)
    assert stopped["db"] == pytest.approx(3)
    assert sim.result == [0]
    assert sim.messages("shutdown") == ["Received SIGTERM, stopping all services"]


async def test_a_second_signal_kills_at_once_and_exits_130(
    tmp_path: Path, clock: MockClock
) -> None:
    cfg = config(svc=svc(1, stop_timeout=10))
    async with simulate(tmp_path, cfg, {"svc": Script(honours_stop=False)}) as sim:
        await sim.until_state("svc", State.HEALTHY)
        sim.supervisor.on_signal(signal.SIGINT)
        await sim.until_state("svc", State.STOPPING)
        began = clock.current_time()
        sim.supervisor.on_signal(signal.SIGINT)
        await sim.supervisor.stopped.wait()
        assert clock.current_time() - began < 0.01
    assert sim.result == [130]
    process = sim.launcher.launches[0].process
    assert process.signals == [signal.SIGTERM, signal.SIGKILL]
    assert "Received SIGINT again, killing all services now" in sim.lines()


async def test_a_stop_past_its_timeout_is_a_sigkill_and_says_so(
    tmp_path: Path, clock: MockClock
) -> None:
    cfg = config(svc=svc(1, stop_timeout=3))
    async with simulate(tmp_path, cfg, {"svc": Script(honours_stop=False)}) as sim:
        await sim.until_state("svc", State.HEALTHY)
    assert "Stopped svc service (killed by SIGKILL)" in sim.lines()
    assert sim.launcher.launches[0].process.signals == [signal.SIGTERM, signal.SIGKILL]


async def test_declared_secrets_reach_only_their_service(tmp_path: Path, clock: MockClock) -> None:
    cfg = config(
        vault=svc(1, secrets={"HEARTHLINK_VAULT_KEY": "vault.key"}),
        other=svc(2, env={"EXTRA": "x"}),
    )
    async with simulate(tmp_path, cfg) as sim:
        await sim.until(lambda: sim.supervisor.overall_status() == "healthy")
        vault = sim.launcher.current["vault"].env
        other = sim.launcher.current["other"].env
    key_file = tmp_path / "data" / "vault.key"
    assert vault["HEARTHLINK_VAULT_KEY"] == key_file.read_text().strip()
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "HEARTHLINK_VAULT_KEY" not in other
    assert other["EXTRA"] == "x"
    assert vault["HEARTHLINK_OTHER_URL"] == "http://127.0.0.1:2"
    assert vault["HEARTHLINK_SERVICE"] == "vault"


async def test_a_secret_file_replaced_by_its_service_is_read_again_at_the_next_start(
    tmp_path: Path, clock: MockClock
) -> None:
    import base64

    cfg = config(vault=svc(1, secrets={"HEARTHLINK_VAULT_KEY": "vault.key"}))
    scripts = {"vault": [Script(exit_after=1), Script()]}
    async with simulate(tmp_path, cfg, scripts) as sim:
        await sim.until(lambda: len(sim.launcher.launches) == 1)
        first = sim.launcher.current["vault"].env["HEARTHLINK_VAULT_KEY"]
        # What the Vault does when it settles an interrupted key rotation.
        rotated = base64.b64encode(bytes(range(32))).decode()
        (tmp_path / "data" / "vault.key").write_text(rotated + "\n")
        await sim.until(lambda: len(sim.launcher.launches) == 2)
        assert sim.launcher.current["vault"].env["HEARTHLINK_VAULT_KEY"] == rotated != first


async def test_a_service_stopped_by_hand_stays_stopped_until_started(
    tmp_path: Path, clock: MockClock
) -> None:
    cfg = config(db=svc(1), web=svc(2, depends_on=["db"]))
    async with simulate(tmp_path, cfg) as sim:
        await sim.until(lambda: sim.supervisor.overall_status() == "healthy")
        assert sim.supervisor.stop_service("db") == "stopping"
        await sim.until_state("db", State.STOPPED)
        assert "Stopped db service" in sim.lines()
        assert sim.supervisor.stop_service("db") == "already stopped"
        status = sim.status("db")
        assert (status["status"], status["restart_count"], status["pid"]) == ("stopped", 0, None)
        # Not restarted, and its dependent keeps running.
        await trio.sleep(120)
        assert len(sim.launcher.times("db")) == 1
        assert sim.state("web") is State.HEALTHY
        assert sim.supervisor.start_service("db") == "starting"
        await sim.until_state("db", State.HEALTHY)
        assert len(sim.launcher.times("db")) == 2
        assert sim.status("db")["restart_count"] == 0
        assert sim.supervisor.start_service("db") == "not stopped (healthy)"


async def test_stop_by_hand_in_backoff_and_failed_and_restart_starts_it(
    tmp_path: Path, clock: MockClock
) -> None:
    scripts = {"svc": [Script(exit_after=1), Script()]}
    async with simulate(tmp_path, config(svc=svc(1)), scripts) as sim:
        await sim.until_state("svc", State.BACKOFF)
        sim.supervisor.stop_service("svc")
        await sim.until_state("svc", State.STOPPED)
        await trio.sleep(60)
        assert len(sim.launcher.times("svc")) == 1  # the backoff did not start it
        assert sim.supervisor.restart("svc") == "starting"
        await sim.until_state("svc", State.HEALTHY)
