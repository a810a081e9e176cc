"""The sentinel's sweep (see :mod:`hearthlink_trio.process.sentinel`): stdlib only, no trio,
no pydantic, exec'd as ``python -S -I`` by the watching shell once the supervisor died."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

from hearthlink_trio.process import cgroups
from hearthlink_trio.process.tree import kill_all, kill_members, live_groups, marked_processes

#: How long the sweep may take after the supervisor died (the promise is one second).
SWEEP_SECONDS = 0.8
BYE = b"bye"


def main(argv: Sequence[str]) -> None:  # pragma: no cover - runs in the sentinel
    """``<supervisor pid> <run id> <run cgroup or ""> <pgid:start ticks>...``: the supervisor
    died (the watching shell saw its pipe end without ``bye``): kill everything of the run."""
    supervisor, run, cgroup = int(argv[0]), argv[1], argv[2]
    groups = {int(p): int(t) for p, _, t in (word.partition(":") for word in argv[3:])}
    deadline = time.monotonic() + SWEEP_SECONDS
    killed = sweep(groups, run, Path(cgroup) if cgroup else None, deadline=deadline)
    if killed:
        listed = " ".join(str(pid) for pid in sorted(killed))
        note = (
            f"hearthlink sentinel: the supervisor (pid {supervisor}) died; killed "
            f"{len(killed)} process(es) of its services (pids {listed})\n"
        )
        with contextlib.suppress(OSError):
            os.write(2, note.encode())


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
