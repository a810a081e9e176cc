"""Operator commands and systemd integration against a real running supervisor."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import wait_for
from tests.stack import Stack, all_gone, run_command, running
from tests.unit.test_systemd_unit import verify

SERVICE_STATUS_FIELDS = {
    "name",
    "status",
    "port",
    "pid",
    "started_at",
    "health_check_url",
    "last_health_check",
    "error_message",
    "restart_count",
    "last_restart",
    "restart_backoff",
}


def status_json(config: Path) -> dict[str, Any]:
    result = run_command("status", "--json", "--config", str(config), cwd=config.parent)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def service(health: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in health["services"] if s["name"] == name)
    return found


def test_status_restart_and_stop(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.restart.update(max_attempts=1, initial_backoff=0.2)
    flaky_flag = tmp_path / "flaky-exits"
    flaky_flag.touch()
    stack.add("web")
    stack.add("flaky", env={"TESTSVC_FAIL_FILE": str(flaky_flag)})
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("^web service is healthy$")
        sup.wait_line(r"^Service flaky has failed 1 times, not restarting$", timeout=20)
        health = status_json(config)
        assert health["status"] == "degraded"
        web, flaky = service(health, "web"), service(health, "flaky")
        assert set(web) >= SERVICE_STATUS_FIELDS
        assert web["status"] == "running"
        assert web["pid"] == stack.pids("web")[0]
        assert web["port"] == stack.port("web")
        assert web["health_check_url"] == f"http://127.0.0.1:{stack.port('web')}/health"
        assert web["restart_count"] == 0
        assert web["last_restart"] is None
        assert web["error_message"] is None
        assert time.time() - 30 < web["started_at"] <= time.time()
        assert time.time() - 30 < web["last_health_check"] <= time.time()
        assert flaky["status"] == "error"
        assert flaky["pid"] is None
        assert flaky["restart_count"] == 1
        assert flaky["error_message"] == "exited (exit status 1)"
        assert flaky["last_restart"] is not None
        assert flaky["restart_backoff"] == 0.4

        table = run_command("status", "--config", str(config), cwd=tmp_path)
        assert table.returncode == 0
        assert "NAME" in table.stdout
        assert "RESTARTS" in table.stdout
        assert "failed" in table.stdout
        token = (stack.data_dir / "api.token").read_text().strip()
        assert token not in table.stdout
        assert token not in json.dumps(health)

        # Restart of a failed service: count reset, started again.
        flaky_flag.unlink()
        result = run_command("restart", "flaky", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        sup.wait_line("^flaky service is healthy$")
        flaky = service(status_json(config), "flaky")
        assert flaky["restart_count"] == 0
        assert flaky["status"] == "running"
        assert status_json(config)["status"] == "healthy"

        # Restart of a running service: a new pid, not counted.
        old = service(status_json(config), "web")["pid"]
        result = run_command("restart", "web", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0
        sup.wait_line("^web service is healthy$", count=2)
        new = service(status_json(config), "web")
        assert new["pid"] != old
        assert new["restart_count"] == 0

        unknown = run_command("restart", "ghost", "--config", str(config), cwd=tmp_path)
        assert unknown.returncode == 1
        assert "ghost" in unknown.stderr

        pids = stack.pids()
        result = run_command("stop", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert sup.wait(timeout=5) == 0
    all_gone(pids, timeout=0.5)
    assert not (stack.data_dir / "run" / "hearthlink.sock").exists()
    for command in (["status"], ["stop"], ["restart", "web"]):
        result = run_command(*command, "--config", str(config), cwd=tmp_path)
        assert result.returncode == 1
        assert "no hearthlink supervisor is running" in result.stderr


def test_restart_during_backoff_keeps_its_wait(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.restart.update(max_attempts=5, initial_backoff=3.0, max_backoff=3.0)
    stack.add("slowback", env={"TESTSVC_EXIT_AFTER": "0.3"})
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("^Restarting slowback service with exponential backoff$")
        began = time.monotonic()
        assert service(status_json(config), "slowback")["state"] == "backoff"
        result = run_command("restart", "slowback", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0
        sup.wait_line("Restart of slowback service requested: in backoff")
        sup.wait_line(r"^Service slowback restarted \(attempt 1\)", timeout=10)
        assert time.monotonic() - began > 2.0  # the 3 s wait was not cut short
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0


def test_control_socket_permissions_and_two_clients(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("one")
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("^one service is healthy$")
        sock = stack.data_dir / "run" / "hearthlink.sock"
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        results: list[int] = []

        def client() -> None:
            transport = httpx.HTTPTransport(uds=str(sock))
            with httpx.Client(transport=transport, base_url="http://x", timeout=5) as c:
                for _ in range(20):
                    results.append(c.get("/v1/health").status_code)

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == [200] * 40
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0


def test_logs_and_follow(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("chatty")
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("^chatty service is healthy$")
        result = run_command("logs", "chatty", "-n", "1", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0
        assert result.stdout.startswith("chatty listening on")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}
        follower = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hearthlink_trio",
                "logs",
                "chatty",
                "-f",
                "-n",
                "1",
                "--config",
                str(config),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        read_line = LineReader(follower)
        try:
            # The last line comes first: once it is printed, the follower is following.
            assert read_line().startswith("chatty listening on")
            run_command("restart", "chatty", "--config", str(config), cwd=tmp_path)
            # The old process's last words, then the new one's first (anything between is
            # shown by the assertion).
            seen = [read_line()]
            while not seen[-1].startswith("chatty listening on") and len(seen) < 10:
                seen.append(read_line())
            assert "chatty got SIGTERM, shutting down" in seen[:-1], seen
            assert seen[-1].startswith("chatty listening on"), seen
        finally:
            follower.send_signal(signal.SIGINT)
            follower.wait(5)
        assert follower.returncode == 0
        missing = run_command("logs", "ghost", "--config", str(config), cwd=tmp_path)
        assert missing.returncode == 1
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0


class LineReader:
    """Lines of a process's stdout pipe, each waited for at most ``timeout`` seconds."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buffer = b""

    def __call__(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(0.0, remaining))
            assert ready, f"no line within {timeout}s (have {self.buffer!r})"
            chunk = os.read(self.fd, 65536)
            assert chunk, f"end of output (have {self.buffer!r})"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


def _notify_socket(tmp_path: Path) -> tuple[socket.socket, Path]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    return sock, path


def test_sd_notify_ready_status_watchdog_stopping(tmp_path: Path) -> None:
    notify, path = _notify_socket(tmp_path)
    stack = Stack(tmp_path)
    stack.add("a")
    stack.add("b", depends_on=["a"])
    config = stack.write()
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    messages: list[tuple[float, str]] = []
    try:
        with running(config, env=env) as sup:

            def collect_until(predicate: str) -> None:
                while not any(predicate in m for _, m in messages):
                    messages.append((time.monotonic(), notify.recv(4096).decode()))

            collect_until("READY=1")
            collect_until("WATCHDOG=1")
            while sum("WATCHDOG=1" in m for _, m in messages) < 4:
                messages.append((time.monotonic(), notify.recv(4096).decode()))
            sup.signal(signal.SIGTERM)
            collect_until("STOPPING=1")
            assert sup.wait() == 0
    finally:
        notify.close()
    texts = [m for _, m in messages]
    assert "READY=1\nSTATUS=2/2 healthy" in texts
    assert "STOPPING=1\nSTATUS=stopping" in texts
    # Before READY, only the progress (how many are healthy so far: a may have been found
    # healthy before the supervisor loaded, with b started early after it).
    before_ready = texts[: texts.index("READY=1\nSTATUS=2/2 healthy")]
    progress = [m for m in before_ready if m != "WATCHDOG=1"]
    assert all(re.fullmatch(r"STATUS=[01]/2 healthy", m) for m in progress), progress
    assert texts.index("READY=1\nSTATUS=2/2 healthy") < texts.index("STOPPING=1\nSTATUS=stopping")
    pings = [t for t, m in messages if m == "WATCHDOG=1"]
    # Every half WATCHDOG_USEC (0.2 s) on average. The exact cadence is tested on the virtual
    # clock (test_sdnotify.py); here receive times carry this process's scheduling jitter.
    mean_gap = (pings[-1] - pings[0]) / (len(pings) - 1)
    assert 0.1 < mean_gap < 0.6, pings


def test_children_do_not_inherit_notify_socket(tmp_path: Path) -> None:
    notify, path = _notify_socket(tmp_path)
    stack = Stack(tmp_path)
    stack.add("a")
    try:
        with running(
            stack.write(), env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "10000000"}
        ) as sup:
            sup.wait_line("^a service is healthy$")
            env = httpx.get(f"http://127.0.0.1:{stack.port('a')}/env", trust_env=False).json()
            assert "NOTIFY_SOCKET" not in env
            assert not any(key.startswith("WATCHDOG_") for key in env)
            sup.signal(signal.SIGINT)
            assert sup.wait() == 0
    finally:
        notify.close()


def test_systemd_unit_for_this_installation(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("a")
    config = stack.write()
    result = run_command("systemd", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    unit = result.stdout
    assert "Type=notify" in unit
    assert "WatchdogSec=" in unit
    assert "Restart=on-failure" in unit
    assert str(config) in unit
    unit_dir = tmp_path / "xdg"
    installed = run_command(
        "systemd",
        "--install",
        "--config",
        str(config),
        cwd=tmp_path,
        env={"XDG_CONFIG_HOME": str(unit_dir)},
    )
    assert installed.returncode == 0, installed.stderr
    path = unit_dir / "systemd" / "user" / "hearthlink.service"
    assert path.read_text() == unit
    assert "systemctl --user" in installed.stdout
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    assert verify(path, tmp_path) == ""


def test_a_failed_dependency_ends_start_up_and_its_dependent_waits(tmp_path: Path) -> None:
    notify, path = _notify_socket(tmp_path)
    stack = Stack(tmp_path)
    stack.restart.update(max_attempts=0)
    stack.add(
        "base",
        env={
            "TESTSVC_EXIT_AFTER": "0",
            "TESTSVC_EXIT_CODE": "78",
            "TESTSVC_LAST_WORDS": "bad token $HEARTHLINK_API_TOKEN",
        },
    )
    stack.add("app", depends_on=["base"])
    config = stack.write()
    try:
        with running(config, env={"NOTIFY_SOCKET": str(path)}) as sup:
            messages = []
            while not any("READY=1" in m for m in messages):
                messages.append(notify.recv(4096).decode())
            assert "READY=1\nSTATUS=0/2 healthy, base failed" in messages
            expected = "waiting for base to be healthy (base failed: bad token ***)"
            health = wait_for(
                lambda: (
                    (h := status_json(config))
                    and service(h, "app")["error_message"] == expected
                    and h
                )
            )
            assert health["status"] == "degraded"
            app, base = service(health, "app"), service(health, "base")
            assert app["state"] == "waiting"
            # The failed service's last line is its error, with the API token masked.
            assert base["error_message"] == "bad token ***"
            token = (stack.data_dir / "api.token").read_text().strip()
            assert token not in sup.stderr()
            sup.signal(signal.SIGINT)
            assert sup.wait() == 0
    finally:
        notify.close()
