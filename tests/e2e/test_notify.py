"""probe = "notify": readiness, status and watchdog pings from the service (sd_notify)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from hearthlink_trio.process.notify import NotifyReceiver
from tests.helpers import pid_alive, wait_for
from tests.stack import Running, Stack, all_gone, run_command, running


def events_of(sup: Running) -> list[dict[str, Any]]:
    return [json.loads(line) for line in sup.stderr().splitlines() if line.startswith("{")]


def status_of(config: Path, name: str) -> dict[str, Any]:
    done = run_command("status", "--json", "--config", str(config), cwd=config.parent)
    assert done.returncode in (0, 1), done.stderr
    return next(s for s in json.loads(done.stdout)["services"] if s["name"] == name)


def notified_at(stack: Stack, name: str) -> float:
    for line in stack.events.read_text().splitlines():
        kind, who, when = line.split()
        if kind == "notified" and who == name:
            return float(when)
    raise AssertionError("never notified")


def test_ready_counts_only_once_sent_and_status_shows(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    env = {"TESTSVC_NOTIFY": "0.3", "TESTSVC_NOTIFY_STATUS": "serving 3 clients"}
    stack.add("web", probe="notify", env=env)
    config = stack.write()
    with running(config, "--log-format", "json") as sup:
        sup.wait_line(r'"event": "healthy"')
        (pid,) = stack.pids("web")
        got = {e["event"]: e for e in events_of(sup)}
        # Healthy once READY=1 was sent (0.3 s after it listened), not before.
        healthy_at = datetime.fromisoformat(got["healthy"]["ts"]).timestamp()
        assert healthy_at >= notified_at(stack, "web") - 0.002
        assert got["notify_status"]["notify_status"] == "serving 3 clients"
        status = status_of(config, "web")
        assert status["notify_status"] == "serving 3 clients"
        assert (status["state"], status["pid"]) == ("healthy", pid)
        # Its environment: its own socket, abstract, and no watchdog asked.
        env_seen = status_env(stack, "web")
        assert env_seen["NOTIFY_SOCKET"].startswith("@hearthlink/")
        assert "WATCHDOG_USEC" not in env_seen
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone([pid])


def test_a_message_from_another_process_does_not_count(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web", probe="notify")  # never says READY itself
    stack.add("other", probe="notify", env={"TESTSVC_NOTIFY": "0"})
    config = stack.write()
    with running(config) as sup:
        sup.wait_line(r"^other service is healthy$")
        wait_for(lambda: stack.pids("web"), timeout=5)
        (pid,) = stack.pids("web")
        target = status_env(stack, "web")["NOTIFY_SOCKET"]
        # This test process is no process of web: its READY=1 is ignored, and said so.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"READY=1", "\0" + target[1:])
        sup.wait_line(r"^notify message from pid \d+ ignored: not a process of web$", timeout=5)
        assert status_of(config, "web")["state"] == "starting"
        assert "web service is healthy" not in sup.stderr()
        assert pid_alive(pid)
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone([pid])


def status_env(stack: Stack, name: str) -> dict[str, str]:
    """The environment of service ``name``'s process, as it answers on ``/env``."""
    url = f"http://127.0.0.1:{stack.port(name)}/env"
    found: dict[str, str] = wait_for(lambda: _try_json(url), timeout=10, what=f"{url} answering")
    return found


def _try_json(url: str) -> dict[str, str] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body: dict[str, str] = json.loads(response.read())
            return body
    except OSError:
        return None


def test_a_watchdog_that_stops_pinging_is_restarted(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    env = {"TESTSVC_NOTIFY": "0", "TESTSVC_WATCHDOG_PINGS": "3"}
    stack.add("web", probe="notify", watchdog=0.6, env=env)
    config = stack.write()
    with running(config) as sup:
        sup.wait_line(r"^web service is healthy$")
        (first,) = stack.pids("web")
        assert status_env(stack, "web")["WATCHDOG_USEC"] == "600000"
        # Three pings, 0.2 s apart, then silence: 0.6 s later it is restarted.
        sup.wait_line(r"^web service unhealthy \(watchdog timeout\), scheduling restart$")
        sup.wait_line(r"^web service is healthy$", count=2)
        assert not pid_alive(first)
        assert len(stack.pids("web")) == 2
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone(stack.pids("web"))


@contextmanager
def sent_from_child(address: str, message: str, *, new_group: bool = False) -> Iterator[None]:
    """Send ``message`` to ``address`` from a child of this process (a descendant), which
    stays alive meanwhile (a sender already gone cannot be told apart: it is ignored)."""
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "s.sendto(sys.argv[2].encode(), '\\0' + sys.argv[1][1:])\n"
        "print('sent', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, address, message],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=new_group,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "sent\n"
        yield
    finally:
        child.kill()
        child.wait()


def test_the_receiver_counts_its_process_and_descendants_only() -> None:
    receiver = NotifyReceiver("db")
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        # Nothing yet; then this very process is "the service": itself and its children count.
        assert receiver.drain(0.0) is False
        receiver.pid = os.getpid()
        with sent_from_child(receiver.address, "STATUS=starting\nEXTEND_TIMEOUT_USEC=2500000"):
            assert receiver.drain(1.0)
        assert receiver.state.status == "starting"
        assert receiver.state.extend_until == 3.5
        # A child that left the process group is still a descendant.
        with sent_from_child(receiver.address, "READY=1\nWATCHDOG=1", new_group=True):
            assert receiver.drain(2.0)
        assert receiver.state.ready and receiver.state.last_ping == 2.0
        with sent_from_child(receiver.address, "MAINPID=1\nSTOPPING=1"):
            assert receiver.drain(3.0)
        assert receiver.state.stopping
        assert receiver.state.notes == [
            "MAINPID=1 from db refused: the supervisor keeps watching the process it started"
        ]
        receiver.state.notes.clear()
        # Now "the service" is the sleep: this process is its parent, not one of its own.
        receiver.pid = stranger.pid
        with sent_from_child(receiver.address, "STATUS=forged"):
            assert receiver.drain(4.0) is False
        assert receiver.state.status == "starting"
        assert receiver.state.notes[0].startswith("notify message from pid ")
        assert receiver.state.notes[0].endswith("ignored: not a process of db")
    finally:
        receiver.close()
        stranger.kill()
        stranger.wait()
