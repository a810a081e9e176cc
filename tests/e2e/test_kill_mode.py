"""``Child.stop``'s kill modes with real processes: "group" signals the whole group, "mixed"
the main process only, then SIGKILLs the group."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import trio

from hearthlink_trio.process.spawn import spawn
from tests.helpers import pid_alive

CHILD = """
import os, signal, sys, time
def term(*args):
    open(sys.argv[1], "w").write("child got SIGTERM")
    os._exit(0)
signal.signal(signal.SIGTERM, term)
print("child", os.getpid(), flush=True)
time.sleep(100)
"""

LEADER = """
import os, signal, subprocess, sys, time
def term(*args):
    open(sys.argv[1], "w").write("leader got SIGTERM")
    deadline = time.monotonic() + 0.5  # the child's last words, if it got the signal too
    while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
        time.sleep(0.01)
    os._exit(0)
signal.signal(signal.SIGTERM, term)
subprocess.Popen([sys.executable, "-c", sys.argv[3], sys.argv[2]])
time.sleep(100)
"""


@pytest.mark.parametrize("kill_mode", ["group", "mixed"])
async def test_kill_mode(tmp_path: Path, kill_mode: str) -> None:
    leader_file, child_file = tmp_path / "leader", tmp_path / "child"
    child = spawn(
        [sys.executable, "-c", LEADER, str(leader_file), str(child_file), CHILD],
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    try:
        with trio.fail_after(10):
            seen = b""
            while b"\n" not in seen:
                seen += await child.stdout.receive_some()
        child_pid = int(seen.split()[1])
        code = await child.stop(signal.SIGTERM, 5.0, kill_mode=kill_mode)  # type: ignore[arg-type]
    finally:
        child.close_streams()
    assert code == 0
    assert leader_file.read_text() == "leader got SIGTERM"
    if kill_mode == "group":
        assert child_file.read_text() == "child got SIGTERM"
    else:
        assert not child_file.exists()  # SIGKILLed with the group at the end
    assert not pid_alive(child_pid)
