"""Processes, /proc and ports for the benchmark: everything it starts, and its cleanup.

The :class:`Reaper` records every process the benchmark starts (managers by ``Popen``,
services and their children by pid and start time) and, at the end, on an error or Ctrl-C,
stops the managers, kills every recorded process group and finally every descendant of the
benchmark still alive (it is a child subreaper, so no orphan escapes re-parenting to it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

from hearthlink_trio.process.procfs import proc_stat

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36
T0 = time.monotonic()


class BenchError(Exception):
    """A measurement could not be taken (a timeout, a process that would not start…)."""


def progress(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# -- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the whole process (all its threads), in seconds."""
    stat = proc_stat(pid)
    return None if stat is None else (stat.utime + stat.stime) / CLK_TCK


def start_ticks(pid: int) -> int | None:
    stat = proc_stat(pid)
    return None if stat is None else stat.start_ticks


def alive(pid: int, ticks: int | None) -> bool:
    """True if ``pid`` is still the process that started at ``ticks`` and not a zombie."""
    stat = proc_stat(pid)
    if stat is None or stat.state in ("Z", "X"):
        return False
    return ticks is None or stat.start_ticks == ticks


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def group_rss_mib(pgid: int) -> float | None:
    """The RSS of every process in group ``pgid`` (a service and whatever it forked)."""
    total, found = 0.0, False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = proc_stat(int(entry))
        if stat is not None and stat.pgid == pgid:
            rss = rss_mib(int(entry))
            if rss is not None:
                total, found = total + rss, True
    return total if found else None


def ppid(pid: int) -> int | None:
    stat = proc_stat(pid)
    return None if stat is None else stat.ppid


def pgid(pid: int) -> int | None:
    stat = proc_stat(pid)
    return None if stat is None else stat.pgid


def all_pids() -> set[int]:
    return {int(e) for e in os.listdir("/proc") if e.isdigit()}


def descendants(root: int) -> list[int]:
    """Every live (non-zombie) process below ``root``, from one scan of /proc."""
    parent: dict[int, int] = {}
    for pid in all_pids():
        stat = proc_stat(pid)
        if stat is not None and stat.state not in ("Z", "X"):
            parent[pid] = stat.ppid
    below: list[int] = []
    frontier = {root}
    while frontier:
        nxt = {pid for pid, pp in parent.items() if pp in frontier}
        below += sorted(nxt)
        frontier = nxt
    return below


def wait_new_child(parent: int, before: set[int], deadline: float) -> tuple[float, int] | None:
    """Poll /proc (only pids not in ``before``) until a new child of ``parent`` appears:
    (monotonic time seen, pid). This kernel has no /proc/<pid>/task/<tid>/children."""
    seen = set(before)
    while time.monotonic() < deadline:
        now = time.monotonic()
        fresh = all_pids() - seen
        for pid in fresh:
            if ppid(pid) == parent:
                return now, pid
        seen |= fresh
        time.sleep(0.0002)
    return None


def kill_group_and_pid(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


# -- everything we start, and its cleanup ---------------------------------------------------


class Reaper:
    """Every process the benchmark starts, by pid and start time, so that none outlives it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.managers: list[subprocess.Popen[bytes]] = []
        self.pids: dict[int, int | None] = {}  # pid -> start ticks
        self.started = 0
        self.killed: list[int] = []
        with contextlib.suppress(OSError, AttributeError):
            # Orphans (a peer's services after a SIGKILL of it) are re-parented to us.
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def add_manager(self, proc: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.managers.append(proc)
            self.started += 1
        self.add_pid(proc.pid)

    def add_pid(self, pid: int, ticks: int | None = None) -> None:
        ticks = ticks if ticks is not None else start_ticks(pid)
        with self.lock:
            if pid not in self.pids:
                self.pids[pid] = ticks
                self.started += 1

    def stop_manager(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.killed.append(proc.pid)
            proc.kill()
            proc.wait()

    def leftovers(self) -> list[int]:
        with self.lock:
            mine = [pid for pid, ticks in self.pids.items() if alive(pid, ticks)]
        return sorted(set(mine) | set(descendants(os.getpid())))

    def reap(self) -> None:
        """Reap whatever was re-parented to us (we are a child subreaper)."""
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass

    def cleanup(self) -> list[int]:
        """Stop every manager, kill every recorded process (and its group) still alive and
        every descendant of ours; returns what had to be killed."""
        for proc in list(self.managers):
            self.stop_manager(proc)
        left = [pid for pid in self.leftovers() if pid != os.getpid()]
        for pid in left:
            self.killed.append(pid)
            kill_group_and_pid(pid)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            self.reap()
            if not self.leftovers():
                break
            time.sleep(0.05)
        return left


def base_env() -> dict[str, str]:
    """Our environment, less what would change the supervisors' behaviour or cost.

    PYTHONDONTWRITEBYTECODE goes: with it set (as in some CI shells) every start compiles
    every module again, which is not what a user's second start costs.
    """
    drop = ("HEARTHLINK_CONFIG", "HEARTHLINK_VAULT_KEY", "NOTIFY_SOCKET", "PYTHONDONTWRITEBYTECODE")
    return {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("WATCHDOG_", "HEARTHLINK_"))
    }


def wait_gone(pids: list[int], deadline: float) -> dict[int, float]:
    """pidfd-poll ``pids`` until every one has exited (or the deadline): {pid: exit time}."""
    import select

    fds: dict[int, int] = {}
    exits: dict[int, float] = {}
    for pid in pids:
        try:
            fds[os.pidfd_open(pid)] = pid
        except OSError:
            exits[pid] = time.monotonic()
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    try:
        pending = dict(fds)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for fd, _mask in poller.poll(left * 1000):
                exits[pending.pop(fd)] = time.monotonic()
                poller.unregister(fd)
    finally:
        for fd in fds:
            os.close(fd)
    return exits
