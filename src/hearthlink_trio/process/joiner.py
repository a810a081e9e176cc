"""Moves the processes started through setpriv into their services' cgroups, on a thread of
its own.

Moving a process between cgroups may wait for the kernel (a scheduler grace period: 10 to
50 ms on a kernel ticking at 100 Hz). Done in the child before exec, every start waited for
it; done here, the service runs at once and the supervisor's main thread goes on, and the
processes started together share one wait.

Until it is moved, a service's process is found by its group, its ancestry and its mark,
as in a run without cgroups; each process it forked meanwhile is moved with it
(``cgroups.join``), and one re-parented to the supervisor meanwhile (a daemon's double
fork) is found among the supervisor's children and moved into the cgroup of the service
whose mark it carries, or, without a mark (it replaced its environment), of the service
started first among those just started. ``Child.contained`` is set once all of that is
done; a stop waits for it before its sweep of the cgroup.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from pathlib import Path

from hearthlink_trio.process import cgroups, own
from hearthlink_trio.process.procfs import proc_environ, proc_stat
from hearthlink_trio.process.spawn import Child
from hearthlink_trio.process.tree import RUN_ENV, SERVICE_ENV

#: How many times the strays are looked for again after a round moved some.
STRAY_ROUNDS = 10


class CgroupJoiner:
    """Moves each child given to :meth:`add` into its lineage's cgroup under ``run``."""

    def __init__(self, run: Path) -> None:
        self._run = run
        self._queue: queue.SimpleQueue[Child | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="hearthlink-cgroups", daemon=True)
        self._thread.start()

    def add(self, child: Child) -> None:
        self._queue.put(child)

    def close(self, timeout: float = 5.0) -> None:
        """Move what was given, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            batch = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._queue.get_nowait())
            children = [child for child in batch if child is not None]
            if children:
                try:
                    self._join(children)
                finally:
                    for child in children:
                        child.contained.set()
            if None in batch:
                return

    def _join(self, batch: list[Child]) -> None:
        for child in batch:
            assert child.lineage is not None and child.lineage.cgroup is not None
            # One that cannot be moved is stopped like one that was never in its cgroup.
            with contextlib.suppress(OSError):
                cgroups.join(child.lineage.cgroup, child.pid)
        earliest = min((child.start_ticks or 0) for child in batch)
        for _ in range(STRAY_ROUNDS):
            moved = False
            for pid in cgroups.strays(self._run, own.started()):
                owner = _owner(pid, batch, earliest)
                if owner is not None and owner.lineage is not None and owner.lineage.cgroup:
                    with contextlib.suppress(OSError):
                        cgroups.join(owner.lineage.cgroup, pid)
                        moved = True
            if not moved:
                return


def _owner(pid: int, batch: list[Child], earliest: int) -> Child | None:
    """The child of ``batch`` that the stray ``pid`` comes from, or None (not from these)."""
    marks = proc_environ(pid, RUN_ENV, SERVICE_ENV)
    if RUN_ENV in marks:
        for child in batch:
            lineage = child.lineage
            if (
                lineage is not None
                and marks.get(RUN_ENV) == lineage.run_id
                and marks.get(SERVICE_ENV) == lineage.service
            ):
                return child
        return None
    stat = proc_stat(pid)
    if stat is None or stat.start_ticks < earliest:
        return None
    return batch[0]
