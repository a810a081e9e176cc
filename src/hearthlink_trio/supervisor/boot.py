"""The first moments of a run: the services started early boot before the supervisor loads.

Loading trio and the supervisor costs about 0.1 s of CPU. On a machine with fewer cores than
services starting, that CPU would be taken from the services started a moment ago, and each
of them would be ready later. So, while nothing needs the supervisor sooner, it lets them
boot first: it waits until every early process is asleep (neither running nor waiting for
a core: read from ``/proc/PID/schedstat`` at short intervals, a few microseconds each), at
most ``BOOT_WAIT_SECONDS``. A service that waits for requests, for a database or for
anything else is asleep; one that imports its framework or warms a cache is not.

It does not wait at all when a service depends on another (the dependency is probed as
soon as possible, for the dependent to start), and stops waiting at once when a signal
comes, an early process exits (the supervisor reports it) or the output of one fills its
pipe (the supervisor must read it). Nothing here imports trio.
"""

from __future__ import annotations

import select
import sys
import time
from collections.abc import Callable, Sequence

from hearthlink_trio.config import Config
from hearthlink_trio.process.spawn import Child

#: The longest the supervisor waits for the services it started to boot.
BOOT_WAIT_SECONDS = 1.0
#: How often their state is read meanwhile.
BOOT_POLL_SECONDS = 0.01
#: A process that ran or waited to run for less than this share of the last interval is
#: asleep: booted, or waiting for something else than a core.
BUSY_SHARE = 0.2
#: Output of theirs waiting in a pipe beyond this ends the wait (it must be read).
BOOT_WAIT_PIPE_BYTES = 16 * 1024


def let_services_boot(
    config: Config, early: Sequence[tuple[str, Child]], interrupted: Callable[[], bool]
) -> None:
    """Return once the processes ``early`` (started before the supervisor loaded) are all
    asleep, or when the wait must end (see the module's docstring); ``interrupted()`` says
    whether a signal came."""
    if not early or any(service.conditions for service in config.services):
        return
    import fcntl
    import termios

    children = [child for _, child in early]
    exits = select.poll()
    for child in children:
        exits.register(child.pidfd, select.POLLIN)
    pipes = [fd for child in children for fd in (child.stdout_fd, child.stderr_fd)]
    deadline = time.monotonic() + BOOT_WAIT_SECONDS
    last = _busy_ns(children)
    last_at = time.monotonic()
    while time.monotonic() < deadline and not interrupted():
        if exits.poll(BOOT_POLL_SECONDS * 1000):
            return
        for fd in pipes:
            waiting = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
            if int.from_bytes(waiting, sys.byteorder) > BOOT_WAIT_PIPE_BYTES:
                return
        now, busy = time.monotonic(), _busy_ns(children)
        if busy is None or last is None:
            return  # no scheduler statistics here: nothing to wait on
        limit = (now - last_at) * 1e9 * BUSY_SHARE
        if all(after - before < limit for before, after in zip(last, busy, strict=True)):
            return
        last, last_at = busy, now


def _busy_ns(children: Sequence[Child]) -> list[int] | None:
    """Nanoseconds each process has run or waited for a core (None: unreadable)."""
    found = []
    for child in children:
        try:
            with open(f"/proc/{child.pid}/schedstat", "rb") as f:
                running, waiting = f.read().split()[:2]
        except (OSError, ValueError):
            return None
        found.append(int(running) + int(waiting))
    return found
