"""No orphans: nothing a service started outlives its stop or the supervisor, even SIGKILLed.

Each scenario runs twice where it can: with the run's cgroups (as root on a writable cgroup2
mount) and with ``HEARTHLINK_CGROUPS=off``, the fallback of process groups, the subreaper and
the run's mark in the environment.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from hearthlink_trio.process import cgroups
from tests.helpers import pid_alive, wait_for
from tests.stack import (
    Running,
    Stack,
    all_gone,
    children,
    run_command,
    running,
    sentinel_of,
)

MODES = ["cgroup", "fallback"]


def _cgroups_possible() -> str | None:
    """None if this session can make cgroups, else why not."""
    run, why = cgroups.create_run_cgroup()
    if run is None:
        return why
    run.rmdir()
    return None


def mode_env(mode: str) -> dict[str, str]:
    if mode == "cgroup":
        why = _cgroups_possible()
        if why is not None:
            pytest.skip(f"cgroup v2 not writable here: {why}")
        return {}
    return {"HEARTHLINK_CGROUPS": "off"}


def escapers(stack: Stack) -> Stack:
    stack.add("grouped", env={"TESTSVC_GRANDCHILD": "1"})
    stack.add("setsid", env={"TESTSVC_SETSID": "1"})
    stack.add("daemon", env={"TESTSVC_DOUBLE_FORK": "1"})
    return stack


def wait_started(stack: Stack, sup: Running) -> list[int]:
    for name in ("grouped", "setsid", "daemon"):
        sup.wait_line(f"^{name} service is healthy$")
    pids: list[int] = wait_for(
        lambda: (
            len(stack.pids("grandchild")) == len(stack.pids("setsid-child")) == 1
            and len(stack.pids("daemon-child")) == 1
            and stack.pids()
        ),
        what="every child to write its pid",
    )
    assert all(pid_alive(pid) for pid in pids)
    return pids


@pytest.mark.parametrize("mode", MODES)
def test_sigkill_of_the_supervisor_leaves_nothing_within_a_second(
    tmp_path: Path, mode: str
) -> None:
    stack = escapers(Stack(tmp_path))
    with running(stack.write(), env=mode_env(mode)) as sup:
        line = sup.wait_line("^Process containment: ")[0]
        assert ("cgroup v2" in line) == (mode == "cgroup"), line
        pids = wait_started(stack, sup)
        sentinel = sentinel_of(sup)
        began = time.monotonic()
        sup.signal(signal.SIGKILL)
        sup.wait()
        all_gone([*pids, sentinel], timeout=1.0)
        took = time.monotonic() - began
    print(f"SIGKILL of the supervisor -> all {len(pids) + 1} gone in {took * 1000:.0f} ms")
    # The sentinel says so once it has killed them: it may still be writing.
    wait_for(
        lambda: "the supervisor" in sup.stderr() and "died; killed" in sup.stderr(),
        timeout=5.0,
        what="the sentinel's line",
    )
    assert not list(Path("/sys/fs/cgroup/unified").glob(f"hearthlink-{sup.pid}"))


@pytest.mark.parametrize("mode", MODES)
def test_a_graceful_stop_catches_setsid_and_double_forked_children(
    tmp_path: Path, mode: str
) -> None:
    stack = escapers(Stack(tmp_path))
    with running(stack.write(), env=mode_env(mode)) as sup:
        pids = wait_started(stack, sup)
        sentinel = sentinel_of(sup)
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone([*pids, sentinel], timeout=1.0)
    assert "died; killed" not in sup.stderr()


@pytest.mark.parametrize("mode", MODES)
def test_a_restart_catches_them_and_leaves_no_zombie(tmp_path: Path, mode: str) -> None:
    stack = escapers(Stack(tmp_path))
    config = stack.write()
    with running(config, env=mode_env(mode)) as sup:
        wait_started(stack, sup)
        for name, child in (
            ("setsid", "setsid-child"),
            ("daemon", "daemon-child"),
            ("grouped", "grandchild"),
        ):
            old = stack.pids(child)
            result = run_command("restart", name, "--config", str(config), cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            all_gone(old, timeout=3.0)
        sup.wait_line("^daemon service is healthy$", count=2)
        wait_for(lambda: "Z" not in children(sup.pid).values(), timeout=5.0, what="no zombie child")
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0


def test_a_service_runs_in_its_own_cgroup_and_reports_its_usage(tmp_path: Path) -> None:
    env = mode_env("cgroup")
    stack = Stack(tmp_path)
    stack.add("web", env={"TESTSVC_GRANDCHILD": "1"})
    config = stack.write()
    with running(config, env=env) as sup:
        sup.wait_line("^web service is healthy$")
        web, grandchild = stack.pids("web")[0], stack.pids("grandchild")[0]
        for pid in (web, grandchild):
            text = Path(f"/proc/{pid}/cgroup").read_text()
            assert f"hearthlink-{sup.pid}/web\n" in text, text
        result = run_command("status", "--json", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        (status,) = json.loads(result.stdout)["services"]
        assert isinstance(status["cpu_usec"], int) and status["cpu_usec"] > 0
        assert "memory_bytes" in status
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    assert not list(Path("/sys/fs/cgroup/unified").glob(f"hearthlink-{sup.pid}"))


def test_without_cgroups_status_has_the_groups_memory_and_no_cpu_usec(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web")
    config = stack.write()
    with running(config, env=mode_env("fallback")) as sup:
        sup.wait_line(r"^Process containment: process groups \+ subreaper \(no writable cgroup2")
        sup.wait_line("^web service is healthy$")
        result = run_command("status", "--json", "--config", str(config), cwd=tmp_path)
        (status,) = json.loads(result.stdout)["services"]
        assert status["cpu_usec"] is None
        # The summed RSS of its process group (read a moment apart from the main process's).
        assert status["memory_bytes"] > status["rss_bytes"] // 2 > 0
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0


def test_the_stop_says_what_it_waits_for_once_a_second(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("stubborn", stop_timeout=2.6, env={"TESTSVC_IGNORE_TERM": "1", "TESTSVC_FORK": "2"})
    with running(stack.write()) as sup:
        sup.wait_line("^stubborn service is healthy$")
        pid = stack.pids("stubborn")[0]
        pids = stack.pids()
        sup.signal(signal.SIGTERM)
        lines = sup.wait_line("^waiting for stubborn to stop", count=2)
        assert sup.wait() == 0
    assert lines == [
        f"waiting for stubborn to stop (pid {pid}, SIGTERM sent 1s ago, "
        "3 processes left in its group)",
        f"waiting for stubborn to stop (pid {pid}, SIGTERM sent 2s ago, "
        "3 processes left in its group)",
    ]
    all_gone(pids, timeout=0.5)
