"""A service's memory: its cgroup's ``memory.current``, or the summed resident memory of its
processes.

``memory.current`` is read where the memory controller is there (cgroup v2 with it enabled;
page cache included, as the kernel charges it). Otherwise the processes are those of the
service's cgroup (``cgroup.procs``, which no descendant leaves), or without a cgroup those
of its process group, found by one scan of ``/proc`` shared by every service read within
:data:`SCAN_REUSE_SECONDS`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hearthlink_trio.process import cgroups
from hearthlink_trio.process.procfs import all_pids

__all__ = ["MemoryMeter"]

#: A scan of /proc for process groups is reused by every reading within this long.
SCAN_REUSE_SECONDS = 0.5

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss(pid: int) -> int | None:
    """Resident bytes of ``pid`` (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


class MemoryMeter:
    """Reads services' memory; see the module's description for where from.

    Args:
        run_cgroup: the run's cgroup (each service's is ``run_cgroup/<name>``), or None
            where the supervisor could make none.
    """

    def __init__(self, run_cgroup: Path | None) -> None:
        self._run_cgroup = run_cgroup
        self._groups: dict[int, int] = {}
        self._scanned = -SCAN_REUSE_SECONDS

    def read(self, service: str, leader: int | None) -> int | None:
        """The memory of ``service`` in bytes, whose main process is ``leader``; None when
        it has no process or nothing can be read."""
        if self._run_cgroup is not None:
            cgroup = self._run_cgroup / service
            current = cgroups.usage(cgroup)["memory_bytes"]
            if current is not None:
                return current
            pids = cgroups.procs(cgroup)
            if pids:
                sizes = [size for pid in pids if (size := _rss(pid)) is not None]
                return sum(sizes) if sizes else None
        if leader is None:
            return None
        return self._group_sizes().get(leader)

    def _group_sizes(self) -> dict[int, int]:
        """Summed resident bytes of every process group, from a scan at most
        :data:`SCAN_REUSE_SECONDS` old."""
        now = time.monotonic()
        if now - self._scanned < SCAN_REUSE_SECONDS:
            return self._groups
        groups: dict[int, int] = {}
        for pid in all_pids():
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    # The command name (field 2) may hold ')': split after the last one.
                    fields = f.read().rsplit(b")", 1)[1].split()
                # Fields 5 (pgrp) and 24 (rss, in pages), counted from field 3 here.
                pgid, pages = int(fields[2]), int(fields[21])
            except (OSError, IndexError, ValueError):
                continue
            groups[pgid] = groups.get(pgid, 0) + pages * _PAGE
        self._groups, self._scanned = groups, now
        return groups
