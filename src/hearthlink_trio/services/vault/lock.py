"""The Vault folder's lock: one process at a time owns the Vault's data.

The lock (``flock`` on ``vault.lock``, see :mod:`hearthlink_trio.lockfile`) is held by the
running Vault and by a key rotation, so a rotation cannot re-key data under a running Vault
that still holds the old key. It imports nothing heavy: the key rotation of the command
line takes it too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from hearthlink_trio import lockfile
from hearthlink_trio.lockfile import LockFile, LockHeld
from hearthlink_trio.services.vault.errors import VaultBusyError
from hearthlink_trio.services.vault.layout import LOCK_FILE

__all__ = ["VaultLock"]


class VaultLock:
    """Exclusive ownership of a Vault folder (``flock``; released when the process dies)."""

    def __init__(self, lock: LockFile) -> None:
        self._lock = lock

    @classmethod
    def acquire(cls, directory: Path, *, purpose: str) -> VaultLock:
        """Take the lock without waiting; :class:`VaultBusyError` if someone holds it."""
        try:
            return cls(lockfile.acquire(directory / LOCK_FILE))
        except LockHeld as exc:
            by = f" by pid {exc.holder}" if exc.holder.isdigit() else ""
            raise VaultBusyError(
                f"cannot {purpose}: the Vault data in {directory} is in use{by} (a running "
                "Vault or a key rotation); stop it first (hearthlink stop)"
            ) from None

    @classmethod
    @contextlib.contextmanager
    def hold(cls, directory: Path, *, purpose: str) -> Iterator[VaultLock]:
        """The lock for the ``with`` block (see :meth:`acquire`)."""
        lock = cls.acquire(directory, purpose=purpose)
        try:
            yield lock
        finally:
            lock.release()

    def release(self) -> None:
        """Let the folder go; releasing twice is harmless."""
        self._lock.release()
