"""cgroup v2: one cgroup per service, which nothing a service starts can leave.

Where the supervisor may create cgroups (as root on a writable cgroup2 mount, or under
systemd with ``Delegate=yes``), the run gets ``<own cgroup>/hearthlink-<pid>/`` and each
service ``…/hearthlink-<pid>/<service>/``. A stop ends with ``cgroup.kill`` and waits for
``cgroup.events`` to say ``populated 0``; the run's cgroups are removed at its end.

Stdlib only: the sentinel uses this after the supervisor died.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

RUN_PREFIX = "hearthlink-"
#: ``HEARTHLINK_CGROUPS=off`` keeps the run out of cgroups (to try the fallback, or where
#: making cgroups is allowed but unwelcome).
SWITCH_ENV = "HEARTHLINK_CGROUPS"
#: Controllers asked for in the run's cgroup, for ``memory.current`` and ``cpu.stat``; each is
#: only there if the cgroup above offers it.
CONTROLLERS = ("memory", "cpu")


def _cgroup2_mount() -> Path | None:
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split()[:1] == ["cgroup2"]:
                    return Path(left.split()[4])
    except OSError:
        return None
    return None


def _own_cgroup() -> str | None:
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        return None
    return None


def create_run_cgroup() -> tuple[Path | None, str]:
    """Make this run's cgroup; returns it (None if impossible) and a description or a reason."""
    if os.environ.get(SWITCH_ENV, "").lower() in ("off", "0", "no"):
        return None, f"{SWITCH_ENV}={os.environ[SWITCH_ENV]}"
    mount = _cgroup2_mount()
    if mount is None:
        return None, "no cgroup2 mount"
    own = _own_cgroup()
    if own is None:
        return None, "this process is in no cgroup v2"
    base = mount / own.lstrip("/")
    remove_stale(base)
    run = base / f"{RUN_PREFIX}{os.getpid()}"
    try:
        run.mkdir()
    except FileExistsError:
        pass
    except OSError as exc:
        return None, f"cannot create a cgroup under {base}: {exc.strerror or exc}"
    for controller in CONTROLLERS:
        with contextlib.suppress(OSError):
            (run / "cgroup.subtree_control").write_text(f"+{controller}")
    return run, str(run)


def service_cgroup(run: Path, service: str) -> Path:
    """The service's cgroup under the run's, made if needed.

    Raises:
        OSError: it cannot be made.
    """
    path = run / service
    path.mkdir(exist_ok=True)
    return path


def join(cgroup: Path, pid: int) -> None:
    """Move ``pid`` and every descendant it has into ``cgroup``.

    Each move is a write of one pid to ``cgroup.procs``. A process is moved before its
    children are listed, so a child it forks meanwhile is either born in ``cgroup`` or
    listed (and moved) after it: none stays behind. A process that exits meanwhile is
    skipped.

    Raises:
        OSError: ``pid`` cannot be moved (not for a process that has exited).
    """
    fd = os.open(cgroup / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    try:
        pending = [pid]
        while pending:
            current = pending.pop()
            try:
                os.write(fd, str(current).encode())
            except ProcessLookupError:
                continue
            except OSError:
                if current == pid:
                    raise
                continue
            pending.extend(_children(current))
    finally:
        os.close(fd)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        with (
            contextlib.suppress(OSError, ValueError),
            open(f"/proc/{pid}/task/{task}/children") as f,
        ):
            found.extend(int(word) for word in f.read().split())
    return found


def procs(cgroup: Path) -> list[int]:
    """The pids in ``cgroup`` (zombies are not listed); [] if it is gone."""
    try:
        return [int(line) for line in (cgroup / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def populated(cgroup: Path) -> bool:
    try:
        return "populated 1" in (cgroup / "cgroup.events").read_text()
    except OSError:
        return False


def kill(cgroup: Path) -> None:
    """SIGKILL everything in ``cgroup`` (``cgroup.kill``; without it, pid by pid)."""
    try:
        (cgroup / "cgroup.kill").write_text("1")
        return
    except OSError:
        pass
    for pid in procs(cgroup):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def usage(cgroup: Path) -> dict[str, int | None]:
    """``memory_bytes`` (memory.current) and ``cpu_usec`` (cpu.stat usage_usec), None where
    the file is not there."""
    memory: int | None = None
    cpu: int | None = None
    with contextlib.suppress(OSError, ValueError):
        memory = int((cgroup / "memory.current").read_text())
    with contextlib.suppress(OSError, ValueError):
        for line in (cgroup / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                cpu = int(value)
    return {"memory_bytes": memory, "cpu_usec": cpu}


def remove(run: Path, *, deadline: float) -> list[Path]:
    """Empty and remove the run's cgroup and its services' (waiting until ``deadline``, on
    ``time.monotonic``, for their processes to die); returns those that could not go."""
    children = [p for p in run.iterdir() if p.is_dir()] if run.is_dir() else []
    left: list[Path] = []
    for cgroup in [*children, run]:
        while True:
            if populated(cgroup):
                kill(cgroup)
            try:
                cgroup.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    left.append(cgroup)
                    break
                time.sleep(0.005)
    return left


def remove_stale(base: Path) -> None:
    """Remove the cgroups of runs whose supervisor is gone (its sentinel could not finish)."""
    try:
        entries = list(base.glob(f"{RUN_PREFIX}*"))
    except OSError:
        return
    for entry in entries:
        pid = entry.name.removeprefix(RUN_PREFIX)
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(OSError):
                remove(entry, deadline=time.monotonic() + 1.0)
