"""Preflight (SPEC §4), shared by ``run`` and ``check``: is this machine ready to start?

In order: the interpreter and programs exist; no other supervisor holds this data dir (a
lock file, held for the supervisor's life); what a crashed run left behind is reaped
(SPEC §5.5); every port is free. Problems are collected and raised together.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trio

from hearthlink_trio._util import ensure_private_dir
from hearthlink_trio.config import Config, Service
from hearthlink_trio.errors import PreflightError
from hearthlink_trio.process import proc_stat

LOCK_NAME = "supervisor.lock"
GROUPS_NAME = "groups.json"


@dataclass
class RunLock:
    """The data dir's lock: held (an open, flock'ed file) while a supervisor runs."""

    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def acquire_lock(run_dir: Path) -> RunLock:
    """Take the data dir's lock, or raise PreflightError naming the supervisor holding it."""
    ensure_private_dir(run_dir)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise PreflightError(
            [
                f"Another hearthlink supervisor (pid {holder}) is already running with data dir "
                f"{run_dir.parent}; stop it first (hearthlink stop) or use another data dir"
            ]
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return RunLock(path, fd)


class GroupRecord:
    """The process groups of the running supervisor, kept in ``<run_dir>/groups.json``.

    Each entry is a service's pgid (its leader's pid) with the leader's start time, so the
    next preflight can tell our leftovers from an unrelated process that got a reused pid.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / GROUPS_NAME
        self._groups: dict[str, tuple[int, int]] = {}
        self._pending = False

    def add(self, name: str, pgid: int, start_ticks: int | None) -> None:
        if start_ticks is not None:
            self._groups[name] = (pgid, start_ticks)
            self._write()

    def remove(self, name: str) -> None:
        if self._groups.pop(name, None) is not None:
            self._write()

    def clear(self) -> None:
        self._pending = False  # a flush still queued must not write the file again
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _write(self) -> None:
        """Write the file once for all the adds and removes of this scheduler batch.

        At start-up (N spawns) and shutdown (N removes) this is one write instead of N, each
        of them O(N).
        """
        if self._pending:
            return
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:  # outside trio (tests, tools): write now
            self._write_now()
            return
        self._pending = True
        token.run_sync_soon(self._flush)

    def _flush(self) -> None:
        # Runs as a trio system callback, where an exception would crash the run: a record
        # that cannot be written costs only the reaping after a crash, so warn and go on.
        if self._pending:
            self._pending = False
            try:
                self._write_now()
            except OSError as exc:
                logging.getLogger("hearthlink").warning(
                    "Could not record the service process groups in %s: %s",
                    self.path,
                    exc.strerror or exc,
                    extra={"event": "groups_record_failed"},
                )

    def _write_now(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        data = {name: list(entry) for name, entry in self._groups.items()}
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)


def _all_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def reap_leftovers(run_dir: Path) -> list[int]:
    """Kill what a crashed run left alive; returns the pids killed.

    A process counts as ours when its process group is a recorded pgid and it started no
    earlier than the recorded leader, and the leader's pid is either gone or still has the
    recorded start time (a pgid cannot be reused while any member of the group lives).
    """
    path = run_dir / GROUPS_NAME
    try:
        recorded = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return []
    groups: dict[int, int] = {}
    for entry in recorded.values():
        pgid, ticks = int(entry[0]), int(entry[1])
        leader = proc_stat(pgid)
        if leader is None or leader.start_ticks == ticks:
            groups[pgid] = ticks
    killed: list[int] = []
    for pid in _all_pids():
        stat = proc_stat(pid)
        if stat is None or stat.state == "Z":
            continue
        if stat.pgid in groups and stat.start_ticks >= groups[stat.pgid] and pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    path.unlink(missing_ok=True)
    return sorted(killed)


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
    for pid in _all_pids():
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


def check_port(service: Service) -> str | None:
    """None if the service's port can be bound as the service will bind it, else why not."""
    host = "127.0.0.1" if service.host == "localhost" else service.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the services bind: connections of a previous run in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, service.port))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            holder = port_holder(service.port)
            return f"{reason} (held by {holder})" if holder else reason
    return None


def _program_problem(service: Service) -> str | None:
    program = service.argv[0]
    if os.sep in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            return f"{service.name} service: program not found or not executable: {program}"
    elif shutil.which(program) is None:
        return f"{service.name} service: program {program!r} not found on PATH"
    return None


def preflight(config: Config, log: logging.Logger, *, keep_lock: bool) -> RunLock | None:
    """Run every check; returns the held lock if ``keep_lock``, else releases it.

    Raises:
        PreflightError: every problem found, one line each.
    """
    problems: list[str] = []
    if not (os.path.isfile(config.python) and os.access(config.python, os.X_OK)):
        problems.append(f"Python interpreter not found or not executable: {config.python}")
    for service in config.services:
        problem = _program_problem(service)
        if problem:
            problems.append(problem)
    try:
        ensure_private_dir(config.data_dir)
        lock = acquire_lock(config.run_dir)
    except OSError as exc:
        raise PreflightError(
            [*problems, f"Data dir {config.data_dir} is not usable: {exc.strerror or exc}"]
        ) from None
    try:
        killed = reap_leftovers(config.run_dir)
        if killed:
            pids = " ".join(str(pid) for pid in killed)
            log.warning(
                "Reaped %d leftover process(es) of a previous run (pids %s)",
                len(killed),
                pids,
                extra={"event": "reaped"},
            )
        port_lines = []
        for service in config.services:
            reason = check_port(service)
            if reason is None:
                port_lines.append(
                    (service, f"✓ Port {service.port} available for {service.name} service")
                )
            else:
                problems.append(
                    f"Port {service.port} unavailable for {service.name} service: {reason}"
                )
        if problems:
            raise PreflightError(problems)
        for service, line in port_lines:
            log.info(
                line,
                extra={"event": "port_available", "service": service.name, "port": service.port},
            )
    except BaseException:
        lock.release()
        raise
    if keep_lock:
        return lock
    lock.release()
    return None
