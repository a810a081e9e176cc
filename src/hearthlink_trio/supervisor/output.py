"""Output: children's lines to stdout and log files, supervisor events to stderr.

Child output must never block, crash or slow the supervisor, whatever the child writes
(megabytes at once, invalid UTF-8, a line of a megabyte). So:

* the pumps read fixed-size chunks and split them with :class:`LineSplitter`, which caps a
  line at :data:`MAX_LINE_BYTES` (longer ones are cut into pieces) and decodes with
  ``errors="replace"``;
* a service's log file is written straight away (local file writes do not stall), one write
  per chunk, rotated by size by the stdlib's ``RotatingFileHandler``;
* the console (the supervisor's stdout, which may be a slow terminal or pipe) is written by a
  thread fed through a bounded queue: if it falls behind, lines are dropped and counted, and
  the count is reported, instead of stopping the event loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

if TYPE_CHECKING:
    import trio

from hearthlink_trio._util import ensure_private_dir, utc_iso
from hearthlink_trio.process.lines import MAX_LINE_BYTES, LineSplitter

__all__ = [
    "MAX_LINE_BYTES",
    "Console",
    "LineSplitter",
    "ServiceLog",
    "ServiceOutput",
    "pump",
    "pump_lines",
]

READ_CHUNK_BYTES = 64 * 1024
CONSOLE_QUEUE_CHUNKS = 1024
COLOURS = (36, 33, 35, 32, 34, 31, 96, 93, 95, 92, 94, 91)


class Console:
    """Prefixed child output on stdout, written by a thread so the event loop never waits."""

    def __init__(self, stream: BinaryIO, *, colour: bool) -> None:
        self._stream = stream
        self._colour = colour
        self._queue: queue.Queue[bytes | None] = queue.Queue(CONSOLE_QUEUE_CHUNKS)
        self._dropped = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._writer, name="hearthlink-console", daemon=True)
        self._thread.start()

    def prefix(self, name: str, index: int) -> bytes:
        label = f"{name} | "
        if self._colour:
            return f"\x1b[{COLOURS[index % len(COLOURS)]}m{label}\x1b[0m".encode()
        return label.encode()

    def write(self, prefix: bytes, lines: Iterable[str]) -> None:
        blob = b"".join(prefix + line.encode("utf-8", "replace") + b"\n" for line in lines)
        try:
            self._queue.put_nowait(blob)
        except queue.Full:
            with self._lock:
                self._dropped += blob.count(b"\n")

    def _writer(self) -> None:
        while True:
            blob = self._queue.get()
            if blob is None:
                return
            with self._lock:
                dropped, self._dropped = self._dropped, 0
            try:
                if dropped:
                    note = f"hearthlink | {dropped} line(s) not shown: stdout was too slow\n"
                    self._stream.write(note.encode())
                self._stream.write(blob)
                self._stream.flush()
            except (OSError, ValueError):
                # stdout is gone (closed pipe): keep draining so nothing blocks.
                continue

    def close(self, timeout: float = 1.0) -> None:
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)


class ServiceLog:
    """``<log_dir>/<name>.log``, rotated by size.

    A write that fails (disk full, file too large, folder gone) never stops the supervisor:
    ``on_error(path, error)`` is called once when writes start failing and
    ``on_error(path, None)`` once they succeed again; the lines in between are lost to the
    file only (the console still shows them).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        backups: int,
        on_error: Callable[[Path, OSError | None], None] | None = None,
    ) -> None:
        ensure_private_dir(path.parent)
        self.path = path
        self._on_error = on_error
        self._failing = False
        from hearthlink_trio.supervisor.rotating import QuietRotatingHandler

        self._handler = QuietRotatingHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, lines: list[str]) -> None:
        record = logging.LogRecord("child", logging.INFO, "", 0, "\n".join(lines), None, None)
        handler = self._handler
        handler.failure = None
        handler.emit(record)
        if handler.failure is not None and not self._failing:
            self._failing = True
            if self._on_error is not None:
                self._on_error(self.path, handler.failure)
        elif handler.failure is None and self._failing:
            self._failing = False
            if self._on_error is not None:
                self._on_error(self.path, None)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._handler.close()


#: Called with ``(stream, lines)`` for every batch of lines a service writes.
LineWatcher = Callable[[str, list[str]], None]


class ServiceOutput:
    """Where one service's lines go: the console, its log file, its last line, and whoever
    watches them (the event stream, a log probe)."""

    def __init__(self, name: str, index: int, console: Console, log: ServiceLog) -> None:
        self.name = name
        self.console = console
        self.log = log
        self.last_line = ""
        self.watchers: list[LineWatcher] = []
        self._prefix = console.prefix(name, index)
        self._hook_prefix = console.prefix(f"{name} hook", index)

    def lines(self, raw: list[bytes], stream: str = "stdout") -> None:
        lines = [line.decode("utf-8", "replace") for line in raw]
        for line in reversed(lines):
            if line.strip():
                self.last_line = line.strip()
                break
        self.console.write(self._prefix, lines)
        self.log.write(lines)
        for watcher in self.watchers:
            watcher(stream, lines)

    def hook_lines(self, raw: list[bytes]) -> None:
        """A hook's lines: on the console and in the log as ``NAME hook | line`` (not the
        service's own last line, nor seen by its watchers)."""
        lines = [line.decode("utf-8", "replace") for line in raw]
        self.console.write(self._hook_prefix, lines)
        self.log.write([f"{self.name} hook | {line}" for line in lines])


async def pump(stream: trio.abc.ReceiveStream, out: ServiceOutput, name: str = "stdout") -> None:
    """Copy a child's pipe to ``out`` line by line until end of stream."""
    await pump_lines(stream, lambda lines: out.lines(lines, name))


async def pump_lines(stream: trio.abc.ReceiveStream, write: Callable[[list[bytes]], None]) -> None:
    """Read a child's pipe until end of stream (or until cancelled), handing each batch of
    whole lines to ``write``; a partial last line is handed over as it is at the end."""
    import trio

    splitter = LineSplitter()
    try:
        while True:
            try:
                chunk = bytes(await stream.receive_some(READ_CHUNK_BYTES))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            if not chunk:
                break
            lines = splitter.feed(chunk)
            if lines:
                write(lines)
    finally:
        tail = splitter.flush()
        if tail:
            write(tail)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "ts": utc_iso(record.created),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "message"),
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None) or {}
        for key, value in fields.items():
            if value is not None:
                body[key] = value
        return json.dumps(body, ensure_ascii=False)


def setup_event_log(log_format: str, stream: TextIO | None = None) -> logging.Logger:
    """The supervisor's event log on stderr, human (the original design's lines) or JSON."""
    logger = logging.getLogger("hearthlink")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter("%(message)s")
    )
    logger.addHandler(handler)
    return logger
