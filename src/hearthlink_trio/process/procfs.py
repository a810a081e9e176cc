"""Readers of /proc: a process's state, group, parent and start time, its environment; who
listens on a port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple


class ProcStat(NamedTuple):
    """What /proc/<pid>/stat says of a process that we need."""

    state: str  # "R", "S", … "Z" for a zombie
    pgid: int
    start_ticks: int  # start time in clock ticks since boot: with the pid, an identity
    ppid: int = 0


def proc_stat(pid: int) -> ProcStat | None:
    """Fields 3, 5, 22 and 4 of /proc/<pid>/stat; None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # The command name (field 2) may hold spaces and ')': split after its last ')'.
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return ProcStat(fields[0].decode(), int(fields[2]), int(fields[19]), int(fields[1]))


def proc_environ(pid: int, *names: str) -> dict[str, str]:
    """The values of ``names`` in the environment ``pid`` was started with ({} if unreadable:
    gone, a zombie, or another user's process)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return {}
    wanted = {name.encode() + b"=": name for name in names}
    found: dict[str, str] = {}
    for entry in data.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        name = wanted.get(key + sep)
        if name is not None:
            found[name] = value.decode(errors="replace")
    return found


def all_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        except OSError:
            continue
    return inodes


def port_holder(port: int) -> str | None:
    """``pid 1234: python3 -m http.server 8000`` for the process listening on ``port``."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid in all_pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                    return f"pid {pid}: {cmd}"
            except OSError:
                continue
    return None
