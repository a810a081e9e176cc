"""Process groups: signalling them, recording a run's groups, reaping a crashed run's.

Each service process leads its own process group. While the supervisor runs, every group
is recorded in ``<run_dir>/groups.json`` with its leader's start time, so that the next
preflight can kill what a crashed run left behind without ever hitting a process that merely
got a reused pid.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Protocol

from hearthlink_trio._util import write_private_file
from hearthlink_trio.process.tree import kill_members, live_groups

GROUPS_NAME = "groups.json"


def killpg(pgid: int, sig: int) -> bool:
    """Signal a process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


class GroupMirror(Protocol):
    """Who else is told of every group recorded and dropped (the sentinel)."""

    def track(self, pgid: int, start_ticks: int) -> None: ...

    def untrack(self, pgid: int) -> None: ...


class GroupRecord:
    """The process groups of the running supervisor, kept in ``<run_dir>/groups.json``.

    Each entry is a service's pgid (its leader's pid) with the leader's start time, so the
    next preflight can tell our leftovers from an unrelated process that got a reused pid.
    """

    def __init__(self, run_dir: Path, *, mirror: GroupMirror | None = None) -> None:
        self.path = run_dir / GROUPS_NAME
        self._groups: dict[str, tuple[int, int]] = {}
        self._pending = False
        self._failing = False
        self._mirror = mirror

    def add(self, name: str, pgid: int, start_ticks: int | None) -> None:
        if start_ticks is not None:
            self._groups[name] = (pgid, start_ticks)
            if self._mirror is not None:
                self._mirror.track(pgid, start_ticks)
            self._write()

    def remove(self, name: str) -> None:
        entry = self._groups.pop(name, None)
        if entry is not None:
            if self._mirror is not None:
                self._mirror.untrack(entry[0])
            self._write()

    def clear(self) -> None:
        self._pending = False  # a flush still queued must not write the file again
        # A record left behind (a read-only data dir) is harmless: the next preflight
        # checks start times, and finds nothing of ours alive.
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _write(self) -> None:
        """Write the file once for all the adds and removes of this scheduler batch.

        At start-up (N spawns) and shutdown (N removes) this is one write instead of N, each
        of them O(N).
        """
        if self._pending:
            return
        try:
            import trio

            token = trio.lowlevel.current_trio_token()
        except RuntimeError:  # outside trio (tests, tools): write now
            self._write_now()
            return
        self._pending = True
        token.run_sync_soon(self._flush)

    def _flush(self) -> None:
        # Runs as a trio system callback, where an exception would crash the run: a record
        # that cannot be written costs only the reaping after a crash (and the sentinel has
        # its own copy), so warn once per spell of failures and go on.
        if self._pending:
            self._pending = False
            try:
                self._write_now()
            except OSError as exc:
                if self._failing:
                    return
                self._failing = True
                logging.getLogger("hearthlink").warning(
                    "Could not record the service process groups in %s: %s",
                    self.path,
                    exc.strerror or exc,
                    extra={"event": "groups_record_failed"},
                )
            else:
                self._failing = False

    def _write_now(self) -> None:
        # Durable (file and folder synced) so a power loss right after a spawn still leaves
        # the record the next preflight needs to find that process.
        data = {name: list(entry) for name, entry in self._groups.items()}
        write_private_file(self.path, json.dumps(data), replace=True)


class MalformedRecord(ValueError):
    """``groups.json`` is not what a supervisor writes (edited, truncated, corrupted)."""


def read_record(path: Path) -> dict[int, int]:
    """The recorded process groups, ``{pgid: leader start ticks}``; {} if there is no file.

    Raises:
        MalformedRecord: the file is not a JSON object of ``name: [pgid, ticks]``.
        OSError: it cannot be read.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise MalformedRecord("not UTF-8 text") from None
    try:
        recorded = json.loads(text)
    except ValueError as exc:
        raise MalformedRecord(f"not JSON ({exc})") from None
    if not isinstance(recorded, dict):
        raise MalformedRecord("not a JSON object")
    groups: dict[int, int] = {}
    for name, entry in recorded.items():
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and all(type(value) is int and value > 0 for value in entry)
        ):
            raise MalformedRecord(f"entry {name!r} is not [pgid, start time]")
        groups[entry[0]] = entry[1]
    return groups


def reap_leftovers(run_dir: Path) -> list[int]:
    """Kill what a crashed run left alive, then drop the record; returns the pids killed.

    A process counts as ours when its process group is a recorded pgid and it started no
    earlier than the recorded leader, and the leader's pid is either gone or still has the
    recorded start time.

    Raises:
        MalformedRecord: the record is unusable; it is left in place for the caller.
        OSError: the record cannot be read.
    """
    path = run_dir / GROUPS_NAME
    killed = kill_members(live_groups(read_record(path)))
    path.unlink(missing_ok=True)
    return sorted(killed)
