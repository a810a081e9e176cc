"""The ``hearthlink status`` table."""

from __future__ import annotations

from typing import Any

import pytest

from hearthlink_trio.cli.statusview import format_duration, render_status_table

NOW = 1_700_000_000.0


def service(name: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "status": "running",
        "port": 8000,
        "pid": 4242,
        "started_at": NOW - 192,
        "health_check_url": f"http://127.0.0.1:8000/health#{name}",
        "last_health_check": NOW - 2,
        "error_message": None,
        "restart_count": 0,
        "last_restart": None,
        "restart_backoff": 1.0,
    }
    base.update(fields)
    return base


def test_table() -> None:
    health = {
        "status": "degraded",
        "services": [
            service("alden", port=8888, pid=41022, health="healthy"),
            service(
                "vault",
                port=8001,
                pid=None,
                status="starting",
                state="backoff",
                health="unhealthy",
                restart_count=2,
                restart_backoff=4.0,
                last_health_check=NOW - 9,
                error_message="Connection refused",
            ),
            service("core", pid=41030, started_at=NOW - 7300, health="unhealthy"),
            service(
                "synapse",
                port=8002,
                pid=None,
                status="error",
                state="failed",
                started_at=None,
                last_health_check=None,
                restart_count=5,
                error_message="exited with status 78:\nthe key does not match its data",
            ),
        ],
    }
    assert render_status_table(health, now=NOW) == (
        "hearthlink: degraded (1/4 services healthy)\n"
        "NAME     STATE                PID    PORT  UPTIME  RESTARTS  LAST CHECK  ERROR\n"
        "alden    running              41022  8888  3m12s   0         2s ago      -\n"
        "vault    backoff (4s)         -      8001  -       2         9s ago      "
        "Connection refused\n"
        "core     running (unhealthy)  41030  8000  2h01m   0         2s ago      -\n"
        "synapse  failed               -      8002  -       5         -           "
        "exited with status 78: the key does not match its data\n"
    )


def test_status_without_finer_fields() -> None:
    health = {
        "status": "starting",
        "services": [service("a"), service("b", status="starting", pid=7, last_health_check=None)],
    }
    lines = render_status_table(health, now=NOW).splitlines()
    assert lines[0] == "hearthlink: starting (1/2 services healthy)"
    assert lines[2].split()[:2] == ["a", "running"]
    assert lines[3].split() == ["b", "starting", "7", "8000", "3m12s", "0", "-", "-"]


def test_stopped_service_has_no_uptime() -> None:
    health = {"status": "stopping", "services": [service("a", status="stopped", pid=None)]}
    row = render_status_table(health, now=NOW).splitlines()[2]
    assert row.split() == ["a", "stopped", "-", "8000", "-", "0", "2s", "ago", "-"]


def test_no_secrets_shown() -> None:
    health = {
        "status": "healthy",
        "services": [
            service(
                "vault",
                env={"HEARTHLINK_API_TOKEN": "tok-SECRET", "HEARTHLINK_VAULT_KEY": "key-SECRET"},
                error_message="request with Authorization: Bearer tok-SECRET failed; "
                "HEARTHLINK_VAULT_KEY=key-SECRET",
            )
        ],
    }
    table = render_status_table(health, now=NOW)
    assert "SECRET" not in table
    assert "Bearer ***" in table


def test_long_error_is_cut() -> None:
    health = {"status": "degraded", "services": [service("a", error_message="x" * 500)]}
    row = render_status_table(health, now=NOW).splitlines()[2]
    assert row.endswith("…")
    assert len(row) < 200


def test_no_services() -> None:
    assert render_status_table({"status": "healthy", "services": []}) == (
        "hearthlink: healthy (no services)\n"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (42.9, "42s"),
        (60, "1m00s"),
        (192, "3m12s"),
        (3600, "1h00m"),
        (7300, "2h01m"),
        (86_400 * 3 + 3600 * 4 + 5, "3d04h"),
        (-5, "0s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_what_a_notify_service_says_of_itself_follows_its_state() -> None:
    health = {
        "status": "healthy",
        "services": [service("db", state="healthy", notify_status="accepting connections")],
    }
    row = render_status_table(health, now=NOW).splitlines()[2]
    assert row.split()[:4] == ["db", "healthy:", "accepting", "connections"]


def test_a_service_left_out_of_the_run_says_so() -> None:
    health = {
        "status": "healthy",
        "services": [
            service("web", state="healthy", selected=True),
            service("tool", status="stopped", state="stopped", pid=None, selected=False),
        ],
    }
    rows = render_status_table(health, now=NOW).splitlines()
    assert rows[2].split()[:2] == ["web", "healthy"]
    assert rows[3].split()[:4] == ["tool", "stopped", "(not", "selected)"]


def test_a_scheduled_task_shows_when_it_runs_next() -> None:
    health = {
        "status": "healthy",
        "services": [
            service("backup", status="stopped", state="completed", pid=None, next_run=NOW + 270),
            service("report", status="running", state="starting", next_run=NOW + 30),
        ],
    }
    lines = render_status_table(health, now=NOW).splitlines()
    assert "completed (next in 4m30s)" in lines[2]
    # While a run goes, its state is what shows.
    assert "next in" not in lines[3]
