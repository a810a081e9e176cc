"""The pure parts of the supervisor: states, the reload plan, status, event wording, exits."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearthlink_trio.config import load_config
from hearthlink_trio.errors import ConfigError, ExitCode, HearthlinkError, PreflightError
from hearthlink_trio.supervisor import events
from hearthlink_trio.supervisor.reload import ReloadRefused, diff
from hearthlink_trio.supervisor.state import TRANSITIONS, ServiceState, State
from hearthlink_trio.supervisor.status import overall_status, systemd_status
from tests.sup import write_config


def _config(tmp_path: Path, name: str, **services: dict[str, object]) -> object:
    sections: dict[str, dict[str, object]] = {"supervisor": {"data_dir": str(tmp_path / "d")}}
    sections.update({f"services.{n}": t for n, t in services.items()})
    return load_config(write_config(tmp_path / name, sections), environ={})


def test_every_change_goes_through_change_state_and_is_observed() -> None:
    seen: list[tuple[str, str]] = []
    record = ServiceState("svc", on_change=lambda r, old: seen.append((old.value, r.state.value)))
    record.change_state(State.STARTING)
    record.change_state(State.HEALTHY, error=None)
    record.note("slow")
    assert seen == [("waiting", "starting"), ("starting", "healthy"), ("healthy", "healthy")]
    assert record.error_message == "slow"
    with pytest.raises(AssertionError, match="healthy -> waiting"):
        record.change_state(State.WAITING)


def test_every_state_can_be_left_and_stopped_is_reachable_from_all() -> None:
    assert set(TRANSITIONS) == set(State)
    for state, targets in TRANSITIONS.items():
        assert targets, state
        if state is not State.STOPPED:
            assert State.STOPPED in targets or State.STOPPING in targets, state


def test_reload_plan(tmp_path: Path) -> None:
    old = _config(
        tmp_path,
        "a.toml",
        keep={"command": ["k"], "port": 1},
        drop={"command": ["d"], "port": 2},
        change={"command": ["c"], "port": 3},
    )
    new = _config(
        tmp_path,
        "b.toml",
        change={"command": ["c", "-v"], "port": 3},
        keep={"command": ["k"], "port": 1},
        add={"command": ["a"], "port": 4},
    )
    plan = diff(old, new)  # type: ignore[arg-type]
    assert (plan.added, plan.removed, plan.changed) == (("add",), ("drop",), ("change",))
    assert plan.stop == ("drop", "change")
    assert set(plan.start) == {"change", "add"}
    assert plan.new_ports(old) == ("add",)  # type: ignore[arg-type]
    assert plan.summary() == "added add; removed drop; changed change"
    assert diff(old, old).summary() == "no service changed"  # type: ignore[arg-type]


def test_a_reload_cannot_move_the_data_dir(tmp_path: Path) -> None:
    old = _config(tmp_path, "a.toml", s={"command": ["s"], "port": 1})
    moved = load_config(
        write_config(
            tmp_path / "b.toml",
            {
                "supervisor": {"data_dir": str(tmp_path / "other")},
                "services.s": {"command": ["s"], "port": 1},
            },
        ),
        environ={},
    )
    with pytest.raises(ReloadRefused, match="data_dir, log_dir and control_socket"):
        diff(old, moved)  # type: ignore[arg-type]


def _records(**states: State) -> dict[str, ServiceState]:
    return {
        name: ServiceState(name, state=state, ever_healthy=state is State.HEALTHY)
        for name, state in states.items()
    }


def test_overall_status() -> None:
    deps: dict[str, tuple[str, ...]] = {"a": (), "b": ("a",)}
    assert (
        overall_status(_records(a=State.STARTING, b=State.WAITING), deps, shutting_down=False)
        == "starting"
    )
    assert (
        overall_status(_records(a=State.HEALTHY, b=State.HEALTHY), deps, shutting_down=False)
        == "healthy"
    )
    # b waits on a failed a: it will not start by itself, start-up is over.
    assert (
        overall_status(_records(a=State.FAILED, b=State.WAITING), deps, shutting_down=False)
        == "degraded"
    )
    assert (
        overall_status(_records(a=State.HEALTHY, b=State.HEALTHY), deps, shutting_down=True)
        == "stopping"
    )


def test_systemd_status_line() -> None:
    records = _records(a=State.HEALTHY, b=State.FAILED)
    assert systemd_status(records, shutting_down=False) == "1/2 healthy, b failed"
    records["b"].state = State.BACKOFF
    records["b"].restart_count = 2
    assert systemd_status(records, shutting_down=False) == "b restarting (attempt 2)"


def test_the_original_lines_word_for_word() -> None:
    assert events.started("vault", 8001, 12345).message == (
        "Started vault service on port 8001 with PID 12345"
    )
    assert events.healthy("vault").message == "vault service is healthy"
    assert events.steady_state(30).message == (
        "Health monitoring: Switching to steady-state mode (30s intervals)"
    )
    assert events.unhealthy("vault", "Connection refused").message == (
        "vault service unhealthy (Connection refused), scheduling restart"
    )
    assert events.restarted("vault", 1, 2.0).message == (
        "Service vault restarted (attempt 1), next backoff: 2s"
    )
    assert events.restarted("vault", 1, 0.2).message.endswith("next backoff: 0.2s")
    assert events.gave_up("vault", 5).message == "Service vault has failed 5 times, not restarting"
    assert events.port_available("vault", 8001).message == "✓ Port 8001 available for vault service"


def test_a_requested_stop_says_stopped_and_keeps_the_signal_in_the_fields() -> None:
    event = events.stopped("vault", -15, detail=None)
    assert event.message == "Stopped vault service"
    assert event.fields == {"service": "vault", "exit_code": -15, "signal": 15}
    assert events.stopped("x", -9, detail="killed by SIGKILL").message == (
        "Stopped x service (killed by SIGKILL)"
    )


def test_one_table_of_exit_codes() -> None:
    assert (ExitCode.OK, ExitCode.FATAL, ExitCode.CONFIG, ExitCode.PREFLIGHT) == (0, 1, 2, 3)
    assert ExitCode.FORCED == 130
    assert ConfigError(["a", "b"]).exit_code == 2
    assert PreflightError("one").problems == ["one"]
    assert HearthlinkError("x").exit_code == ExitCode.FATAL
