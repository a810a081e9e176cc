"""The pure parts of the supervisor: states, the reload plan, status, event wording, exits."""

from __future__ import annotations

import ast
import dataclasses
import logging
from pathlib import Path

import pytest

from hearthlink_trio.config import load_config
from hearthlink_trio.config.resolved import Restart
from hearthlink_trio.errors import ConfigError, ExitCode, HearthlinkError, PreflightError
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.reload import ReloadRefused, diff
from hearthlink_trio.supervisor.state import TRANSITIONS, ServiceState, State, TransitionError
from hearthlink_trio.supervisor.status import overall_status, systemd_status
from tests.stack import write_config


def _config(tmp_path: Path, name: str, **services: dict[str, object]) -> object:
    sections: dict[str, dict[str, object]] = {"supervisor": {"data_dir": str(tmp_path / "d")}}
    sections.update({f"services.{n}": t for n, t in services.items()})
    return load_config(write_config(tmp_path / name, sections), environ={})


def test_every_change_goes_through_an_intent_method_and_is_observed() -> None:
    seen: list[tuple[str, str]] = []
    log = logging.getLogger("test.state")
    record = ServiceState(
        "svc", log=log, on_change=lambda r, old: seen.append((old.value, r.state.value))
    )
    record.started(123, port=None, task=False, attempt=0, policy=Restart())
    record.passed_probe(first=True)
    record.failed_probe("slow")
    record.failed_probe("slower")
    assert seen == [
        ("waiting", "starting"),
        ("starting", "healthy"),
        ("healthy", "unhealthy"),
        ("unhealthy", "unhealthy"),
    ]
    assert (record.pid, record.error_message, record.ever_healthy) == (123, "slower", True)
    record.backing_off(2.0, "exited")
    assert (record.state, record.restart_count, record.restart_backoff) == (State.BACKOFF, 1, 2.0)
    # A forbidden transition is a real error, not an assert that `python -O` removes.
    with pytest.raises(TransitionError, match="from backoff to waiting"):
        record.waiting()


def test_no_module_but_the_state_object_writes_a_service_record() -> None:
    import hearthlink_trio

    fields = {f.name for f in dataclasses.fields(ServiceState)}
    root = Path(hearthlink_trio.__file__).parent
    writes = []
    for path in root.rglob("*.py"):
        if path.name == "state.py" and path.parent.name == "supervisor":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr in fields
                    and "record" in ast.unparse(target.value)
                ):
                    writes.append(f"{path.relative_to(root)}:{node.lineno}")
    assert writes == []


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
    assert log_lines.started("vault", 8001, 12345).message == (
        "Started vault service on port 8001 with PID 12345"
    )
    assert log_lines.healthy("vault").message == "vault service is healthy"
    assert log_lines.steady_state(30).message == (
        "Health monitoring: Switching to steady-state mode (30s intervals)"
    )
    assert log_lines.unhealthy("vault", "Connection refused").message == (
        "vault service unhealthy (Connection refused), scheduling restart"
    )
    assert log_lines.restarted("vault", 1, 2.0).message == (
        "Service vault restarted (attempt 1), next backoff: 2s"
    )
    assert log_lines.restarted("vault", 1, 0.2).message.endswith("next backoff: 0.2s")
    assert (
        log_lines.gave_up("vault", 5).message == "Service vault has failed 5 times, not restarting"
    )
    assert (
        log_lines.port_available("vault", 8001).message == "✓ Port 8001 available for vault service"
    )


def test_a_requested_stop_says_stopped_and_keeps_the_signal_in_the_fields() -> None:
    event = log_lines.stopped("vault", -15, detail=None)
    assert event.message == "Stopped vault service"
    assert event.fields == {"service": "vault", "exit_code": -15, "signal": 15}
    assert log_lines.stopped("x", -9, detail="killed by SIGKILL").message == (
        "Stopped x service (killed by SIGKILL)"
    )


def test_one_table_of_exit_codes() -> None:
    assert (ExitCode.OK, ExitCode.FATAL, ExitCode.CONFIG, ExitCode.PREFLIGHT) == (0, 1, 2, 3)
    assert ExitCode.FORCED == 130
    assert ConfigError(["a", "b"]).exit_code == 2
    assert PreflightError("one").problems == ["one"]
    assert HearthlinkError("x").exit_code == ExitCode.FATAL


@pytest.mark.parametrize(
    "ts",
    [
        0.0,
        1.5,
        1_780_000_000.0,
        1_780_000_000.0005,  # a half millisecond: cut, not rounded
        1_780_000_000.9994999,
        1_780_000_000.9999996,  # rounds to the next second's microsecond 0, as datetime does
        1_780_000_059.9999999,  # ... and carries into the minute
        1_780_000_000.123456789,
        *(1_700_000_000 + n * 7_654.321_987 for n in range(200)),
    ],
)
def test_log_times_are_what_datetime_writes(ts: float) -> None:
    from datetime import UTC, datetime

    from hearthlink_trio._util import utc_iso

    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    assert utc_iso(ts) == expected


def test_a_json_log_line_carries_its_time_in_utc() -> None:
    import json
    from datetime import UTC, datetime

    from hearthlink_trio.supervisor.output import JsonFormatter

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.created = 1_780_000_000.25
    line = json.loads(JsonFormatter().format(record))
    assert line["ts"] == "2026-05-28T20:26:40.250+00:00"
    assert datetime.fromisoformat(line["ts"]) == datetime.fromtimestamp(record.created, UTC)
