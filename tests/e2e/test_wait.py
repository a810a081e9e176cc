"""``hearthlink wait``: the real command against a real supervisor, through its event stream."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from hearthlink_trio.control.client import ControlClient
from tests.stack import Running, Stack, run_command, running


def _stack(tmp_path: Path) -> Stack:
    stack = Stack(tmp_path)
    # Listens only after a second: `wait` must block until then.
    stack.add("slow", env={"TESTSVC_DELAY": "1.0"})
    task = stack.add(
        "migrate", kind="task", command=[sys.executable, "-c", "import time; time.sleep(0.3)"]
    )
    del task["script"]
    return stack


def _state(stack: Stack, name: str) -> str:
    client = ControlClient(stack.data_dir / "run" / "hearthlink.sock")
    return next(s["state"] for s in client.health()["services"] if s["name"] == name)


def test_wait_returns_once_every_service_is_healthy_and_the_task_completed(
    tmp_path: Path,
) -> None:
    stack = _stack(tmp_path)
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("Health monitoring|Started slow", timeout=15)
        began = time.monotonic()
        done = run_command("wait", "--config", str(config), "--timeout", "20", cwd=tmp_path)
        waited = time.monotonic() - began
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "Ready: slow, migrate"
        assert _state(stack, "slow") == "healthy"
        assert _state(stack, "migrate") == "completed"
        assert waited < 10
        # Asked again once all is ready, it answers at once.
        again = run_command("wait", "slow", "--config", str(config), cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == "Ready: slow"


def test_wait_times_out_naming_the_laggard_and_its_state(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    flag = tmp_path / "unhealthy"
    flag.touch()
    stack.add("ok")
    stack.add("sick", env={"TESTSVC_UNHEALTHY_FILE": str(flag)})
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("ok service is healthy")
        began = time.monotonic()
        done = run_command(
            "wait", "ok", "sick", "--config", str(config), "--timeout", "0.8", cwd=tmp_path
        )
        assert done.returncode == 1
        assert 0.7 < time.monotonic() - began < 8
        assert "Not ready after 0.8s: sick (starting" in done.stderr, done.stderr
        assert "ok (" not in done.stderr
        # Healthy while a wait blocks: it returns as soon as the stream says so.
        waiter = Running(["wait", "sick", "--config", str(config), "--timeout", "20"], tmp_path)
        flag.unlink()
        assert waiter.wait(15) == 0, waiter.stderr()
        assert waiter.stdout().strip() == "Ready: sick"


def test_wait_fails_at_once_when_a_service_gives_up(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.restart["max_attempts"] = 0
    stack.add("broken", env={"TESTSVC_EXIT_AFTER": "0"})
    stack.add("fine")
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("fine service is healthy")
        done = run_command("wait", "--config", str(config), "--timeout", "30", cwd=tmp_path)
        assert done.returncode == 1
        assert "A service gave up: broken (failed" in done.stderr, done.stderr


def test_wait_for_an_unknown_service_or_without_a_supervisor_exits_1(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web", replicas=2)
    config = stack.write()
    nobody = run_command("wait", "--config", str(config), "--timeout", "1", cwd=tmp_path)
    assert nobody.returncode == 1
    assert "no hearthlink supervisor is running" in nobody.stderr
    negative = run_command("wait", "--config", str(config), "--timeout", "-1", cwd=tmp_path)
    assert negative.returncode == 2
    assert negative.stderr.strip() == "--timeout must be 0 or more"
    with running(config) as sup:
        sup.wait_line("web-2 service is healthy")
        unknown = run_command("wait", "nope", "--config", str(config), cwd=tmp_path)
        assert unknown.returncode == 1
        assert "no service named 'nope' (services: web-1, web-2)" in unknown.stderr
        # A replicated service's name means all its replicas.
        group = run_command("wait", "web", "--config", str(config), cwd=tmp_path)
        assert group.returncode == 0, group.stderr
        assert group.stdout.strip() == "Ready: web-1, web-2"


def test_wait_keeps_trying_while_a_supervisor_is_starting(tmp_path: Path) -> None:
    from hearthlink_trio.supervisor.preflight import acquire_lock

    stack = Stack(tmp_path)
    stack.add("web")
    config = stack.write()
    # The data dir's lock held, no socket yet: what a supervisor looks like while it starts.
    lock = acquire_lock(stack.data_dir / "run")
    try:
        began = time.monotonic()
        done = run_command("wait", "--config", str(config), "--timeout", "3", cwd=tmp_path)
        waited = time.monotonic() - began
    finally:
        lock.release()
    assert done.returncode == 1
    assert f"the supervisor (pid {os.getpid()}) running" in done.stderr, done.stderr
    assert waited >= 3.0  # tried until its timeout, not failed at once
