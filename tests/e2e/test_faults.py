"""Fault cases with real processes: full disks, read-only folders, corrupted files, a deleted
control socket, services that misbehave, bursts of signals and requests, a closed stdout."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import pid_alive, wait_for
from tests.stack import Stack, all_gone, children, run_command, running


def test_a_full_log_disk_is_said_once_and_the_console_goes_on(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web")
    stack.add("other")
    logs = stack.data_dir / "logs"
    logs.mkdir(parents=True)
    os.symlink("/dev/full", logs / "web.log")  # every write fails with ENOSPC
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("^web service is healthy$")
        sup.wait_line("^other service is healthy$")
        result = run_command("restart", "web", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        sup.wait_line("^web service is healthy$", count=2)
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    err = sup.stderr()
    assert err.count("Cannot write the log file") == 1, err
    assert "No space left on device" in err and "Traceback" not in err
    # The console got every line of both incarnations; the other log file lost nothing.
    assert sup.stdout().count("web | web listening on") == 2
    assert "other listening on" in (logs / "other.log").read_text()


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only for root too: a read-only bind mount of itself."""
    try:
        subprocess.run(["mount", "--bind", folder, folder], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot bind-mount here: {exc}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", folder], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", folder], check=True)


def test_a_read_only_data_dir_warns_once_and_supervision_goes_on(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web")
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("^web service is healthy$")
        with read_only(stack.data_dir / "run"):
            for n in (2, 3):
                result = run_command("restart", "web", "--config", str(config), cwd=tmp_path)
                assert result.returncode == 0, result.stderr
                sup.wait_line("^web service is healthy$", count=n)
            sup.signal(signal.SIGTERM)
            assert sup.wait() == 0
    err = sup.stderr()
    assert err.count("Could not record the service process groups") == 1, err
    assert "Read-only file system" in err


def test_corrupt_group_record_and_lock_file_between_runs(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web")
    config = stack.write()
    run_dir = stack.data_dir / "run"
    run_dir.mkdir(parents=True, mode=0o700)
    (run_dir / "groups.json").write_bytes(b'{"web": [12, "x"')
    (run_dir / "supervisor.lock").write_bytes(b"\x00\xffgarbage")
    with running(config) as sup:
        sup.wait_line("^web service is healthy$")
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    err = sup.stderr()
    assert "The process group record" in err and "groups.json.corrupt" in err
    assert "not a supervisor's pid (corrupted)" in err and "it was taken and rewritten" in err


def test_a_deleted_control_socket_is_noticed_and_created_again(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web")
    config = stack.write()
    socket_path = stack.data_dir / "run" / "hearthlink.sock"
    with running(config) as sup:
        sup.wait_line("^web service is healthy$")
        socket_path.unlink()
        result = run_command("status", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 1
        assert f"the supervisor (pid {sup.pid})" in result.stderr
        assert "it creates it again within a few seconds" in result.stderr
        sup.wait_line("Control socket .* was deleted; it was created again", timeout=10)
        result = run_command("status", "--json", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["status"] == "healthy"
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    assert not socket_path.exists()


def test_a_service_that_closes_its_output_is_still_supervised(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("mute", env={"TESTSVC_CLOSE_OUTPUT": "1"})
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("^mute service is healthy$")
        first = stack.pids("mute")
        result = run_command("restart", "mute", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        all_gone(first)
        sup.wait_line("^mute service is healthy$", count=2)
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone(stack.pids())


def test_200_children_ignoring_sigterm_are_gone_after_stop_timeout(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("forker", stop_timeout=0.5, env={"TESTSVC_IGNORE_TERM": "1", "TESTSVC_FORK": "200"})
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("^forker service is healthy$", timeout=30)
        first = wait_for(lambda: len(stack.pids("forked")) == 200 and stack.pids(), timeout=20)
        result = run_command("restart", "forker", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        all_gone(first, timeout=5)
        wait_for(lambda: "Z" not in children(sup.pid).values(), timeout=2, what="no zombie")
        sup.wait_line("^forker service is healthy$", count=2, timeout=30)
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone(stack.pids(), timeout=2)


def test_a_stopped_service_fails_its_probes_and_is_restarted(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("frozen")
    with running(stack.write()) as sup:
        sup.wait_line("^frozen service is healthy$")
        (pid,) = stack.pids("frozen")
        os.kill(pid, signal.SIGSTOP)
        sup.wait_line(r"^frozen service unhealthy \(.*\), scheduling restart$", timeout=20)
        sup.wait_line("^frozen service is healthy$", count=2, timeout=20)
        assert not pid_alive(pid)  # SIGTERM stays pending for a stopped process: SIGKILL
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone(stack.pids())


def test_a_burst_of_sighups_and_requests_leaves_the_services_alone(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web")
    stack.add("db")
    config = stack.write()
    socket_path = stack.data_dir / "run" / "hearthlink.sock"
    with running(config) as sup:
        sup.wait_line("^web service is healthy$")
        sup.wait_line("^db service is healthy$")
        before = sorted(stack.pids())
        for _ in range(1000):
            os.kill(sup.pid, signal.SIGHUP)
        transport = httpx.HTTPTransport(uds=os.fspath(socket_path))
        with httpx.Client(transport=transport, base_url="http://hearthlink", timeout=10) as c:
            for _ in range(1000):
                assert c.get("/v1/health").status_code == 200
        sup.wait_line("^Config reloaded")
        assert sorted(stack.pids()) == before
        assert all(pid_alive(pid) for pid in before)
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    assert "Traceback" not in sup.stderr()
    assert "Started web service" in sup.stderr() and sup.stderr().count("Started web") == 1


def test_stdout_a_closed_pipe_does_not_change_the_exit_code(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web", env={"TESTSVC_FLOOD": "200000"})
    config = stack.write()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hearthlink_trio", "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            cwd=tmp_path,
        )
    try:
        assert proc.stdout is not None
        proc.stdout.close()  # every write to stdout now fails with EPIPE
        wait_for(lambda: "web service is healthy" in err_path.read_text(), timeout=15)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, err_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err_path.read_text()
    assert "flood done" in (stack.data_dir / "logs" / "web.log").read_text()
