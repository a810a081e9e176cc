"""Reading a service's log file for ``hearthlink logs NAME [-f] [-n N]``.

:func:`tail_lines` reads the end of a file backwards in blocks, so ``-n 20`` of a large log
costs a few reads. :func:`follow` is ``tail -F``: it prints lines as they are appended and
keeps going when the supervisor rotates the file (``name.log`` renamed to ``name.log.1``
and a new ``name.log`` created) or truncates it.

:func:`tail_many` and :func:`follow_many` do the same for the replicas of a table, each
line prefixed with its replica's name. The files have no timestamps: the last lines come
as one block per file, ordered by when each was last written (the most recent last);
followed lines are interleaved as they arrive.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import BinaryIO

__all__ = ["follow", "follow_many", "tail_lines", "tail_many"]

#: Bytes read per step when searching backwards for line starts.
BLOCK_SIZE = 64 * 1024
#: Bytes read per step when following.
READ_SIZE = 64 * 1024


def tail_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of ``path``, without their line ends.

    A last line with no newline yet counts as a line. Bytes that are not UTF-8 are replaced.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    with open(path, "rb") as f:
        return _tail(f, n, os.fstat(f.fileno()).st_size)


def _tail(f: BinaryIO, n: int, end: int) -> list[str]:
    """The last ``n`` lines of ``f`` before offset ``end``."""
    if n <= 0 or end == 0:
        return []
    chunks: list[bytes] = []
    newlines = 0
    position = end
    # A final "\n" ends the last line; it does not start another one. So n lines need n
    # newlines before them plus that one, or the start of the file.
    while position > 0 and newlines <= n:
        step = min(BLOCK_SIZE, position)
        position -= step
        f.seek(position)
        chunk = f.read(step)
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [_decode(line) for line in lines[-n:]]


def follow(
    path: Path,
    *,
    poll_interval: float = 0.2,
    stop: Callable[[], bool] | None = None,
    last: int = 0,
    caught_up: Callable[[], None] | None = None,
) -> Generator[str, None, None]:
    """Yield the lines appended to ``path`` (without line ends) as they arrive, forever.

    Like any generator it starts when iteration does: then it opens the file, yields its
    ``last`` lines and goes on from the end (all from one open file, so nothing written in
    between is lost or doubled). If the file does not exist yet, it waits for it and
    follows it from its start. On rotation (``path`` now names
    another file) it reads what is left of the old file, ends its unfinished last line, and
    continues from the start of the new one; on truncation it starts over from the start.

    Args:
        poll_interval: seconds between checks when nothing new has arrived.
        stop: called before every wait; following ends when it returns True.
        last: how many existing lines to yield first.
        caught_up: called once, when those lines have been yielded (or the file is not
            there yet): what comes after is new.
    """
    should_stop = stop if stop is not None else _never
    f: BinaryIO | None = None
    try:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed in the finally below
        except FileNotFoundError:
            if caught_up is not None:
                caught_up()
            f = _open_when_present(path, poll_interval, should_stop)
        else:
            # An unfinished last line is not part of the tail: following reads it whole.
            end = _line_start(f, os.fstat(f.fileno()).st_size)
            yield from _tail(f, last, end)
            f.seek(end)
            if caught_up is not None:
                caught_up()
        partial = b""
        while f is not None:
            data = f.read(READ_SIZE)
            if data:
                lines = (partial + data).split(b"\n")
                partial = lines.pop()
                for line in lines:
                    yield _decode(line)
                continue
            if _replaced(path, f):
                # A new file is in place, so the writer is done with the old one: read the
                # rest of it, then end its unfinished line, if any.
                lines = (partial + f.read()).split(b"\n")
                partial = b""
                if lines[-1] == b"":
                    lines.pop()
                for line in lines:
                    yield _decode(line)
                f.close()
                f = _open_when_present(path, poll_interval, should_stop)
                continue
            if os.fstat(f.fileno()).st_size < f.tell():
                # Truncated in place: whatever is there now is new.
                f.seek(0)
                partial = b""
                continue
            if should_stop():
                return
            time.sleep(poll_interval)
    finally:
        if f is not None:
            f.close()


def _by_last_write(paths: Mapping[str, Path]) -> list[str]:
    """The names of ``paths``, the file written longest ago first (missing files first)."""

    def written(name: str) -> float:
        try:
            return paths[name].stat().st_mtime
        except OSError:
            return 0.0

    return sorted(paths, key=written)


def tail_many(paths: Mapping[str, Path], n: int) -> list[str]:
    """The last ``n`` lines of each file of ``paths`` (name -> file), each prefixed
    ``name | ``, one block per file, ordered by last write. Missing files are skipped."""
    lines: list[str] = []
    for name in _by_last_write(paths):
        try:
            lines += [f"{name} | {line}" for line in tail_lines(paths[name], n)]
        except FileNotFoundError:
            continue
    return lines


def follow_many(
    paths: Mapping[str, Path], *, last: int = 0, poll_interval: float = 0.2
) -> Generator[str, None, None]:
    """:func:`follow` for every file of ``paths`` (name -> file) at once, each line
    prefixed ``name | ``: first the last ``last`` lines of each, as :func:`tail_many`
    orders them, then every new line as it arrives. Runs until the generator is closed
    (or the caller's Ctrl-C), which ends the followers within ``poll_interval``."""
    found: queue.Queue[tuple[str, str | None]] = queue.Queue()
    stopping = threading.Event()

    def follow_one(name: str) -> None:
        for line in follow(
            paths[name],
            poll_interval=poll_interval,
            stop=stopping.is_set,
            last=last,
            caught_up=lambda: found.put((name, None)),
        ):
            found.put((name, line))

    followers = [
        threading.Thread(target=follow_one, args=(name,), name=f"follow {name}", daemon=True)
        for name in paths
    ]
    for thread in followers:
        thread.start()
    try:
        # Each file's last lines, gathered until every follower has caught up.
        history: dict[str, list[str]] = {name: [] for name in paths}
        behind = set(paths)
        while behind:
            name, line = found.get()
            if line is None:
                behind.discard(name)
            else:
                history[name].append(line)
        for name in _by_last_write(paths):
            for line in history[name]:
                yield f"{name} | {line}"
        while True:
            name, line = found.get()
            if line is not None:
                yield f"{name} | {line}"
    finally:
        stopping.set()
        for thread in followers:
            thread.join()


def _line_start(f: BinaryIO, end: int) -> int:
    """The offset just after the last newline before ``end`` (0 if there is none)."""
    position = end
    while position > 0:
        step = min(BLOCK_SIZE, position)
        position -= step
        f.seek(position)
        index = f.read(step).rfind(b"\n")
        if index >= 0:
            return position + index + 1
    return 0


def _replaced(path: Path, f: BinaryIO) -> bool:
    """True when ``path`` names a different file than ``f`` (it may be briefly absent)."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        # Between the rename and the creation of the new file: not replaced yet.
        return False
    opened = os.fstat(f.fileno())
    return (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino)


def _open_when_present(
    path: Path, poll_interval: float, should_stop: Callable[[], bool]
) -> BinaryIO | None:
    while True:
        try:
            return open(path, "rb")
        except FileNotFoundError:
            if should_stop():
                return None
            time.sleep(poll_interval)


def _decode(line: bytes) -> str:
    return line.decode("utf-8", errors="replace")


def _never() -> bool:
    return False
