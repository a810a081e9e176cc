"""examples/stack.toml for real: Debian's PostgreSQL and Redis, a migration, a worker, an app.

Needs the packages postgresql and redis-server, and root (PostgreSQL runs as `postgres`).
Under CI=true a missing piece is a failure; elsewhere the test is skipped saying what to
install.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, pid_alive, wait_for
from tests.stack import run_command, running

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "stack.toml"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "PostgreSQL runs as the user postgres here: run the tests as root"
    if not (PG_BIN / "postgres").exists() or shutil.which("psql") is None:
        return "install Debian's PostgreSQL 15: apt-get install postgresql"
    if shutil.which("redis-server") is None:
        return "install Redis: apt-get install redis-server"
    return None


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Path, dict[str, int], Path]]:
    missing = _missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the real-stack test must run in CI: {missing}")
        pytest.skip(missing)
    # PostgreSQL (as `postgres`) must reach its data: not under /tmp, which is root's only.
    data = Path(tempfile.mkdtemp(prefix="hearthlink-stack-", dir="/var/tmp"))
    ports = {"postgres": free_port(), "redis": free_port(), "app": free_port()}
    text = EXAMPLE.read_text()
    text = text.replace("/var/tmp/hearthlink-stack", str(data))
    for default, name in ((55432, "postgres"), (56379, "redis"), (58080, "app")):
        text = text.replace(str(default), str(ports[name]))
    shutil.copytree(EXAMPLE.parent / "stack", tmp_path / "stack")
    config = tmp_path / "stack.toml"
    config.write_text(text)
    try:
        yield config, ports, data
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _get(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def _answers(port: int) -> dict[str, object] | None:
    with contextlib.suppress(OSError, ValueError):
        return _get(port)
    return None


def status_json(config: Path) -> dict[str, Any]:
    result = run_command("status", "--json", "--config", str(config), cwd=config.parent)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def _order(lines: list[str], *wanted: str) -> list[int]:
    return [next(i for i, line in enumerate(lines) if re.fullmatch(w, line)) for w in wanted]


def test_the_example_stack_runs_recovers_and_stops_in_order(
    stack: tuple[Path, dict[str, int], Path],
) -> None:
    config, ports, _data = stack
    with running(config) as sup:
        sup.wait_line(r"^app service is healthy$", timeout=120)
        lines = sup.stderr().splitlines()
        first = _order(
            lines,
            r"initdb task completed \(exit status 0\)",
            r"Started postgres service .*",
            r"postgres service is healthy",
            r"Started migrate task .*",
            r"migrate task completed \(exit status 0\)",
            r"Started app service .*",
        )
        assert first == sorted(first)
        assert _order(lines, r"redis service is healthy")[0] < first[-1]
        assert _order(lines, r"redis service is healthy", r"Started worker service .*") == sorted(
            _order(lines, r"redis service is healthy", r"Started worker service .*")
        )
        answer = _get(ports["app"])
        assert answer["greeting"] == "hello from postgres"
        assert answer["hits"] == 1
        health = status_json(config)
        assert health["status"] == "healthy"
        by_name = {s["name"]: s for s in health["services"]}
        assert by_name["migrate"]["state"] == by_name["initdb"]["state"] == "completed"
        assert by_name["worker"]["port"] is None

        # PostgreSQL told its readiness itself (probe = "notify"), on its own socket.
        pg = by_name["postgres"]["pid"]
        pg_env = Path(f"/proc/{pg}/environ").read_bytes().split(b"\0")
        assert any(var.startswith(b"NOTIFY_SOCKET=@hearthlink/") for var in pg_env)
        assert by_name["postgres"]["health_check_url"] is None
        assert "ignored: not a process of postgres" not in sup.stderr()

        # The app's port is held (socket = true): a restart rolls, the new app answers.
        app = by_name["app"]["pid"]
        result = run_command("restart", "app", "--config", str(config), cwd=config.parent)
        assert result.returncode == 0, result.stderr
        wait_for(lambda: _answers(ports["app"]) and not pid_alive(app), timeout=30)
        sup.wait_line(rf"^Rolling restart of app: PID \d+ is ready, stopping PID {app}$")
        assert _get(ports["app"])["greeting"] == "hello from postgres"

        # SIGKILL of PostgreSQL: restarted, healthy again (its new READY=1), and the app
        # answers again.
        os.kill(pg, signal.SIGKILL)
        sup.wait_line(r"^Service postgres restarted \(attempt 1\).*", timeout=30)
        wait_for(
            lambda: (
                (h := status_json(config))
                and {s["name"]: s for s in h["services"]}["postgres"]["state"] == "healthy"
            ),
            timeout=60,
        )
        recovered = wait_for(lambda: _answers(ports["app"]), timeout=30)
        assert recovered["greeting"] == "hello from postgres"
        pids = [s["pid"] for s in status_json(config)["services"] if s["pid"]]

        sup.signal(signal.SIGINT)
        assert sup.wait(timeout=60) == 0
        stops = [line for line in sup.stderr().splitlines() if line.startswith("Stopped ")]
        stopped = [line.split()[1] for line in stops]
        assert stopped.index("app") < stopped.index("postgres")
        assert stopped.index("app") < stopped.index("redis")
        assert stopped.index("worker") < stopped.index("redis")
        assert not any(pid_alive(pid) for pid in pids)

    # A second run finds the cluster and skips initdb.
    with running(config) as sup:
        sup.wait_line(r"^app service is healthy$", timeout=120)
        assert "initdb task completed (exit status 0)" in sup.stderr()
        assert "creating directory" not in sup.stdout()
        assert _get(ports["app"])["hits"] == 1  # Redis keeps nothing, PostgreSQL keeps its row
        sup.signal(signal.SIGINT)
        assert sup.wait(timeout=60) == 0
