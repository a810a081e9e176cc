"""SIGHUP: re-read the config and apply the difference."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.helpers import pid_alive, wait_for
from tests.stack import Stack, all_gone, running


def test_reload_adds_removes_changes_and_keeps(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    for name in ("keep", "drop", "change"):
        stack.add(name)
    config = stack.write()
    with running(config) as sup:
        for name in ("keep", "drop", "change"):
            sup.wait_line(rf"^{name} service is healthy$")
        keep, drop, change = (stack.pids(n)[0] for n in ("keep", "drop", "change"))
        del stack.services["drop"]
        stack.services["change"]["env"]["CHANGED"] = "yes"
        stack.add("new")
        stack.write()
        sup.signal(signal.SIGHUP)
        sup.wait_line(r"^Config reloaded: added new; removed drop; changed change$")
        sup.wait_line(r"^new service is healthy$")
        sup.wait_line(r"^change service is healthy$", count=2)
        all_gone([drop], timeout=5)
        assert pid_alive(keep)
        assert stack.pids("keep") == [keep]
        wait_for(lambda: len(stack.pids("change")) == 2, timeout=5)
        assert not pid_alive(change)
        assert "Stopped drop service\n" in sup.stderr()

        # A broken config is refused as a whole; everything keeps running.
        running_pids = [p for p in stack.pids() if pid_alive(p)]
        config.write_text(config.read_text() + "\n[services.broken]\nport = 'x'\n")
        sup.signal(signal.SIGHUP)
        sup.wait_line(r"^hearthlink.toml: services.broken.port: Input should be a valid integer")
        sup.wait_line(r"^Config reload refused; the running services keep their config$")
        assert all(pid_alive(p) for p in running_pids)
        assert len(running_pids) == 3
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0
    all_gone(running_pids, timeout=1)


def test_a_second_sighup_while_the_first_reload_is_stopping_services(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("slowstop", stop_timeout=1.0, env={"TESTSVC_IGNORE_TERM": "1"})
    config = stack.write()
    with running(config) as sup:
        sup.wait_line(r"^slowstop service is healthy$")
        # First reload: slowstop changed, so stopped (it takes stop_timeout to die).
        stack.services["slowstop"]["env"]["CHANGED"] = "1"
        stack.write()
        sup.signal(signal.SIGHUP)
        sup.wait_line(r"^Config reloaded: changed slowstop$")
        # Second reload while the first is still stopping it: one more service.
        stack.add("extra")
        stack.write()
        sup.signal(signal.SIGHUP)
        sup.wait_line(r"^Config reloaded: added extra$", timeout=10)
        sup.wait_line(r"^extra service is healthy$")
        sup.wait_line(r"^slowstop service is healthy$", count=2)
        pids = [p for p in stack.pids() if pid_alive(p)]
        assert len(pids) == 2
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0
    all_gone(pids, timeout=1)
