"""The sentinel: a small process that outlives a SIGKILLed supervisor just long enough to kill
everything the run started.

While the supervisor lives the sentinel does nothing but block in ``read()`` on a pipe: the
supervisor writes a line for every process group it records (``+ <pgid> <start ticks>``)
and drops (``- <pgid>``), and ``bye`` when it exits gracefully. End of file without ``bye``
means the supervisor died (the kernel closes a dead process's pipe ends): the sentinel then
kills every recorded group (checking start times, as the next preflight would), every
process in the run's cgroups and every process started with the run's mark
(:mod:`hearthlink_trio.process.tree`), repeats until a round finds nothing (within about a
second), removes the run's cgroups and exits.

Why a fork of the supervisor, made before trio starts, rather than a fresh ``python -S``
running a small script: measured here, the fork's private memory is about 1 MiB (its pages
are the supervisor's, shared until written, and it writes almost nothing: it disables the
garbage collector and only blocks in ``read()``), against about 4 MiB private (10 MiB RSS)
for a new interpreter, and it costs no exec and no imports at start-up (a new interpreter
is about 10 ms). ``ps`` shows the shared pages in its RSS (about 29 MiB); ``Pss`` in
``/proc/<pid>/smaps_rollup`` is the honest figure. Forking before ``trio.run`` means no
other thread exists, so nothing can be holding a lock in the child; it closes every
inherited descriptor but the pipe and stderr (so it never holds the data dir's lock or a
log file), and leaves the terminal's process group (``setsid``), so a Ctrl-C meant for the
supervisor does not reach it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import time
from pathlib import Path

from hearthlink_trio.process import cgroups
from hearthlink_trio.process.groups import kill_members, live_groups
from hearthlink_trio.process.tree import kill_all, marked_processes

#: How long the sweep may take after the supervisor died (the promise is one second).
SWEEP_SECONDS = 0.8
#: How long a graceful exit waits for the sentinel to go after ``bye``.
DISMISS_SECONDS = 1.0
BYE = b"bye"


class Sentinel:
    """The supervisor's end of the sentinel: tell it the groups, dismiss it at exit."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self._fd = fd

    def track(self, pgid: int, start_ticks: int) -> None:
        self._send(f"+ {pgid} {start_ticks}\n".encode())

    def untrack(self, pgid: int) -> None:
        self._send(f"- {pgid}\n".encode())

    def _send(self, line: bytes) -> None:
        # Non-blocking: the event loop never waits on the sentinel. A pipe that is full
        # (64 KiB the sentinel has not read) or broken means the sentinel is stuck or gone.
        if self._fd < 0:
            return
        try:
            os.write(self._fd, line)
        except OSError as exc:
            os.close(self._fd)
            self._fd = -1
            logging.getLogger("hearthlink").warning(
                "The sentinel (pid %d) is gone (%s): if the supervisor is killed, its "
                "services' own children are left to the next run's preflight",
                self.pid,
                exc.strerror or exc,
                extra={"event": "sentinel_lost"},
            )

    def dismiss(self) -> None:
        """Graceful exit: tell the sentinel to go without a sweep and reap it."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self._fd, BYE + b"\n")
            os.close(self._fd)
            self._fd = -1
        deadline = time.monotonic() + DISMISS_SECONDS
        while True:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0] == self.pid:
                    return
            except ChildProcessError:
                return
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                return
            time.sleep(0.001)


def start_sentinel(run: str, cgroup: Path | None) -> Sentinel:
    """Fork the sentinel for run ``run`` (and its cgroup). Call before trio starts."""
    read_end, write_end = os.pipe()
    supervisor = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its work is tested end to end
        code = 1
        try:
            gc.disable()
            os.close(write_end)
            _detach(read_end)
            code = _watch(read_end, supervisor, run, cgroup)
        finally:
            os._exit(code)
    os.close(read_end)
    os.set_blocking(write_end, False)
    return Sentinel(pid, write_end)


def _detach(keep: int) -> None:  # pragma: no cover - runs in the sentinel
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))


def _watch(fd: int, supervisor: int, run: str, cgroup: Path | None) -> int:  # pragma: no cover
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
                return 0
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
