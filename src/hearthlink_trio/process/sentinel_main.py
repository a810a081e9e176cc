"""The sentinel's own program (see :mod:`hearthlink_trio.process.sentinel`): stdlib only, no
trio, no pydantic, run by ``python -S -I``."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from hearthlink_trio.process import cgroups
from hearthlink_trio.process.tree import kill_all, kill_members, live_groups, marked_processes

#: How long the sweep may take after the supervisor died (the promise is one second).
SWEEP_SECONDS = 0.8
BYE = b"bye"


def main(argv: Sequence[str]) -> None:  # pragma: no cover - runs in the sentinel
    """``<pipe fd> <supervisor pid> <run id> <run cgroup or "">``"""
    fd, supervisor, run, cgroup = int(argv[0]), int(argv[1]), argv[2], argv[3]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _watch(fd, supervisor, run, Path(cgroup) if cgroup else None)


def _watch(fd: int, supervisor: int, run: str, cgroup: Path | None) -> int:
    groups: dict[int, int] = {}
    pending = b""
    while True:
        chunk = os.read(fd, 1 << 16)  # blocks: nothing runs while the supervisor lives
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            words = line.split()
            if words == [BYE]:
                # Nothing to clean up or flush: go now, so the supervisor's exit that waits
                # for this one is not held up by an interpreter's teardown.
                os._exit(0)
            if len(words) == 3 and words[0] == b"+":
                groups[int(words[1])] = int(words[2])
            elif len(words) == 2 and words[0] == b"-":
                groups.pop(int(words[1]), None)
    killed = sweep(groups, run, cgroup, deadline=time.monotonic() + SWEEP_SECONDS)
    if killed:
        listed = " ".join(str(pid) for pid in sorted(killed))
        note = (
            f"hearthlink sentinel: the supervisor (pid {supervisor}) died; killed "
            f"{len(killed)} process(es) of its services (pids {listed})\n"
        )
        with contextlib.suppress(OSError):
            os.write(2, note.encode())
    return 0


def sweep(groups: dict[int, int], run: str, cgroup: Path | None, *, deadline: float) -> set[int]:
    """Kill every process of the run until two rounds in a row find none (or ``deadline``,
    on ``time.monotonic``), then remove the run's cgroups; returns the pids killed."""
    killed: set[int] = set()
    services = [p for p in cgroup.iterdir() if p.is_dir()] if cgroup and cgroup.is_dir() else []
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:
        found: set[int] = set()
        for service in services:
            found.update(cgroups.procs(service))
            cgroups.kill(service)
        found.update(kill_members(live_groups(groups)))
        marked = marked_processes(run)
        kill_all(marked)
        found |= marked
        killed |= found
        quiet = 0 if found else quiet + 1
        time.sleep(0.005)
    if cgroup is not None:
        cgroups.remove(cgroup, deadline=deadline + 0.1)
    return killed
