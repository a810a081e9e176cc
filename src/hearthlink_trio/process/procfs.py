"""Readers of /proc: a process's state, group, parent and start time, its environment; who
listens on a port."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import NamedTuple


class ProcStat(NamedTuple):
    """What /proc/<pid>/stat says of a process that we need."""

    state: str  # "R", "S", … "Z" for a zombie
    pgid: int
    start_ticks: int  # start time in clock ticks since boot: with the pid, an identity
    ppid: int = 0
    utime: int = 0  # CPU time in user mode, clock ticks (all its threads)
    stime: int = 0  # CPU time in kernel mode, clock ticks


def parse_stat(data: bytes) -> ProcStat:
    """The fields we use of the text of a /proc/<pid>/stat file.

    Raises:
        ValueError: ``data`` is not such a text.
    """
    # The command name (field 2) may hold spaces and ')': split after its last ')'. Field
    # N of proc(5) is then fields[N - 3].
    try:
        fields = data.rsplit(b")", 1)[1].split()
        return ProcStat(
            state=fields[0].decode(),
            pgid=int(fields[2]),
            start_ticks=int(fields[19]),
            ppid=int(fields[1]),
            utime=int(fields[11]),
            stime=int(fields[12]),
        )
    except IndexError:
        raise ValueError(f"not a /proc/<pid>/stat line: {data[:80]!r}") from None


def proc_stat(pid: int) -> ProcStat | None:
    """State, group, parent, start time and CPU times of ``pid``; None if there is no such
    process (or its stat cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return parse_stat(f.read())
    except (OSError, ValueError):
        return None


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


class TcpSocket(NamedTuple):
    """One line of /proc/net/tcp or tcp6: ports, the state (``0A`` listening, ``01``
    established) and the socket's inode (``0`` while no process holds it)."""

    local_port: int
    remote_port: int
    state: str
    inode: str


def tcp_sockets() -> Iterator[TcpSocket]:
    """Every TCP socket of this network namespace, IPv4 and IPv6."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    yield TcpSocket(
                        int(fields[1].rsplit(":", 1)[1], 16),
                        int(fields[2].rsplit(":", 1)[1], 16),
                        fields[3],
                        fields[9],
                    )
        except OSError:
            continue


def _listening_inodes(port: int) -> set[str]:
    return {s.inode for s in tcp_sockets() if s.state == "0A" and s.local_port == port}


def socket_holder(inodes: Iterable[str], pids: Iterable[int]) -> int | None:
    """The first of ``pids`` that has one of the sockets ``inodes`` open, or None."""
    targets = {f"socket:[{inode}]" for inode in inodes}
    if not targets:
        return None
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    return pid
            except OSError:
                continue
    return None


def port_holder(port: int) -> str | None:
    """``pid 1234: python3 -m http.server 8000`` for the process listening on ``port``."""
    pid = socket_holder(_listening_inodes(port), all_pids())
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    return f"pid {pid}: {cmd}"
