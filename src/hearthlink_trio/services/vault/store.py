"""The Vault's storage: AES-GCM sealed records in SQLite, with the audit anchor.

Durability: WAL journal with ``synchronous=FULL``, so a commit is on disk (the WAL is
fsynced) before the operation is acknowledged; it survives kill -9 and a power cut.
``secure_delete`` zeroes freed content, so a deleted or re-encrypted record leaves no old
ciphertext in free pages. Values never reach SQLite in plaintext; namespaces, keys,
versions and timestamps are stored as they are (they are names, not secrets).

One process at a time owns a Vault folder: the :class:`VaultLock` (``flock`` on
``vault.lock``) is held by the running Vault and by a key rotation, so a rotation cannot
re-key data under a running Vault that still holds the old key.

Every public operation runs in one transaction that also advances the audit anchor; the
audit line goes to the file after the commit (see :mod:`.audit`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hearthlink_trio import lockfile
from hearthlink_trio._util import fsync_dir, utc_now
from hearthlink_trio.lockfile import LockFile, LockHeld
from hearthlink_trio.services.vault.audit import (
    AUDIT_FILE,
    EMPTY_ANCHOR,
    Anchor,
    AuditLog,
    Verification,
)
from hearthlink_trio.services.vault.crypto import (
    AUDIT_KEY_AAD,
    KEY_CHECK_AAD,
    KEY_CHECK_PLAINTEXT,
    NONCE_BYTES,
    Cipher,
    IntegrityError,
    record_aad,
)
from hearthlink_trio.services.vault.layout import DB_FILE, LOCK_FILE

#: ``PRAGMA user_version`` of the schema below; 0 means "not initialised yet".
SCHEMA_VERSION = 1
#: How long a statement waits for a lock held by another connection (only a reader
#: probing the file can hold one; the Vault lock keeps writers out).
BUSY_TIMEOUT_SECONDS = 5.0
AUDIT_KEY_BYTES = 32

_SCHEMA = """
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE records (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE audit_anchor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    line BLOB NOT NULL
);
"""

log = logging.getLogger("hearthlink.vault")


class StoreError(Exception):
    """The Vault's data cannot be used; the message says why and what to do."""


class KeyMismatchError(StoreError):
    """The key does not decrypt the database's key check value."""


class VaultBusyError(StoreError):
    """Another process (a running Vault or a key rotation) holds the Vault folder."""


class RecordIntegrityError(Exception):
    """A record failed authentication (moved or altered ciphertext); it is not returned."""


@dataclass(frozen=True)
class RecordInfo:
    namespace: str
    key: str
    version: int
    updated_at: str


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
        lock = cls.acquire(directory, purpose=purpose)
        try:
            yield lock
        finally:
            lock.release()

    def release(self) -> None:
        self._lock.release()


def _seal_blob(cipher: Cipher, plaintext: bytes, aad: bytes) -> bytes:
    nonce, ciphertext = cipher.seal(plaintext, aad)
    return nonce + ciphertext


def _open_blob(cipher: Cipher, blob: object, aad: bytes) -> bytes:
    if not isinstance(blob, bytes):
        raise IntegrityError("not a sealed value")
    return cipher.open(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)


def _private_file(path: Path) -> None:
    """Create ``path`` owner-only if absent; take group/other access away if present."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode
        if mode & 0o077:
            log.warning("%s was accessible by other users; made it owner-only", path)
            path.chmod(0o600)
        return
    os.close(fd)
    fsync_dir(path.parent)


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _connect(path: Path) -> sqlite3.Connection:
    """A connection to an existing database file, without changing anything in it."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS
    )
    # Sealed values are read with CAST(... AS BLOB) and text decoded leniently, so a column
    # an intruder changed to another type or to invalid UTF-8 reads as a failed
    # authentication or a harmless odd name, never as an exception.
    conn.text_factory = _lenient_text
    try:
        conn.execute("PRAGMA trusted_schema=OFF")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA synchronous=FULL")
    except BaseException:
        conn.close()
        raise
    return conn


def probe_key(directory: Path, key: bytes) -> bool | None:
    """Whether ``key`` opens the Vault data in ``directory``; None when there is none.

    Reads through a read-only connection, which never checkpoints the WAL nor writes the
    database: a wrong key leaves the data files exactly as they were.

    Raises:
        StoreError: the file is not a readable Vault database.
    """
    path = directory / DB_FILE
    if not path.exists() or path.stat().st_size == 0:
        return None
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_SECONDS
        )
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                return None
            row = conn.execute(
                "SELECT CAST(value AS BLOB) FROM meta WHERE name = 'key_check'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{path} cannot be read as a Vault database: {exc}") from exc
    if row is None:
        raise StoreError(f"{path} lacks its key check value; refusing to guess a key for it")
    try:
        return _open_blob(Cipher(key), row[0], KEY_CHECK_AAD) == KEY_CHECK_PLAINTEXT
    except IntegrityError:
        return False


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
            path = directory / DB_FILE
            # The key is checked read-only first, so a wrong one changes no file at all.
            verdict = probe_key(directory, key)
            if verdict is False:
                raise KeyMismatchError(f"the key does not match the data in {path}")
            if verdict is None:
                _set_aside_orphaned_audit(directory)
            for name in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm", AUDIT_FILE):
                if name == DB_FILE or (directory / name).exists():
                    _private_file(directory / name)
            cipher = Cipher(key)
            try:
                conn = _connect(path)
                try:
                    mac_key = _initialise_or_check(conn, cipher, path)
                    anchor = _read_anchor(conn)
                except BaseException:
                    conn.close()
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"{path} cannot be used as a Vault database: {exc}") from exc
        except BaseException:
            if owned:
                lock.release()
            raise
        audit = AuditLog(directory / AUDIT_FILE, mac_key)
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
            mac_key = _open_blob(
                self._cipher,
                conn.execute(
                    "SELECT CAST(value AS BLOB) FROM meta WHERE name = 'audit_key'"
                ).fetchone()[0],
                AUDIT_KEY_AAD,
            )
            conn.executemany(
                "UPDATE meta SET value = ? WHERE name = ?",
                [
                    (_seal_blob(new_cipher, KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD), "key_check"),
                    (_seal_blob(new_cipher, mac_key, AUDIT_KEY_AAD), "audit_key"),
                ],
            )
            checkpoint("before-commit")
        self._cipher = new_cipher
        # Fold the WAL (which holds the old ciphertexts' pages) into the database and
        # empty it, so nothing sealed under the retired key stays on disk.
        with self._mutex, contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return count


def _set_aside_orphaned_audit(directory: Path) -> None:
    """Move away an audit log left without its database (a new one is about to begin).

    Its chain is anchored in a database that is gone, so appending to it would make the
    new log fail verification from its first line.
    """
    audit = directory / AUDIT_FILE
    if not audit.exists() or audit.stat().st_size == 0:
        return
    stamp = utc_now().replace(":", "").replace("-", "")
    aside = directory / f"{AUDIT_FILE}.orphaned-{stamp}"
    os.replace(audit, aside)
    fsync_dir(directory)
    log.warning("a new database begins; the audit log of the old one was moved to %s", aside)


def _initialise_or_check(conn: sqlite3.Connection, cipher: Cipher, path: Path) -> bytes:
    """Create the schema on first use, else check the key; returns the audit key."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
        # A new database: WAL from the start. (An existing one is only written to once
        # the key is known to match, below.)
        _use_wal(conn, path)
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                if conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
                    raise StoreError(
                        f"{path} holds tables but is not an initialised Vault database; "
                        "refusing to touch it"
                    )
                _create(conn, cipher)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}; this Vault understands {SCHEMA_VERSION}"
        )
    meta = dict(conn.execute("SELECT name, CAST(value AS BLOB) FROM meta").fetchall())
    if "key_check" not in meta or "audit_key" not in meta:
        raise StoreError(f"{path} lacks its key check value; refusing to guess a key for it")
    try:
        matches = _open_blob(cipher, meta["key_check"], KEY_CHECK_AAD) == KEY_CHECK_PLAINTEXT
    except IntegrityError:
        matches = False
    if not matches:
        raise KeyMismatchError(f"the key does not match the data in {path}")
    try:
        mac_key = _open_blob(cipher, meta["audit_key"], AUDIT_KEY_AAD)
    except IntegrityError:
        raise StoreError(
            f"{path}: the key matches but the wrapped audit key fails authentication; "
            "the database was altered"
        ) from None
    _use_wal(conn, path)
    return mac_key


def _use_wal(conn: sqlite3.Connection, path: Path) -> None:
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"{path}: SQLite refused WAL mode (got {mode!r})")


def _create(conn: sqlite3.Connection, cipher: Cipher) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.executemany(
        "INSERT INTO meta (name, value) VALUES (?, ?)",
        [
            ("key_check", _seal_blob(cipher, KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD)),
            ("audit_key", _seal_blob(cipher, os.urandom(AUDIT_KEY_BYTES), AUDIT_KEY_AAD)),
        ],
    )
    conn.execute(
        "INSERT INTO audit_anchor (id, seq, hash, line) VALUES (1, ?, ?, ?)",
        (EMPTY_ANCHOR.seq, EMPTY_ANCHOR.hash, EMPTY_ANCHOR.line),
    )
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _read_anchor(conn: sqlite3.Connection) -> Anchor:
    row = conn.execute(
        "SELECT seq, hash, CAST(line AS BLOB) FROM audit_anchor WHERE id = 1"
    ).fetchone()
    if row is None:
        raise StoreError("the database lacks its audit anchor; it was altered")
    seq, digest, line = row
    if not (type(seq) is int and isinstance(digest, str) and isinstance(line, bytes)):
        raise StoreError("the database's audit anchor is malformed; it was altered")
    return Anchor(seq, digest, line)
