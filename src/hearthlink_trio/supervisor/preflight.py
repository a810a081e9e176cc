"""Preflight, shared by ``run`` and ``check``: is this machine ready to start?

In order: the interpreter and programs exist; the secret files are well formed (``run``
makes the missing ones); no other supervisor holds this data dir (a lock file, held for the
supervisor's life); what a crashed run left behind is reaped; every port is free. Problems
are collected and raised together.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from hearthlink_trio import lockfile
from hearthlink_trio._util import ensure_private_dir
from hearthlink_trio.config import Config, Service
from hearthlink_trio.errors import PreflightError
from hearthlink_trio.lockfile import LockFile, LockHeld
from hearthlink_trio.process.groups import GROUPS_NAME, MalformedRecord, reap_leftovers
from hearthlink_trio.process.procfs import port_holder
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


def _program_problem(service: Service) -> str | None:
    program = service.argv[0]
    if os.sep in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            return f"{service.name} service: program not found or not executable: {program}"
    elif shutil.which(program) is None:
        return f"{service.name} service: program {program!r} not found on PATH"
    return None


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
    selected: frozenset[str] | None = None,
) -> Ready | None:
    """Run every check; with ``keep_lock`` (``run``) returns the held lock and the secrets,
    made where missing; without (``check``) releases the lock, creates nothing, returns None.
    The ports checked are those of the ``selected`` services (default: all).

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
        for service in config.services:
            if service.port is None or (selected is not None and service.name not in selected):
                continue  # no port, or not started by this run: no port check
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
