"""The sentinel: a small process that outlives a SIGKILLed supervisor just long enough to kill
everything the run started.

While the supervisor lives the sentinel does nothing but block in ``read()`` on a pipe: the
supervisor writes a line for every process group it records (``+ <pgid> <start ticks>``)
and drops (``- <pgid>``), and ``bye`` when it exits gracefully. End of file without ``bye``
means the supervisor died (the kernel closes a dead process's pipe ends): the sentinel then
kills every recorded group (checking start times, as the next preflight would), every
process in the run's cgroups and every process started with the run's mark
(:mod:`hearthlink_trio.process.tree`), repeats until a round finds nothing (within about a
second), removes the run's cgroups and exits (:mod:`hearthlink_trio.process.sentinel_main`).

Why a fresh ``python -S -I`` that imports only the stdlib and our two stdlib-only modules,
rather than a fork of the supervisor: measured here with four services, a fork made before
trio starts showed 29 MiB RSS and 10 MiB private (Private_Dirty) a moment after start-up,
and that grows towards the supervisor's whole heap, because every page the supervisor
writes after the fork becomes a private copy on one side; the fresh interpreter holds about
12 MiB RSS, 6 MiB private, for good, and never inherits a lock, a log file or a signal
handler. Its start costs one exec (a few ms of Popen, once; its imports run concurrently).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import hearthlink_trio
from hearthlink_trio.process.sentinel_main import BYE

#: How long a graceful exit waits for the sentinel to go after ``bye``.
DISMISS_SECONDS = 1.0
# No site (-S): nothing but our own modules, found through the path given first.
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from hearthlink_trio.process.sentinel_main import main; main(sys.argv[2:])"
)


class Sentinel:
    """The supervisor's end of the sentinel: tell it the groups, dismiss it at exit."""

    def __init__(self, popen: subprocess.Popen[bytes], fd: int) -> None:
        self._popen = popen
        self.pid = popen.pid
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
        try:
            self._popen.wait(DISMISS_SECONDS)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()


def start_sentinel(run: str, cgroup: Path | None) -> Sentinel:
    """Start the sentinel for run ``run`` (and its cgroup), in a session of its own so that a
    Ctrl-C meant for the supervisor does not reach it."""
    read_end, write_end = os.pipe()
    src = Path(hearthlink_trio.__file__).parent.parent
    args = [str(src), str(read_end), str(os.getpid()), run, str(cgroup or "")]
    try:
        popen = subprocess.Popen(
            [sys.executable, "-S", "-I", "-c", _BOOT, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            pass_fds=(read_end,),
            start_new_session=True,
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    os.set_blocking(write_end, False)
    return Sentinel(popen, write_end)
