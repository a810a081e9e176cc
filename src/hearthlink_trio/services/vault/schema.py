"""The Vault's database file: its schema, its key check and audit key, and opening it.

Durability: WAL journal with ``synchronous=FULL``, so a commit is on disk (the WAL is
fsynced) before the operation is acknowledged; it survives kill -9 and a power cut.
``secure_delete`` zeroes freed content, so a deleted or re-encrypted record leaves no old
ciphertext in free pages.

The database holds, sealed under the Vault key, a key check value (so a wrong key is
refused before anything is written) and the audit log's own key; a key rotation re-wraps
both (:func:`rewrap_keys`). Nothing here is written before the key is known to match.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import NamedTuple

from hearthlink_trio._util import fsync_dir, utc_now
from hearthlink_trio.services.vault.audit import AUDIT_FILE, EMPTY_ANCHOR, Anchor
from hearthlink_trio.services.vault.crypto import (
    AUDIT_KEY_AAD,
    KEY_CHECK_AAD,
    KEY_CHECK_PLAINTEXT,
    NONCE_BYTES,
    Cipher,
    IntegrityError,
)
from hearthlink_trio.services.vault.errors import KeyMismatchError, StoreError
from hearthlink_trio.services.vault.layout import DB_FILE

__all__ = [
    "AUDIT_KEY_BYTES",
    "BUSY_TIMEOUT_SECONDS",
    "SCHEMA_VERSION",
    "OpenDatabase",
    "open_database",
    "probe_key",
    "rewrap_keys",
]

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


class OpenDatabase(NamedTuple):
    """An opened Vault database and what opening it found."""

    conn: sqlite3.Connection
    cipher: Cipher  # the Vault key's
    audit_key: bytes  # the audit log's key, unwrapped
    anchor: Anchor  # the audit chain's head as last committed


def open_database(directory: Path, key: bytes) -> OpenDatabase:
    """Open (creating it on first use) the database in ``directory`` under ``key``.

    The caller holds the Vault lock. The key is checked read-only first, so a wrong one
    changes no file at all; an audit log left without its database is set aside, and the
    data files are made owner-only.

    Raises:
        KeyMismatchError: ``key`` is not the key this data was written with.
        StoreError: the database is unreadable, foreign or damaged.
    """
    path = directory / DB_FILE
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
            audit_key = _initialise_or_check(conn, cipher, path)
            anchor = _read_anchor(conn)
        except BaseException:
            conn.close()
            raise
    except sqlite3.Error as exc:
        raise StoreError(f"{path} cannot be used as a Vault database: {exc}") from exc
    return OpenDatabase(conn, cipher, audit_key, anchor)


def rewrap_keys(conn: sqlite3.Connection, old: Cipher, new: Cipher) -> None:
    """Seal the key check value and the audit key under ``new`` (inside the caller's
    transaction, with the records re-encrypted beside it)."""
    row = conn.execute("SELECT CAST(value AS BLOB) FROM meta WHERE name = 'audit_key'").fetchone()
    audit_key = _open_blob(old, row[0], AUDIT_KEY_AAD)
    conn.executemany(
        "UPDATE meta SET value = ? WHERE name = ?",
        [
            (_seal_blob(new, KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD), "key_check"),
            (_seal_blob(new, audit_key, AUDIT_KEY_AAD), "audit_key"),
        ],
    )


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
