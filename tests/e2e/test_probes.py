"""The tcp and exec probes against real sockets and real programs."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import trio

from hearthlink_trio.probes.exec import probe_exec
from hearthlink_trio.probes.tcp import probe_tcp
from tests.helpers import free_port, pid_alive, wait_for


async def test_tcp_passes_on_an_accepted_connection_and_names_a_refusal() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert await probe_tcp("127.0.0.1", port, 1.0) is None
    assert await probe_tcp("127.0.0.1", free_port(), 1.0) == "Connection refused"


async def test_exec_passes_on_exit_0_and_fails_with_its_last_line(tmp_path: Path) -> None:
    env = dict(os.environ)
    ok = await probe_exec([sys.executable, "-c", "print('fine')"], env=env, cwd=tmp_path, timeout=5)
    assert ok is None
    failed = await probe_exec(
        [sys.executable, "-c", "import sys; print('checking'); sys.exit('no server on 5432')"],
        env=env,
        cwd=tmp_path,
        timeout=5,
    )
    assert failed == f"{sys.executable} failed (exit status 1): no server on 5432"
    missing = await probe_exec(["/no/such/program"], env=env, cwd=tmp_path, timeout=5)
    assert missing == "cannot run /no/such/program: No such file or directory"


async def test_exec_past_its_timeout_is_killed_with_its_whole_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "print('still waiting', flush=True)\n"
        "time.sleep(60)\n"
    )
    began = trio.current_time()
    reason = await probe_exec(
        [sys.executable, "-c", script], env=dict(os.environ), cwd=tmp_path, timeout=1.0
    )
    assert trio.current_time() - began < 5
    assert reason == f"{sys.executable} timed out after 1s: still waiting"
    leader, grandchild = (int(p) for p in pids.read_text().split())
    # Reaped (the leader) and killed (its child in the group): nothing is left behind.
    assert wait_for(lambda: not pid_alive(leader) and not pid_alive(grandchild), timeout=5)


async def test_exec_cancelled_midway_leaves_nothing_behind(tmp_path: Path) -> None:
    # The health loop cancels a probe under way when its service exits: the probe's group
    # must go with it, at once, not when the program ends by itself.
    pids = tmp_path / "pids"
    argv = ["sh", "-c", f"sleep 60 & echo $$ $! > {pids}; wait"]
    with trio.move_on_after(30) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: probe_exec(argv, env=dict(os.environ), cwd=tmp_path, timeout=60)
            )
            while not pids.exists() or len(pids.read_text().split()) < 2:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert not scope.cancelled_caught
    leader, sleeper = (int(p) for p in pids.read_text().split())
    # Gone on return: the shielded stop killed the group and reaped the leader.
    assert not pid_alive(leader) and not pid_alive(sleeper)
