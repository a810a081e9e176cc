"""The Vault's audit log: one JSON line per operation, chained with keyed hashes.

Each line is ``{"seq", "ts", "op", "namespace", "key", "outcome", ["reason",] "prev_hash",
"hash"}``; never a value or a secret. ``hash`` is HMAC-SHA256 over the line's other fields
(canonical JSON) under the audit key, and ``prev_hash`` is the previous line's ``hash``,
so editing, removing or reordering a line breaks the chain. The audit key is random and
kept in the database wrapped (AES-GCM) under the Vault key: whoever can write the file
but does not hold the Vault key cannot forge a consistent chain, as they could with a
bare hash.

The latest ``seq``, ``hash`` and line are also stored in the database in the same
transaction as the operation (the *anchor*), so a removed tail is detected too. The line
is appended to the file after that commit and synced: a crash in between leaves the file
one line short, and :meth:`AuditLog.reconcile` writes that line from the anchor on the
next start.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from hearthlink_trio._util import fsync_dir, utc_now

#: ``prev_hash`` of the first entry.
GENESIS_HASH = "0" * 64
#: Name of the log file inside the Vault's data folder.
AUDIT_FILE = "audit.jsonl"
#: A line longer than this is not one the Vault wrote (ours are a few hundred bytes).
MAX_LINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Anchor:
    """The latest entry, as the database records it."""

    seq: int
    hash: str
    line: bytes


EMPTY_ANCHOR = Anchor(0, GENESIS_HASH, b"")


@dataclass(frozen=True)
class Verification:
    """Result of checking the whole file against the chain and the anchor."""

    ok: bool
    entries: int
    first_bad_seq: int | None


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class AuditLog:
    """Appends, checks and repairs ``audit.jsonl``; the caller serialises access."""

    def __init__(self, path: Path, mac_key: bytes) -> None:
        self.path = path
        self._mac_key = mac_key
        # Lines committed to the database whose append to the file failed (disk full, say);
        # written before the next line so the file keeps its order.
        self._unwritten: list[bytes] = []

    def _mac(self, fields: dict[str, Any]) -> str:
        return hmac.new(self._mac_key, _canonical(fields), hashlib.sha256).hexdigest()

    def next_entry(
        self,
        anchor: Anchor,
        *,
        op: str,
        namespace: str | None,
        key: str | None,
        outcome: str,
        reason: str | None = None,
    ) -> Anchor:
        """The entry following ``anchor``; store it with the operation, then :meth:`append`."""
        fields: dict[str, Any] = {
            "seq": anchor.seq + 1,
            "ts": utc_now(),
            "op": op,
            "namespace": namespace,
            "key": key,
            "outcome": outcome,
        }
        if reason is not None:
            fields["reason"] = reason
        fields["prev_hash"] = anchor.hash
        digest = self._mac(fields)
        fields["hash"] = digest
        line = json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
        return Anchor(anchor.seq + 1, digest, line)

    def append(self, line: bytes) -> bool:
        """Append ``line`` (after any earlier unwritten ones) and sync; False on I/O failure.

        The operation the line records is already committed, so a failure here is not the
        request's failure: the line is kept and written before the next one.
        """
        self._unwritten.append(line)
        return self.flush()

    def flush(self) -> bool:
        """Write the lines an earlier :meth:`append` could not; True when none are left."""
        if not self._unwritten:
            return True
        data = b"".join(self._unwritten)
        try:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(self.path, flags, 0o600)
        except OSError:
            return False
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fdatasync(fd)
            except OSError:
                # Take back a partial line so the retry does not leave a fragment behind.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                return False
        finally:
            os.close(fd)
        if size == 0:
            fsync_dir(self.path.parent)
        self._unwritten.clear()
        return True

    def verify(self, anchor: Anchor) -> Verification:
        """Check every line's place, link and keyed hash, and the end against ``anchor``.

        ``entries`` is the number of lines in the file; ``first_bad_seq`` the sequence
        number where the log stops being trustworthy: an altered or missing line, a line
        that does not belong, or the first entry of a removed tail.
        """
        expected = 1
        prev = GENESIS_HASH
        count = 0
        first_bad: int | None = None
        try:
            file = open(self.path, "rb")  # noqa: SIM115 - closed below, also when empty
        except FileNotFoundError:
            file = None
        if file is not None:
            with file:
                for raw in _lines(file):
                    count += 1
                    if first_bad is not None:
                        continue
                    digest = self._check_line(raw, expected, prev)
                    if digest is None:
                        first_bad = expected
                        continue
                    prev = digest
                    expected += 1
        if first_bad is None:
            if count < anchor.seq:
                first_bad = count + 1
            elif count > anchor.seq:
                first_bad = anchor.seq + 1
            elif prev != anchor.hash:
                first_bad = max(count, 1)
        return Verification(first_bad is None, count, first_bad)

    def _check_line(self, raw: bytes | None, seq: int, prev: str) -> str | None:
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict):
                return None
            claimed = entry.pop("hash", None)
            if not isinstance(claimed, str):
                return None
            if type(entry.get("seq")) is not int or entry["seq"] != seq:
                return None
            if entry.get("prev_hash") != prev:
                return None
            actual = self._mac(entry)
        except (ValueError, TypeError, RecursionError):
            return None
        if not hmac.compare_digest(actual.encode(), claimed.encode("utf-8", "replace")):
            return None
        return actual

    def reconcile(self, anchor: Anchor) -> tuple[str, str] | None:
        """Bring the file's end in line with ``anchor`` after a crash.

        Repairs only what a crash can cause: an unfinished last line (dropped) and the
        anchor's line missing because the process died between the commit and the append
        (written now). Anything else is left for :meth:`verify` to report.

        Returns:
            None if the file ended where the database says; else ``(outcome, message)``
            with outcome ``"repaired"`` or ``"inconsistent"``.
        """
        notes: list[str] = []
        tail = self._read_tail(notes)
        file_end = _parse_tail_entry(tail) if tail else (0, GENESIS_HASH)
        if file_end == (anchor.seq, anchor.hash):
            return ("repaired", "; ".join(notes)) if notes else None
        restorable = anchor.seq > 0 and file_end == (anchor.seq - 1, _prev_hash(anchor.line))
        if restorable and self.append(anchor.line):
            notes.append(
                f"restored entry {anchor.seq} from the database (the Vault stopped between "
                "committing an operation and logging it)"
            )
            return "repaired", "; ".join(notes)
        where = f"entry {file_end[0]}" if file_end is not None else "a line it cannot read"
        notes.append(
            f"the file ends at {where} but the database records entry {anchor.seq}; "
            "GET /v1/audit/verify reports where it breaks"
        )
        return "inconsistent", "; ".join(notes)

    def _read_tail(self, notes: list[str]) -> bytes:
        """The last complete line of the file (b"" if none); drops an unfinished one."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return b""
        try:
            size = os.fstat(fd).st_size
            start = max(0, size - 2 * MAX_LINE_BYTES)
            chunk = os.pread(fd, size - start, start)
            if chunk and not chunk.endswith(b"\n"):
                cut = chunk.rfind(b"\n") + 1
                if cut == 0 and start > 0:
                    return chunk  # one huge line: not ours; leave it for verify
                os.ftruncate(fd, start + cut)
                os.fsync(fd)
                notes.append(f"dropped {len(chunk) - cut} bytes of an unfinished audit line")
                chunk = chunk[:cut]
        finally:
            os.close(fd)
        if not chunk:
            return b""
        return chunk[chunk.rfind(b"\n", 0, len(chunk) - 1) + 1 :]


def _parse_tail_entry(line: bytes) -> tuple[int, str] | None:
    try:
        entry = json.loads(line)
        seq, digest = entry["seq"], entry["hash"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    if type(seq) is not int or not isinstance(digest, str):
        return None
    return seq, digest


def _prev_hash(line: bytes) -> str | None:
    try:
        value = json.loads(line)["prev_hash"]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


def _lines(file: BinaryIO) -> Iterator[bytes | None]:
    """The file's lines; ``None`` for one longer than :data:`MAX_LINE_BYTES`."""
    while True:
        line = file.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES:
            while line and not line.endswith(b"\n"):
                line = file.readline(MAX_LINE_BYTES)
            yield None
            continue
        yield line
