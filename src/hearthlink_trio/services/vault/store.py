"""The Vault's store: AES-GCM sealed records in SQLite, each operation audited.

Every public operation runs in one transaction that also advances the audit anchor (the
head of the audit chain, kept in the database); the audit line goes to the file after the
commit (see :mod:`.audit`). Values never reach SQLite in plaintext; namespaces, keys,
versions and timestamps are stored as they are (they are names, not secrets).

The database file itself (schema, key check, opening) is :mod:`.schema`; the folder's
lock is :mod:`.lock`; the errors are :mod:`.errors` (all re-exported here).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hearthlink_trio._util import utc_now
from hearthlink_trio.services.vault.audit import AUDIT_FILE, Anchor, AuditLog, Verification
from hearthlink_trio.services.vault.crypto import Cipher, IntegrityError, record_aad
from hearthlink_trio.services.vault.errors import (
    KeyMismatchError,
    RecordIntegrityError,
    StoreError,
    VaultBusyError,
)
from hearthlink_trio.services.vault.lock import VaultLock
from hearthlink_trio.services.vault.schema import open_database, probe_key, rewrap_keys

__all__ = [
    "KeyMismatchError",
    "RecordInfo",
    "RecordIntegrityError",
    "StoreError",
    "VaultBusyError",
    "VaultLock",
    "VaultStore",
    "probe_key",
]

log = logging.getLogger("hearthlink.vault")


@dataclass(frozen=True)
class RecordInfo:
    namespace: str
    key: str
    version: int
    updated_at: str


class _Outcome:
    """What an operation reports to the audit log; the body of the operation sets it."""

    def __init__(self) -> None:
        self.value = "ok"
        self.reason: str | None = None

    def set(self, value: str, reason: str | None = None) -> None:
        self.value = value
        self.reason = reason


class VaultStore:
    """The open Vault: records, audit anchor and audit log, behind one lock."""

    def __init__(
        self,
        directory: Path,
        conn: sqlite3.Connection,
        cipher: Cipher,
        audit: AuditLog,
        anchor: Anchor,
        lock: VaultLock | None,
    ) -> None:
        self.directory = directory
        self._conn = conn
        self._cipher = cipher
        self._audit = audit
        self._anchor = anchor
        self._owned_lock = lock
        # One connection serves every request; this makes each operation (transaction plus
        # audit append) atomic with respect to the others whatever thread runs it.
        self._mutex = threading.Lock()

    @property
    def audit_seq(self) -> int:
        return self._anchor.seq

    @classmethod
    def open(
        cls,
        directory: Path,
        key: bytes,
        *,
        lock: VaultLock | None = None,
        release_lock: bool = False,
    ) -> VaultStore:
        """Open (creating it on first use) the Vault data in ``directory`` under ``key``.

        Takes the :class:`VaultLock` unless the caller passes the one it holds; a passed
        lock stays the caller's (released by it, also when this fails), unless
        ``release_lock``: then :meth:`close` releases it. Nothing is written before the
        key is known to match, so a wrong key changes nothing.

        Raises:
            KeyMismatchError: ``key`` is not the key this data was written with.
            VaultBusyError: another process holds the folder.
            StoreError: the database is unreadable, foreign or damaged.
        """
        owned = lock is None
        if lock is None:
            lock = VaultLock.acquire(directory, purpose="start the Vault")
        try:
            conn, cipher, audit_key, anchor = open_database(directory, key)
        except BaseException:
            if owned:
                lock.release()
            raise
        audit = AuditLog(directory / AUDIT_FILE, audit_key)
        store = cls(directory, conn, cipher, audit, anchor, lock if owned or release_lock else None)
        finding = audit.reconcile(anchor)
        if finding is not None:
            # Said in the log file too, so a repair after a crash is never silent.
            outcome, message = finding
            log.warning("audit log %s: %s", outcome, message)
            try:
                store.note("recover", None, None, outcome, message)
            except BaseException:
                store.close()
                raise
        return store

    def close(self) -> None:
        """Close the database (checkpointing the WAL) and release the Vault lock."""
        with self._mutex:
            self._audit.flush()
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            if self._owned_lock is not None:
                self._owned_lock.release()
                self._owned_lock = None

    @contextlib.contextmanager
    def _operation(
        self, op: str, namespace: str | None, key: str | None, *, begin: str = "IMMEDIATE"
    ) -> Iterator[_Outcome]:
        """One transaction holding the operation and its audit entry, then the append."""
        with self._mutex:
            conn = self._conn
            outcome = _Outcome()
            try:
                conn.execute(f"BEGIN {begin}")
                try:
                    yield outcome
                    anchor = self._audit.next_entry(
                        self._anchor,
                        op=op,
                        namespace=namespace,
                        key=key,
                        outcome=outcome.value,
                        reason=outcome.reason,
                    )
                    conn.execute(
                        "UPDATE audit_anchor SET seq = ?, hash = ?, line = ? WHERE id = 1",
                        (anchor.seq, anchor.hash, anchor.line),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"database operation failed: {exc}") from exc
            self._anchor = anchor
            if not self._audit.append(anchor.line):
                log.error("could not append audit entry %d; will retry", anchor.seq)

    def put(self, namespace: str, key: str, plaintext: bytes) -> RecordInfo:
        """Seal and store a value; its version is one more than the previous one's."""
        with self._operation("put", namespace, key):
            row = self._conn.execute(
                "SELECT version FROM records WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
            version = 1 if row is None else int(row[0]) + 1
            updated_at = utc_now()
            nonce, ciphertext = self._cipher.seal(plaintext, record_aad(namespace, key, version))
            self._conn.execute(
                "INSERT INTO records (namespace, key, version, updated_at, nonce, ciphertext)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, key) DO UPDATE SET"
                " version = excluded.version, updated_at = excluded.updated_at,"
                " nonce = excluded.nonce, ciphertext = excluded.ciphertext",
                (namespace, key, version, updated_at, nonce, ciphertext),
            )
        return RecordInfo(namespace, key, version, updated_at)

    def get(self, namespace: str, key: str) -> tuple[RecordInfo, bytes] | None:
        """The record and its plaintext, or None if absent.

        Raises:
            RecordIntegrityError: the ciphertext does not authenticate here (audited first).
        """
        result: tuple[RecordInfo, bytes] | None = None
        failed = False
        with self._operation("get", namespace, key) as outcome:
            row = self._conn.execute(
                "SELECT version, updated_at, CAST(nonce AS BLOB), CAST(ciphertext AS BLOB)"
                " FROM records"
                " WHERE namespace = ? AND key = ?",
                (namespace, key),
            ).fetchone()
            if row is None:
                outcome.set("not_found")
            else:
                version, updated_at, nonce, ciphertext = row
                try:
                    plaintext = self._cipher.open(
                        nonce, ciphertext, record_aad(namespace, key, version)
                    )
                except IntegrityError:
                    failed = True
                    outcome.set("integrity_error", "ciphertext failed authentication")
                else:
                    result = (RecordInfo(namespace, key, version, updated_at), plaintext)
        if failed:
            raise RecordIntegrityError(f"{namespace}/{key}")
        return result

    def delete(self, namespace: str, key: str) -> bool:
        """Remove a record; False if there was none."""
        with self._operation("delete", namespace, key) as outcome:
            cursor = self._conn.execute(
                "DELETE FROM records WHERE namespace = ? AND key = ?", (namespace, key)
            )
            found = cursor.rowcount > 0
            if not found:
                outcome.set("not_found")
        return found

    def list_namespace(self, namespace: str) -> list[RecordInfo]:
        """The records of a namespace (no values), by key."""
        with self._operation("list", namespace, None):
            rows = self._conn.execute(
                "SELECT key, version, updated_at FROM records WHERE namespace = ? ORDER BY key",
                (namespace,),
            ).fetchall()
        return [
            RecordInfo(namespace, key, version, updated_at) for key, version, updated_at in rows
        ]

    def note(
        self, op: str, namespace: str | None, key: str | None, outcome: str, reason: str
    ) -> None:
        """Audit a request that was refused before reaching the data."""
        with self._operation(op, namespace, key) as result:
            result.set(outcome, reason)

    def verify_audit(self) -> Verification:
        """Check the audit log against its chain and anchor; the check is audited too."""
        with self._operation("verify", None, None) as outcome:
            self._audit.flush()
            verdict = self._audit.verify(self._anchor)
            if not verdict.ok:
                outcome.set("failed", f"chain breaks at entry {verdict.first_bad_seq}")
        return verdict

    def rotate(self, new_key: bytes, *, checkpoint: Callable[[str], None]) -> int:
        """Re-encrypt every record, the key check value and the audit key under ``new_key``.

        One exclusive transaction: if it is interrupted, everything is still under the old
        key. ``checkpoint`` is called with the name of each step (a seam for crash tests).
        Returns the number of records re-encrypted.

        Raises:
            StoreError: a record fails authentication (nothing is changed; delete it or
                restore it first) or the database fails.
        """
        new_cipher = Cipher(new_key)
        count = 0
        with self._operation("rotate_key", None, None, begin="EXCLUSIVE"):
            conn = self._conn
            rowids = [row[0] for row in conn.execute("SELECT rowid FROM records ORDER BY rowid")]
            for rowid in rowids:
                namespace, key, version, nonce, ciphertext = conn.execute(
                    "SELECT namespace, key, version, CAST(nonce AS BLOB),"
                    " CAST(ciphertext AS BLOB) FROM records"
                    " WHERE rowid = ?",
                    (rowid,),
                ).fetchone()
                aad = record_aad(namespace, key, version)
                try:
                    plaintext = self._cipher.open(nonce, ciphertext, aad)
                except IntegrityError:
                    raise StoreError(
                        f"record {namespace}/{key} fails authentication, so it cannot be "
                        "re-encrypted; nothing was changed. Delete it (DELETE "
                        f"/v1/memories/{namespace}/{key}) and rotate again"
                    ) from None
                new_nonce, new_ciphertext = new_cipher.seal(plaintext, aad)
                conn.execute(
                    "UPDATE records SET nonce = ?, ciphertext = ? WHERE rowid = ?",
                    (new_nonce, new_ciphertext, rowid),
                )
                count += 1
                checkpoint(f"record:{count}")
            rewrap_keys(conn, self._cipher, new_cipher)
            checkpoint("before-commit")
        self._cipher = new_cipher
        # Fold the WAL (which holds the old ciphertexts' pages) into the database and
        # empty it, so nothing sealed under the retired key stays on disk.
        with self._mutex, contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return count
