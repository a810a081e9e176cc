"""Small helpers shared by the supervisor and the services, with no heavy imports."""

from __future__ import annotations

import contextlib
import math
import os
import stat
import time
from pathlib import Path


def utc_iso(ts: float) -> str:
    """``ts`` (seconds since the epoch, not before it) as ISO 8601 UTC to the millisecond,
    ``2026-03-01T00:05:00.123+00:00``: what ``datetime.fromtimestamp(ts, UTC)
    .isoformat(timespec="milliseconds")`` gives (rounded to the microsecond, then cut),
    without the datetime module, which the supervisor would load before its first spawn
    for the first log line."""
    fraction, whole = math.modf(ts)
    micros = round(fraction * 1_000_000)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(whole))}.{micros // 1000:03d}+00:00"


def utc_now() -> str:
    """The current time as ISO 8601 UTC with millisecond precision and a ``Z`` suffix."""
    return utc_iso(time.time()).replace("+00:00", "Z")


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (fsync the directory itself)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) with mode 0700; an existing folder is left as is."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)  # mkdir's mode is filtered by the umask


def write_private_file(path: Path, text: str, *, replace: bool = False) -> None:
    """Write ``path`` atomically with mode 0600 from its first byte, and make it durable.

    ``replace=False`` never overwrites: it raises FileExistsError if ``path`` exists (another
    process created it first). Nothing but the final file is left behind.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)


#: The largest config or env file read: any real one is a few KiB.
MAX_TEXT_FILE_BYTES = 1024 * 1024


class NotReadableFile(ValueError):
    """A file that is not a regular file, or larger than the reader's limit; the message
    says which, without the path (callers name the file and the key)."""


def read_regular_file(path: Path, *, limit: int) -> bytes:
    """The content of the regular file at ``path``, at most ``limit`` bytes.

    A FIFO, a device (``/dev/zero``) or a folder is refused without reading from it (it is
    opened non-blocking, so a FIFO with no writer cannot hang the caller), and so is a file
    larger than ``limit``, so no input can block the reader or take its memory.

    Raises:
        FileNotFoundError, OSError: the file cannot be opened or read.
        NotReadableFile: not a regular file, or larger than ``limit``.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotReadableFile("not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise NotReadableFile(f"larger than {_size(limit)}")
    return b"".join(chunks)


def read_text_file(path: Path, *, limit: int = MAX_TEXT_FILE_BYTES) -> str:
    """The UTF-8 text of the regular file at ``path`` (a leading byte-order mark dropped).

    Raises:
        FileNotFoundError, OSError: the file cannot be opened or read.
        NotReadableFile: not a regular file, or larger than ``limit``.
        UnicodeDecodeError: not UTF-8.
    """
    return read_regular_file(path, limit=limit).decode("utf-8-sig")


def _size(count: int) -> str:
    return f"{count // (1024 * 1024)} MiB" if count % (1024 * 1024) == 0 else f"{count} bytes"
