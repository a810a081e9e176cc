"""Hooks and scheduled tasks with real processes: output in the log, pre_stop within the stop
grace, on_failure's reason, hanging hooks leave nothing, `restart` runs a scheduled task."""

from __future__ import annotations

import json
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

from tests.helpers import pid_alive, wait_for
from tests.stack import Stack, all_gone, run_command, running

PY = sys.executable


def python(code: str) -> list[str]:
    return [PY, "-c", code]


def hang(pid_file: Path) -> list[str]:
    """A hook that never ends, with a child in its group; both pids go to ``pid_file``."""
    return ["sh", "-c", f"sleep 300 & echo $! >> {pid_file}; echo $$ >> {pid_file}; wait"]


def log_of(stack: Stack, name: str) -> str:
    path = stack.data_dir / "logs" / f"{name}.log"
    return path.read_text() if path.exists() else ""


def test_post_start_runs_once_healthy_and_its_output_is_prefixed(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add(
        "web",
        post_start=python(
            "import os, sys; print('warmed', os.environ['HEARTHLINK_SERVICE'], '{port}');"
            "print('to stderr', file=sys.stderr)"
        ),
    )
    config = stack.write()
    port = stack.port("web")
    with running(config) as sup:
        sup.wait_line("^web service is healthy$")
        wait_for(lambda: "to stderr" in log_of(stack, "web"), what="the hook's output")
        log = log_of(stack, "web")
        assert f"web hook | warmed web {port}" in log
        assert "web hook | to stderr" in log
        # It ran after the first pass: the service had started listening before.
        assert log.index("web listening on") < log.index("web hook | warmed")
        wait_for(lambda: f"web hook | warmed web {port}" in sup.stdout(), what="console")
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    assert "hook_failed" not in sup.stderr() and "hook of web" not in sup.stderr()


def test_pre_stop_runs_before_the_stop_signal(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add(
        "web",
        pre_stop=python(
            "import os, time; f = open(os.environ['TESTSVC_EVENTS'], 'a');"
            "f.write(f'prestop web {time.monotonic():.6f}\\n')"
        ),
    )
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("^web service is healthy$")
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    kinds = [kind for kind, _ in stack.event_lines() if kind in ("prestop", "stop")]
    assert kinds == ["prestop", "stop"]


def test_a_hanging_pre_stop_still_leaves_the_sigkill_on_time(tmp_path: Path) -> None:
    stack = Stack(tmp_path, supervisor={"stop_timeout": 1.5, "hook_timeout": 30})
    hook_pids = tmp_path / "hook-pids"
    stack.add(
        "web",
        env={"TESTSVC_IGNORE_TERM": "1"},
        pre_stop=hang(hook_pids),
    )
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("^web service is healthy$")
        service_pids = stack.pids("web")
        began = time.monotonic()
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
        took = time.monotonic() - began
    # The hook took the whole grace (1.5 s), so the SIGKILL came right after the SIGTERM:
    # without sharing, a service ignoring SIGTERM would have taken 1.5 s more.
    assert 1.4 < took < 2.6, took
    err = sup.stderr()
    assert "pre_stop hook of web service timed out after 1.5s and was killed" in err
    pids = [int(line) for line in hook_pids.read_text().split()]
    assert len(pids) == 2
    all_gone(pids + service_pids)


def test_on_failure_gets_the_reason_and_a_hanging_hook_leaves_no_process(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path)
    hook_pids = tmp_path / "hook-pids"
    stack.add(
        "job",
        kind="task",
        restart="never",
        env={"TESTSVC_EXIT_AFTER": "0", "TESTSVC_EXIT_CODE": "3"},
        on_failure=python(
            "import os; print('failure:', os.environ['HEARTHLINK_FAILURE'], flush=True)"
        ),
    )
    stack.add(
        "web",
        env={"TESTSVC_EXIT_AFTER": "0"},
        restart="never",
        hook_timeout=0.5,
        on_failure=hang(hook_pids),
    )
    config = stack.write()
    with running(config) as sup:
        wait_for(
            lambda: "job hook | failure: exited (exit status 3)" in log_of(stack, "job"),
            what="on_failure's line",
        )
        sup.wait_line("on_failure hook of web service timed out after 0.5s and was killed")
        pids = [int(line) for line in hook_pids.read_text().split()]
        assert len(pids) == 2
        all_gone(pids)
        # Nothing else changed: the supervisor runs on, the services are failed as before.
        assert sup.proc.poll() is None
        status = run_command("status", "--json", "--config", str(config), cwd=tmp_path)
        states = {s["name"]: s["state"] for s in json.loads(status.stdout)["services"]}
        assert states == {"job": "failed", "web": "failed"}
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    assert "job hook | failure: exited (exit status 3)" in sup.stdout()


def test_restart_runs_a_scheduled_task_now_and_status_shows_next_run(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    runs = tmp_path / "runs"
    # Once a year at midnight on 1 January: never during the test unless asked.
    stack.services["yearly"] = {
        "command": ["sh", "-c", f"echo ran >> {runs}"],
        "kind": "task",
        "schedule": "0 0 1 1 *",
    }
    config = stack.write()
    with running(config) as sup:

        def status() -> dict[str, object]:
            result = run_command("status", "--json", "--config", str(config), cwd=tmp_path)
            if result.returncode != 0:  # the control socket is not up yet
                return {"next_run": None, "last_outcome": None}
            found: dict[str, object] = json.loads(result.stdout)["services"][0]
            return found

        first = wait_for(
            lambda: (s := status())["next_run"] is not None and s, what="next_run", timeout=15
        )
        now = datetime.now()
        assert first["next_run"] == datetime(now.year + 1, 1, 1).timestamp()
        assert first["state"] == "stopped" and first["last_outcome"] is None
        assert not runs.exists()
        result = run_command("restart", "yearly", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "running it now" in result.stdout + result.stderr
        sup.wait_line("^yearly task completed")
        assert runs.read_text() == "ran\n"
        done = wait_for(lambda: (s := status())["last_outcome"] == "completed" and s, what="run")
        assert done["state"] == "completed"
        assert done["next_run"] == first["next_run"]
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    assert not any(pid_alive(pid) for pid in stack.pids())


def test_a_critical_service_runs_on_failure_before_the_shutdown_it_causes(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path)
    marker = tmp_path / "notified"
    stack.add(
        "db",
        critical=True,
        restart="never",
        env={"TESTSVC_EXIT_AFTER": "0"},
        # Slow on purpose: the shutdown must wait for it, not kill it.
        on_failure=python(
            f"import os, time; time.sleep(0.5); open({str(marker)!r}, 'w').write("
            "os.environ['HEARTHLINK_FAILURE'])"
        ),
        # A crash gets no pre_stop: there is no process to stop.
        pre_stop=python(f"open({str(tmp_path / 'pre-stop-ran')!r}, 'w')"),
    )
    config = stack.write()
    with running(config) as sup:
        assert sup.wait() == 1
    assert marker.read_text() == "exited (exit status 1)"
    assert not (tmp_path / "pre-stop-ran").exists()
    assert "critical service db gave up: exited (exit status 1)" in sup.stderr()


def test_each_replica_runs_its_own_post_start_which_ends_with_its_process(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path, supervisor={"hook_timeout": 60})
    pid_file = tmp_path / "hook-pids"
    stack.add(
        "web",
        replicas=2,
        post_start=["sh", "-c", f"echo started {{name}}; {hang(pid_file)[2]}"],
    )
    config = stack.write()

    def hook_pids() -> list[int]:
        return [int(p) for p in pid_file.read_text().split()] if pid_file.exists() else []

    with running(config) as sup:
        wait_for(lambda: len(hook_pids()) == 4, what="both replicas' hooks")
        for name in ("web-1", "web-2"):
            wait_for(lambda n=name: f"{n} hook | started {n}" in log_of(stack, n), what=name)
        first = hook_pids()
        assert all(pid_alive(pid) for pid in first)
        result = run_command("restart", "web", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        # The old processes' hooks went with them; the new processes run theirs.
        all_gone(first)
        wait_for(lambda: len(hook_pids()) == 8, what="the new processes' hooks")
        second = hook_pids()[4:]
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone(second)
    assert "hook of web" not in sup.stderr()  # ended with their process: not a failure


def test_a_hook_does_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    stack = Stack(tmp_path, supervisor={"hook_timeout": 60})
    pid_file = tmp_path / "hook-pids"
    stack.add("web", post_start=hang(pid_file))
    config = stack.write()
    with running(config) as sup:
        wait_for(lambda: pid_file.exists() and len(pid_file.read_text().split()) == 2)
        pids = [int(p) for p in pid_file.read_text().split()]
        service_pids = stack.pids("web")
        sup.kill()  # SIGKILL: no stop, no sweep by the supervisor itself
        # The hook's whole group goes with it (its child too, not only the direct child).
        all_gone(pids + service_pids, timeout=3)
