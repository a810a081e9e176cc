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

While the supervisor lives, the sentinel is a ``/bin/sh`` loop that reads the pipe (its
standard input) and keeps the recorded groups in a shell variable: about 1.6 MiB RSS and
0.2 MiB private, and no CPU at start-up, where a ``python -S -I`` that imported the sweep's
modules held 12.5 MiB RSS (6.6 MiB private) and spent about 30 ms of CPU starting, beside
the services starting at the same moment. Only on end of file does it exec ``python -S -I``
for the sweep, which needs /proc parsing and cgroups: tens of milliseconds, once, within the
second the sweep has. A fresh process rather than a fork of the supervisor either way: a
fork would share, then copy, the supervisor's whole heap, and inherit its locks, log files
and signal handlers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import hearthlink_trio
from hearthlink_trio.process import own
from hearthlink_trio.process.sentinel_main import BYE

#: How long a graceful exit waits for the sentinel to go after ``bye``.
DISMISS_SECONDS = 1.0
#: The sweep, exec'd once the pipe ends. No site (-S): nothing but our own modules, found
#: through the path given first.
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from hearthlink_trio.process.sentinel_main import main; main(sys.argv[2:])"
)
#: The watching sentinel: ``sh -c WATCH <name> <python> <src> <boot> <supervisor pid> <run>
#: <cgroup>``. ``groups`` holds `` pgid:ticks `` words; a ``-`` line cuts its word out.
#: SIGINT and SIGHUP stay ignored in the sweep too (ignored signals survive exec).
WATCH = r"""trap '' INT HUP
python=$1 src=$2 boot=$3 supervisor=$4 run=$5 cgroup=$6
groups=' '
while IFS= read -r line; do
    case $line in
    bye) exit 0 ;;
    '+ '*)
        set -- $line
        groups="$groups$2:$3 " ;;
    '- '*)
        set -- $line
        head=${groups%%" $2:"*}
        if [ "$head" != "$groups" ]; then
            tail=${groups#*" $2:"}
            groups="$head ${tail#* }"
        fi ;;
    esac
done
exec "$python" -S -I -c "$boot" "$src" "$supervisor" "$run" "$cgroup" $groups
"""
#: The sentinel's ``$0``, what ``ps`` shows for it.
NAME = "hearthlink_trio.process.sentinel_main"


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
    args = [sys.executable, str(src), _BOOT, str(os.getpid()), run, str(cgroup or "")]
    try:
        popen = subprocess.Popen(
            ["/bin/sh", "-c", WATCH, NAME, *args],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    own.remember(popen.pid)
    os.set_blocking(write_end, False)
    return Sentinel(popen, write_end)
