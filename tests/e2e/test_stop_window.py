"""A stop is graceful at every moment of a run, and nothing starts once it has begun.

The services that wait for nothing are spawned before trio and the supervisor have loaded.
A SIGTERM or SIGINT right then (or at any later moment) must still give every started
process its stop signal and its ``stop_timeout`` before the SIGKILL, announce it, say it
stopped, and exit 0.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import free_port, pid_alive, wait_for
from tests.stack import TESTSVC, Running, Stack, all_gone, children, running

STOP_TIMEOUT = 2.0


def _stack(tmp_path: Path) -> Stack:
    stack = Stack(tmp_path)
    # Ignores SIGTERM from its very first instruction (the shell's trap is inherited by the
    # exec'd program), so even a signal that comes before it could set up anything finds it
    # stubborn: only the SIGKILL after stop_timeout ends it.
    port = free_port()
    stack.add(
        "stubborn",
        port=port,
        stop_timeout=STOP_TIMEOUT,
        env={"TESTSVC_IGNORE_TERM": "1"},
    )
    del stack.services["stubborn"]["script"]
    stack.services["stubborn"]["command"] = [
        "sh",
        "-c",
        f"trap '' TERM; exec {sys.executable} {TESTSVC} --host 127.0.0.1 --port {port}",
    ]
    stack.add("polite")
    return stack


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _first_service_spawned(sup: Running) -> None:
    """Return the moment the supervisor has a child that is not its sentinel."""

    def spawned() -> bool:
        for pid in children(sup.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"sentinel_main" not in cmd:
                return True
        return False

    wait_for(spawned, timeout=15, interval=0.0005, what="a first service process")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
@pytest.mark.parametrize("moment", ["first-spawn", "all-answer"])
def test_a_stop_at_any_moment_is_graceful(tmp_path: Path, signum: int, moment: str) -> None:
    stack = _stack(tmp_path)
    config = stack.write()
    with running(config) as sup:
        if moment == "first-spawn":
            _first_service_spawned(sup)
        else:
            wait_for(
                lambda: all(_answers(stack.port(name)) for name in stack.services),
                timeout=15,
                interval=0.002,
                what="every service answering",
            )
        sent = time.monotonic()
        sup.signal(signum)
        code = sup.wait(STOP_TIMEOUT + 15)
        took = time.monotonic() - sent
    err = sup.stderr()
    assert code == 0, err
    stopping = f"Received {signal.Signals(signum).name}, stopping all services"
    assert stopping in err
    started = re.findall(r"Started (\w+) service on port \d+ with PID (\d+)", err)
    names = {name for name, _ in started}
    # Whatever was started is announced, and said stopped.
    for name in names:
        assert f"Stopped {name} service" in err, err
    if moment == "all-answer":
        assert names == {"stubborn", "polite"}
        # The polite one got its SIGTERM (it says so), and stopped as asked.
        assert ("stop", "polite") in stack.event_lines()
        assert "Stopped polite service\n" in err
    if "stubborn" in names:
        # The stubborn one lived its whole stop_timeout after the signal, then was killed.
        assert "Stopped stubborn service (killed by SIGKILL)" in err
        assert took >= STOP_TIMEOUT * 0.9, (took, err)
    assert took < STOP_TIMEOUT + 10, took
    all_gone([int(pid) for _, pid in started] + stack.pids())


def test_nothing_starts_once_the_stop_began(tmp_path: Path) -> None:
    # b waits for a; a stop that comes as a becomes healthy must not let b start after it.
    for delay in (0.0, 0.01, 0.03):
        root = tmp_path / f"run-{delay}"
        root.mkdir()
        stack = Stack(root)
        stack.add("a")
        stack.add("b", depends_on=["a"])
        config = stack.write()
        with running(config) as sup:
            port = stack.port("a")
            wait_for(lambda port=port: _answers(port), timeout=15, interval=0.001, what="a")
            time.sleep(delay)  # the moment of the signal, relative to a answering
            sup.signal(signal.SIGTERM)
            assert sup.wait(15) == 0
        lines = sup.stderr().splitlines()
        began = next(i for i, line in enumerate(lines) if "stopping all services" in line)
        late = [line for line in lines[began:] if line.startswith("Started ")]
        assert late == [], "\n".join(lines)
        all_gone(stack.pids())


def _open_events(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(str(path))
    sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def _chatty_stack(tmp_path: Path) -> Stack:
    stack = Stack(tmp_path)
    stack.add("chatty")
    stack.services["chatty"]["script"] = str(TESTSVC.parent / "chatter.py")
    return stack


def test_a_reader_that_stopped_reading_does_not_hold_up_the_exit(tmp_path: Path) -> None:
    stack = _chatty_stack(tmp_path)
    config = stack.write()
    sock_path = stack.data_dir / "run" / "hearthlink.sock"
    with running(config) as sup:
        sup.wait_line("chatty service is healthy")
        reader = _open_events(sock_path)
        try:
            # The reader takes nothing while the service writes about 1000 lines a second.
            time.sleep(1.0)
            sent = time.monotonic()
            sup.signal(signal.SIGTERM)
            assert sup.wait(15) == 0
            took = time.monotonic() - sent
        finally:
            reader.close()
    assert took < 2.0, (took, sup.stderr()[-3000:])
    all_gone(stack.pids())


def test_a_reader_that_falls_behind_is_dropped_with_its_last_line(tmp_path: Path) -> None:
    stack = _chatty_stack(tmp_path)
    config = stack.write()
    sock_path = stack.data_dir / "run" / "hearthlink.sock"
    with running(config) as sup:
        sup.wait_line("chatty service is healthy")
        reader = _open_events(sock_path)
        try:
            # Behind by far more than its buffer, but for less than the stall limit: it
            # is dropped by the stream, which says so in a last line.
            time.sleep(3.0)
            reader.settimeout(10)
            data = b""
            # Until the response ends (the connection itself may be kept alive).
            while not data.endswith(b"\r\n0\r\n\r\n"):
                chunk = reader.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
        finally:
            reader.close()
        sup.wait_line("Event stream: dropped a reader")
    text = data.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, text[:500]
    assert '"type":"dropped"' in lines[-1], lines[-3:]
    assert pid_alive(sup.pid) or sup.proc.returncode == 0
    all_gone(stack.pids())
