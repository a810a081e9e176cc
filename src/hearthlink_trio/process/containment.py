"""What keeps a run's processes from outliving it: subreaper, cgroups, the sentinel.

:meth:`Containment.start` runs once, before trio starts:

* the supervisor becomes a child subreaper, so descendants that leave their group
  (``setsid``, a double fork) re-parent to it rather than to init, and it reaps them;
* it makes the run's cgroup where it may (:mod:`hearthlink_trio.process.cgroups`), else
  services are found by group, ancestry and their environment's mark
  (:mod:`hearthlink_trio.process.tree`);
* it starts the sentinel (:mod:`hearthlink_trio.process.sentinel`), which cleans up if the
  supervisor is SIGKILLed.

:meth:`Containment.close` runs once after trio returns: it kills whatever of the run is
still alive, reaps every zombie child, dismisses the sentinel and removes the cgroups.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from pathlib import Path

from hearthlink_trio.process import cgroups
from hearthlink_trio.process.sentinel import Sentinel, start_sentinel
from hearthlink_trio.process.tree import Lineage, kill_all, marked_processes, run_id

PR_SET_CHILD_SUBREAPER = 36
#: How long the end of a run waits for its last processes to die and its cgroups to go.
CLOSE_SECONDS = 2.0


class Containment:
    """The run's mark, its cgroup (if any) and its sentinel."""

    def __init__(self, run: str, cgroup: Path | None, why: str, sentinel: Sentinel | None) -> None:
        self.run = run
        self.cgroup = cgroup
        self.sentinel = sentinel
        self._why = why

    @classmethod
    def start(cls) -> Containment:
        """Become a subreaper, make the run's cgroup if possible, start the sentinel."""
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        run = run_id()
        cgroup, why = cgroups.create_run_cgroup()
        return cls(run, cgroup, why, start_sentinel(run, cgroup))

    @property
    def guarantee(self) -> str:
        """Which mechanism applies, for the line the supervisor writes at start."""
        if self.cgroup is not None:
            return f"cgroup v2 ({self.cgroup})"
        return f"process groups + subreaper (no writable cgroup2: {self._why})"

    def lineage(self, service: str) -> Lineage:
        """How to recognise ``service``'s processes (its cgroup made if needed).

        Raises:
            OSError: the service's cgroup cannot be made.
        """
        cgroup = cgroups.service_cgroup(self.cgroup, service) if self.cgroup else None
        return Lineage(self.run, service, cgroup)

    def usage(self, service: str) -> dict[str, int | None]:
        """``memory_bytes`` and ``cpu_usec`` of the service's cgroup (None without one)."""
        if self.cgroup is None:
            return {"memory_bytes": None, "cpu_usec": None}
        return cgroups.usage(self.cgroup / service)

    def close(self) -> None:
        """The run is over: nothing of it may stay, not even a zombie."""
        deadline = time.monotonic() + CLOSE_SECONDS
        if self.cgroup is not None:
            # Every process of the run is in its cgroups: emptying them is the whole sweep.
            cgroups.remove(self.cgroup, deadline=deadline)
        else:
            while (left := marked_processes(self.run)) and time.monotonic() < deadline:
                kill_all(left)
                time.sleep(0.005)
        # trio has returned and every service was reaped: what is left among our children
        # is an adopted orphan's zombie, or the sentinel, reaped by dismiss() below.
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        if self.sentinel is not None:
            self.sentinel.dismiss()
