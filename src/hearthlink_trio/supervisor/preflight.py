"""Preflight, shared by ``run`` and ``check``: is this machine ready to start?

In order: the interpreter and programs exist; the secret files are well formed (``run``
makes the missing ones); no other supervisor holds this data dir (a lock file, held for the
supervisor's life); what a crashed run left behind is reaped; every port is free. Problems
are collected and raised together.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from hearthlink_trio import lockfile
from hearthlink_trio._util import ensure_private_dir
from hearthlink_trio.config import Config, Service
from hearthlink_trio.control.errors import MAX_SOCKET_PATH_BYTES
from hearthlink_trio.errors import PreflightError
from hearthlink_trio.lockfile import LockFile, LockHeld
from hearthlink_trio.process.groups import GROUPS_NAME, MalformedRecord, reap_leftovers
from hearthlink_trio.process.procfs import port_holder
from hearthlink_trio.process.sockets import HeldSockets, address_of
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.secrets import Secrets, load_secrets

LOCK_NAME = "supervisor.lock"


#: The data dir's lock: held (an open, flock'ed file) while a supervisor runs.
RunLock = LockFile


def acquire_lock(run_dir: Path) -> RunLock:
    """Take the data dir's lock, or raise PreflightError naming the supervisor holding it."""
    try:
        return lockfile.acquire(run_dir / LOCK_NAME)
    except LockHeld as exc:
        raise PreflightError(
            [
                f"Another hearthlink supervisor (pid {exc.holder or 'unknown'}) is already "
                f"running with data dir {run_dir.parent}; stop it first (hearthlink stop) or "
                "use another data dir"
            ]
        ) from None


def check_port(service: Service) -> str | None:
    """None if the service's port can be bound as the service will bind it, else why not."""
    if service.port is None:
        return None
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


def _missing_program(program: str, service: Service) -> str | None:
    """Why ``program`` cannot be started for ``service``, or None: looked up as the spawn
    will look it up (a relative path from the service's folder, a bare name on the PATH
    the service gets)."""
    if os.sep in program:
        path = os.path.join(service.cwd, program)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"program not found or not executable: {program}"
        return None
    search = service.env.get("PATH") or service.file_env.get("PATH") or os.environ.get("PATH")
    if shutil.which(program, path=search) is None:
        return f"program {program!r} not found on PATH"
    return None


def _program_problem(service: Service) -> str | None:
    problem = _missing_program(service.argv[0], service)
    return f"{service.name} service: {problem}" if problem else None


def _probe_problem(config: Config, service: Service) -> str | None:
    """An exec probe whose program cannot run would fail the service at every probe."""
    if service.probe.kind != "exec" or not service.probe.argv or (service.replica or 1) > 1:
        return None  # told once per table, not once per replica
    problem = _missing_program(service.probe.argv[0], service)
    return f"{config.path.name}: services.{service.group}.probe: {problem}" if problem else None


def _folder_problem(folder: Path) -> str | None:
    """None if files can be made in ``folder`` (it exists, or can be made, and is
    writable), else why not. Nothing is created."""
    path = folder
    while True:
        try:
            info = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            if path == path.parent:
                return f"{folder} cannot be made"
            path = path.parent
            continue
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
        break
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        what = "cannot be written in" if path == folder else f"cannot be made ({path} is read-only)"
        return f"{folder} {what}"
    return None


def _socket_in_use(path: Path) -> str | None:
    """Why the control socket cannot be made at ``path``: another file is there, or a
    supervisor answers on it (a stale socket, left by a crashed run, is fine)."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return None
    if not stat.S_ISSOCK(mode):
        return f"{path} exists and is not a socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(STALE_PROBE_SECONDS)
        try:
            probe.connect(os.fspath(path))
        except TimeoutError:
            return f"{path} is held by a process that does not answer; stop it first"
        except OSError:
            return None  # nobody listens: run replaces it
    return f"another hearthlink supervisor answers on {path}; stop it first (hearthlink stop)"


#: How long the control socket found in the way gets to accept a connection.
STALE_PROBE_SECONDS = 1.0
#: What a service's log file may not be.
_NOT_A_LOG = {stat.S_IFIFO: "FIFO", stat.S_IFDIR: "folder", stat.S_IFSOCK: "socket"}


def _path_problems(config: Config) -> list[str]:
    """What ``run`` would fail at after starting services: the control socket and the log
    folder, each line naming its key."""
    label = config.path.name
    problems = []
    sock = config.control_socket
    if len(os.fsencode(sock)) >= MAX_SOCKET_PATH_BYTES:
        problems.append(
            f"{label}: supervisor.control_socket: {sock} is longer than a Unix socket allows "
            f"({MAX_SOCKET_PATH_BYTES - 1} bytes); set a shorter path"
        )
    else:
        why = _folder_problem(sock.parent) or _socket_in_use(sock)
        if why:
            problems.append(f"{label}: supervisor.control_socket: {why}")
    why = _folder_problem(config.log_dir)
    if why:
        problems.append(f"{label}: supervisor.log_dir: {why}")
    for service in config.services:
        # Opened for appending at start: a FIFO there would block the supervisor, a folder
        # fail it. A device is left alone (/dev/null is a way to keep no log).
        log_file = config.log_dir / f"{service.name}.log"
        with contextlib.suppress(OSError):
            kind = stat.S_IFMT(log_file.stat().st_mode)
            if kind in _NOT_A_LOG:
                problems.append(
                    f"{label}: supervisor.log_dir: {log_file} is a {_NOT_A_LOG[kind]}, not a "
                    "file to write the log in"
                )
    return problems


@dataclass
class Ready:
    """What a passed preflight hands to ``run``: the held lock and the run's secrets."""

    lock: RunLock
    secrets: Secrets


def _reap(run_dir: Path, log: logging.Logger) -> None:
    try:
        killed = reap_leftovers(run_dir)
    except MalformedRecord as exc:
        # Unusable for reaping; kept aside for a look rather than deleted, and the run goes
        # on: a leftover that still holds a port is caught by the port check below.
        record = run_dir / GROUPS_NAME
        aside = record.with_name(GROUPS_NAME + ".corrupt")
        os.replace(record, aside)
        log_lines.emit(log, log_lines.group_record_unusable(record, str(exc), aside))
        return
    if killed:
        log_lines.emit(log, log_lines.reaped(killed))


def preflight(
    config: Config,
    log: logging.Logger,
    *,
    keep_lock: bool,
    sockets: HeldSockets | None = None,
    selected: frozenset[str] | None = None,
) -> Ready | None:
    """Run every check; with ``keep_lock`` (``run``) returns the held lock and the secrets,
    made where missing; without (``check``) releases the lock, creates nothing, returns None.
    The ports checked are those of the ``selected`` services (default: all). With
    ``sockets``, the ports of the services with ``socket = true`` are bound there (and
    kept) instead of being only tried (those of services not selected: if they are free).

    Raises:
        PreflightError: every problem found, one line each.
    """
    problems: list[str] = []
    if not (os.path.isfile(config.python) and os.access(config.python, os.X_OK)):
        problems.append(
            f"{config.path.name}: supervisor.python: Python interpreter not found or not "
            f"executable: {config.python}"
        )
    for service in config.services:
        problem = _program_problem(service)
        if problem:
            problems.append(problem)
        problem = _probe_problem(config, service)
        if problem:
            problems.append(problem)
    problems += _path_problems(config)
    try:
        ensure_private_dir(config.data_dir)
        lock = acquire_lock(config.run_dir)
    except OSError as exc:
        raise PreflightError(
            [
                *problems,
                f"{config.path.name}: supervisor.data_dir: Data dir {config.data_dir} is not "
                f"usable: {exc.strerror or exc}",
            ]
        ) from None
    if lock.previous and not lock.previous.isdigit():
        log_lines.emit(log, log_lines.lock_file_corrupt(lock.path, lock.previous))
    try:
        try:
            secrets = load_secrets(config, create=keep_lock)
        except ValueError as exc:
            problems.append(f"Secrets in {config.data_dir}: {exc}")
        except OSError as exc:
            problems.append(f"Secrets in {config.data_dir}: {exc.strerror or exc}")
        try:
            _reap(config.run_dir, log)
        except OSError as exc:
            problems.append(f"Run dir {config.run_dir}: {exc.strerror or exc}")
        available = []
        if sockets is not None:
            problems += sockets.bind(
                config, required=lambda svc: selected is None or svc.name in selected
            )
        held = sockets.groups() if sockets is not None else {}
        for service in config.services:
            if service.port is None or (selected is not None and service.name not in selected):
                continue  # no port, or not started by this run: no port check
            if address_of(service) is not None and sockets is not None:
                if held.get(service.group or service.name) == address_of(service):
                    available.append(service)
                continue  # bound above (a busy port is among the problems already)
            reason = check_port(service)
            if reason is None:
                available.append(service)
            else:
                problems.append(
                    f"Port {service.port} unavailable for {service.name} service: {reason}"
                )
        if problems:
            raise PreflightError(problems)
        for service in available:
            assert service.port is not None
            log_lines.emit(log, log_lines.port_available(service.name, service.port))
    except BaseException:
        lock.release()
        raise
    if keep_lock:
        try:
            _give_data_folders(config)
        except OSError as exc:
            lock.release()
            raise PreflightError([f"Data dir {config.data_dir}: {exc.strerror or exc}"]) from None
        return Ready(lock, secrets)
    lock.release()
    return None


def _give_data_folders(config: Config) -> None:
    """A service run as another user owns its folder ``<data_dir>/<name>``, and may pass
    through the data dir (0711: it can reach its folder, but list nothing; the secret
    files there stay 0600)."""
    others = [svc for svc in config.services if svc.user]
    if not others:
        return
    config.data_dir.chmod(0o711)
    for service in others:
        account = pwd.getpwnam(service.user)
        folder = config.data_dir / service.group
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chown(folder, account.pw_uid, account.pw_gid)
