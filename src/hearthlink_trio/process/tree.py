"""A service's processes beyond its leader: its group, its descendants, what it left behind.

A service's process leads its own group, but what it starts may leave that group
(``setsid()``, a double fork). These marks find them, weakest first:

* the process group (``pgid`` = the leader's pid, started no earlier than the leader);
* ancestry: the parent chain leads to the leader (lost once an intermediate parent exits);
* the environment: every service is started with ``HEARTHLINK_RUN`` naming the run and
  ``HEARTHLINK_SERVICE`` naming the service, which its descendants inherit (only a program
  that execs with a cleared environment loses it);
* and, where the supervisor could make one, the service's cgroup, which nothing leaves.

Stdlib only: the sentinel uses this after the supervisor died.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hearthlink_trio.process import cgroups
from hearthlink_trio.process.procfs import ProcStat, all_pids, proc_environ, proc_stat

RUN_ENV = "HEARTHLINK_RUN"
SERVICE_ENV = "HEARTHLINK_SERVICE"


def run_id() -> str:
    """This process's identity as a run: ``<pid>-<start ticks>`` (a pid alone can be reused)."""
    stat = proc_stat(os.getpid())
    return f"{os.getpid()}-{stat.start_ticks if stat else 0}"


@dataclass(frozen=True)
class Lineage:
    """How to recognise one service's processes: the run's mark, its name, its cgroup."""

    run_id: str
    service: str
    cgroup: Path | None = None


def live_processes() -> dict[int, ProcStat]:
    """Every process but this one and zombies, by pid."""
    me = os.getpid()
    found: dict[int, ProcStat] = {}
    for pid in all_pids():
        stat = proc_stat(pid)
        if stat is not None and stat.state != "Z" and pid != me:
            found[pid] = stat
    return found


def service_processes(
    leader: int, leader_ticks: int | None, lineage: Lineage | None
) -> dict[int, int]:
    """The live processes of the service whose process ``leader`` leads (the leader included
    while it lives), ``{pid: pgid}``: its group, its descendants, its marked processes, its
    cgroup's.

    With a cgroup that is the whole answer (every descendant is born in it and cannot
    leave it), read from one file; without one, /proc is walked.
    """
    if lineage is not None and lineage.cgroup is not None:
        found_in_cgroup: dict[int, int] = {}
        for pid in {leader, *cgroups.procs(lineage.cgroup)}:
            stat = proc_stat(pid)
            if stat is not None and stat.state != "Z":
                found_in_cgroup[pid] = stat.pgid
        return found_in_cgroup
    stats = live_processes()
    oldest = leader_ticks or 0
    found = {pid for pid, st in stats.items() if st.pgid == leader and st.start_ticks >= oldest}
    children: dict[int, list[int]] = {}
    for pid, st in stats.items():
        children.setdefault(st.ppid, []).append(pid)
    todo = [leader]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    if lineage is not None:
        for pid, st in stats.items():
            if pid not in found and st.start_ticks >= oldest:
                marks = proc_environ(pid, RUN_ENV, SERVICE_ENV)
                if marks.get(RUN_ENV) == lineage.run_id and marks.get(SERVICE_ENV) == (
                    lineage.service
                ):
                    found.add(pid)
    return {pid: stats[pid].pgid for pid in found if pid in stats}


def marked_processes(run: str) -> set[int]:
    """The live processes started with this run's mark, of any service."""
    return {pid for pid in live_processes() if proc_environ(pid, RUN_ENV).get(RUN_ENV) == run}


def kill_all(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            continue


def reap_zombies(of: set[int], pgid: int | None = None) -> list[int]:
    """Reap this process's zombie children that are in ``of`` or in group ``pgid`` (call it
    once the group's leader is reaped). Never waits; never touches another child: the
    group's are asked for by group, the others by pid, so no walk of /proc is needed."""
    reaped: list[int] = []
    if pgid is not None:
        while True:
            try:
                pid, _ = os.waitpid(-pgid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            reaped.append(pid)
    for pid in of:
        if pid == pgid:
            continue
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped.append(pid)
        except ChildProcessError:
            continue
    return reaped


def live_groups(recorded: dict[int, int]) -> dict[int, int]:
    """The recorded groups ``{pgid: leader start ticks}`` that may still hold our processes.

    A group counts when its leader's pid is either gone or still has the recorded start time
    (a pgid cannot be reused while any member of the group lives).
    """
    groups: dict[int, int] = {}
    for pgid, ticks in recorded.items():
        leader = proc_stat(pgid)
        if leader is None or leader.start_ticks == ticks:
            groups[pgid] = ticks
    return groups


def kill_members(groups: dict[int, int]) -> list[int]:
    """SIGKILL every live process of ``groups`` (see :func:`live_groups`) that started no
    earlier than its group's leader; returns the pids killed."""
    killed: list[int] = []
    if groups:
        for pid in all_pids():
            stat = proc_stat(pid)
            if stat is None or stat.state == "Z" or pid == os.getpid():
                continue
            if stat.pgid in groups and stat.start_ticks >= groups[stat.pgid]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
    return killed
