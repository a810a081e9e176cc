"""CPU and memory of a process from /proc: what ``GET /v1/health`` shows per service.

CPU % is the process's user + system time over the wall time since the previous sample of
the same pid (the first sample averages over the process's whole life), 100 % being one
core. Only the service's main process is read: two small files per service and request.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

from hearthlink_trio.process.procfs import proc_stat

__all__ = ["UsageSampler"]

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
#: Samples closer together than this reuse the previous figure (many clients, one reading).
MIN_SAMPLE_SPACING = 0.5


class _Sample(NamedTuple):
    start_ticks: int  # with the pid, the process's identity
    cpu_seconds: float
    wall: float  # time.monotonic()
    percent: float | None


class UsageSampler:
    """Keeps the previous sample of every pid it was asked about."""

    def __init__(self) -> None:
        self._samples: dict[int, _Sample] = {}

    def usage(self, pid: int | None) -> tuple[float | None, int | None]:
        """``(cpu_percent, rss_bytes)`` of ``pid``; ``(None, None)`` if it cannot be read."""
        if pid is None:
            return None, None
        read = _read(pid)
        if read is None:
            self._samples.pop(pid, None)
            return None, None
        start_ticks, cpu_seconds, rss = read
        now = time.monotonic()
        previous = self._samples.get(pid)
        if previous is not None and previous.start_ticks == start_ticks:
            if now - previous.wall < MIN_SAMPLE_SPACING and previous.percent is not None:
                return previous.percent, rss
            span = now - previous.wall
            used = cpu_seconds - previous.cpu_seconds
        else:
            span = _uptime() - start_ticks / _TICKS
            used = cpu_seconds
        percent = round(100.0 * used / span, 1) if span > 0 else None
        self._samples[pid] = _Sample(start_ticks, cpu_seconds, now, percent)
        return percent, rss

    def forget_others(self, pids: set[int]) -> None:
        """Drop the samples of every pid not in ``pids`` (processes that are gone)."""
        for pid in list(self._samples):
            if pid not in pids:
                del self._samples[pid]


def _read(pid: int) -> tuple[int, float, int] | None:
    stat = proc_stat(pid)
    if stat is None:
        return None
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return stat.start_ticks, (stat.utime + stat.stime) / _TICKS, resident_pages * _PAGE


def _uptime() -> float:
    try:
        with open("/proc/uptime", "rb") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
