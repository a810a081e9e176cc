"""An owner-only lock file that says who holds it: the run lock and the Vault's lock.

The lock is an ``flock`` on an open file, so the kernel releases it when its holder dies
(however it dies); the holder's pid is written into the file so that a process refused the
lock can say who has it. Stdlib only: the supervisor and the services both import it.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from hearthlink_trio._util import ensure_private_dir

__all__ = ["LockFile", "LockHeld", "acquire"]

#: How much of the file is read back: a pid and its newline, with room for garbage.
_READ_BYTES = 64


class LockHeld(Exception):
    """Another process holds the lock.

    Attributes:
        path: the lock file.
        holder: what the holder wrote into it (its pid), stripped; "" if nothing.
    """

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder or 'an unknown process'}")
        self.path = path
        self.holder = holder


@dataclass
class LockFile:
    """A held lock: an open, flock'ed file holding our pid, until :meth:`release`."""

    path: Path
    fd: int
    #: What the file said before we took it: a previous holder's pid, or garbage.
    previous: str = ""

    def release(self) -> None:
        """Let the lock go (closing the file); releasing twice is harmless."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def acquire(path: Path) -> LockFile:
    """Take the lock ``path`` without waiting, creating it (and its folder) owner-only.

    On success the file holds our pid and the returned lock says what it held before.

    Raises:
        LockHeld: another process holds it (nothing is left open).
        OSError: the folder or the file cannot be made or opened.
    """
    ensure_private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(path, _read(fd)) from None
        previous = _read(fd)
        ours = f"{os.getpid()}\n".encode()
        os.pwrite(fd, ours, 0)
        # Cut what is left of a longer content, but never to zero first: on ext4 emptying a
        # file another process wrote waits on the journal (0.3-5 ms before the first spawn).
        if os.fstat(fd).st_size > len(ours):
            os.ftruncate(fd, len(ours))
    except BaseException:
        os.close(fd)
        raise
    return LockFile(path, fd, previous)


def _read(fd: int) -> str:
    # The first line: the pid is written over an older one before the rest is cut, so a
    # reader in between may see the tail of the old one on the next line.
    text = os.pread(fd, _READ_BYTES, 0).decode(errors="replace").strip()
    return text.split("\n", 1)[0].strip()
