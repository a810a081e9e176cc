"""Log viewing: the tail of a file, and following it across rotation and truncation."""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path

import pytest

from hearthlink_trio.cli import logview
from hearthlink_trio.cli.logview import follow, tail_lines
from tests.helpers import wait_for

POLL = 0.01


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def take(lines: Generator[str, None, None], count: int) -> list[str]:
    return [next(lines) for _ in range(count)]


@pytest.mark.parametrize(
    ("content", "n", "expected"),
    [
        ("a\nb\nc\n", 2, ["b", "c"]),
        ("a\nb\nc\n", 3, ["a", "b", "c"]),
        ("a\nb\nc\n", 10, ["a", "b", "c"]),
        ("a\nb\nc", 2, ["b", "c"]),
        ("a\n\nc\n", 2, ["", "c"]),
        ("a\nb\n", 0, []),
        ("", 5, []),
        ("\n", 1, [""]),
    ],
)
def test_tail_lines(tmp_path: Path, content: str, n: int, expected: list[str]) -> None:
    path = tmp_path / "x.log"
    path.write_text(content)
    assert tail_lines(path, n) == expected


def test_tail_lines_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logview, "BLOCK_SIZE", 7)
    lines = [f"line {i} " + "x" * (i % 13) for i in range(200)]
    path = tmp_path / "x.log"
    path.write_text("\n".join(lines) + "\n")
    for n in (1, 2, 3, 17, 199, 200, 500):
        assert tail_lines(path, n) == lines[-n:]


def test_tail_lines_reads_only_the_end() -> None:
    class CountingFile(io.BytesIO):
        bytes_read = 0

        def read(self, size: int | None = -1, /) -> bytes:
            data = super().read(size)
            self.bytes_read += len(data)
            return data

    f = CountingFile(b"old\n" * 2_000_000 + b"last one\n")  # 8 MB
    assert logview._tail(f, 2, len(f.getvalue())) == ["old", "last one"]
    assert f.bytes_read <= logview.BLOCK_SIZE


def test_tail_lines_replaces_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"ok\n\xff\xfe bad\n")
    assert tail_lines(path, 1) == ["\ufffd\ufffd bad"]


def test_tail_lines_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        tail_lines(tmp_path / "absent.log", 3)


class Script:
    """A ``stop`` for follow(): runs one queued action per poll that found nothing new (the
    moment follow() is about to wait), and ends a broken test after ``timeout`` instead of
    letting it hang."""

    def __init__(self, *actions: Callable[[], object], timeout: float = 10.0) -> None:
        self.actions = list(actions)
        self.deadline = time.monotonic() + timeout

    def add(self, *actions: Callable[[], object]) -> None:
        self.actions.extend(actions)

    def __call__(self) -> bool:
        if self.actions:
            self.actions.pop(0)()
        return time.monotonic() > self.deadline


def test_follow_starts_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("old 1\nold 2\n")
    script = Script(lambda: append(path, "new 1\nnew 2\n"))
    lines = follow(path, poll_interval=POLL, stop=script)
    assert take(lines, 2) == ["new 1", "new 2"]
    lines.close()


def test_follow_with_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("old 1\nold 2\nold 3\nunfinished")
    script = Script()
    lines = follow(path, poll_interval=POLL, stop=script, last=2)
    # The unfinished line is not part of the tail; it is yielded once it is complete.
    assert take(lines, 2) == ["old 2", "old 3"]
    script.add(lambda: append(path, " now done\nnew\n"))
    assert take(lines, 2) == ["unfinished now done", "new"]
    lines.close()


def test_follow_joins_a_line_written_in_pieces(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("")
    script = Script(*(lambda p=p: append(path, p) for p in ["hel", "lo wor", "ld\nnext\n"]))
    lines = follow(path, poll_interval=POLL, stop=script)
    assert take(lines, 2) == ["hello world", "next"]
    lines.close()


def test_follow_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "vault.log"
    path.write_text("before\n")

    def rotate() -> None:
        # What the old file got after the last poll is still read, unfinished line included.
        append(path, "b\nc unfinished")
        path.rename(tmp_path / "vault.log.1")
        path.write_text("d\n")

    script = Script(lambda: append(path, "a\n"), rotate, lambda: append(path, "e\n"))
    lines = follow(path, poll_interval=POLL, stop=script)
    assert take(lines, 5) == ["a", "b", "c unfinished", "d", "e"]
    lines.close()


def test_follow_waits_for_a_new_file_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "vault.log"
    path.write_text("")
    script = Script(
        lambda: append(path, "a\n"),
        lambda: path.rename(tmp_path / "vault.log.1"),
        # A few polls find nothing at the path before the new file appears.
        lambda: None,
        lambda: None,
        lambda: path.write_text("b\n"),
    )
    lines = follow(path, poll_interval=POLL, stop=script)
    assert take(lines, 2) == ["a", "b"]
    lines.close()


def test_follow_a_file_that_appears_later(tmp_path: Path) -> None:
    path = tmp_path / "later.log"
    script = Script(lambda: None, lambda: path.write_text("first\n"))
    lines = follow(path, poll_interval=POLL, stop=script, last=5)
    # Everything in a file that appeared after following began is new: read from its start.
    assert take(lines, 1) == ["first"]
    lines.close()


def test_follow_after_truncation(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("a long first line\n")
    script = Script(lambda: path.write_text("b\n"))
    lines = follow(path, poll_interval=POLL, stop=script, last=1)
    assert take(lines, 2) == ["a long first line", "b"]
    lines.close()


def test_follow_stops(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("x\n")
    assert list(follow(path, poll_interval=POLL, stop=lambda: True)) == []
    assert list(follow(tmp_path / "absent", poll_interval=POLL, stop=lambda: True)) == []


def test_follow_a_rotating_file_handler(tmp_path: Path) -> None:
    """A real writer in another thread, rotating every few lines: nothing lost or doubled."""
    path = tmp_path / "svc.log"
    total = 60
    seen: list[str] = []
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=64, backupCount=50)
    handler.setFormatter(logging.Formatter("%(message)s"))

    def writer() -> None:
        for i in range(total):
            handler.emit(logging.makeLogRecord({"msg": f"line {i:03d}"}))
            # Wait (bounded) until the reader has it, so two rotations never happen between
            # two polls; the rotation itself still races freely with the reader's polls.
            wait_for(lambda: len(seen) > i, timeout=10, interval=0.001)  # noqa: B023

    thread = threading.Thread(target=writer)
    # The writer starts once follow() is in place (its first poll found nothing).
    script = Script(thread.start, timeout=20)
    try:
        for line in follow(path, poll_interval=0.001, stop=script):
            seen.append(line)
            if len(seen) == total:
                break
    finally:
        if thread.is_alive():
            thread.join()
        handler.close()
    assert seen == [f"line {i:03d}" for i in range(total)]
    assert len(os.listdir(tmp_path)) > 5  # it really rotated


def _files(tmp_path: Path, contents: dict[str, str]) -> dict[str, Path]:
    """One log file per replica, written in the order given, each a little later."""
    paths = {}
    for n, (name, text) in enumerate(contents.items()):
        path = tmp_path / f"{name}.log"
        path.write_text(text)
        os.utime(path, (1_000_000 + n, 1_000_000 + n))
        paths[name] = path
    return paths


def test_tail_many_prefixes_and_orders_blocks_by_last_write(tmp_path: Path) -> None:
    paths = _files(tmp_path, {"web-2": "a\nb\nc\n", "web-1": "x\ny\n"})
    paths["web-3"] = tmp_path / "web-3.log"  # not started yet: no file
    assert logview.tail_many(dict(sorted(paths.items())), 2) == [
        "web-2 | b",
        "web-2 | c",
        "web-1 | x",
        "web-1 | y",
    ]


def _next_within(lines: Generator[str, None, None], seconds: float = 5.0) -> str:
    """The next line, or a failure after ``seconds`` (instead of a hung test)."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(next(lines)), daemon=True)
    reader.start()
    reader.join(seconds)
    assert got, f"no line within {seconds}s"
    return got[0]


def test_follow_many_gives_the_last_lines_then_interleaves_new_ones(tmp_path: Path) -> None:
    paths = _files(tmp_path, {"web-2": "a\nb\n", "web-1": "x\n"})
    lines = logview.follow_many(dict(sorted(paths.items())), last=1, poll_interval=POLL)
    assert [_next_within(lines), _next_within(lines)] == ["web-2 | b", "web-1 | x"]
    assert {t.name for t in threading.enumerate()} >= {"follow web-1", "follow web-2"}
    append(paths["web-1"], "new 1\n")
    assert _next_within(lines) == "web-1 | new 1"
    append(paths["web-2"], "new 2\n")
    assert _next_within(lines) == "web-2 | new 2"
    started = time.monotonic()
    lines.close()  # the followers end with it
    assert time.monotonic() - started < 1.0
    assert not [t for t in threading.enumerate() if t.name.startswith("follow")]
