"""The Vault's key: the key file the supervisor keeps, and key rotation.

A key is 32 random bytes written as base64 (44 characters), the form
``HEARTHLINK_VAULT_KEY`` takes, kept in ``<data_dir>/vault.key`` (mode 0600) when it
does not come from the environment (:func:`load_or_create_key`).

Rotation (:func:`rotate_key`, the ``hearthlink vault rotate-key`` command) re-encrypts
every record under a fresh key. It is crash-safe through this sequence:

1. the new key is written to ``vault.key.new`` (atomically, 0600, synced);
2. every record, the key check value and the wrapped audit key are re-encrypted in one
   exclusive SQLite transaction, committed with a sync;
3. ``vault.key.new`` replaces ``vault.key`` (an atomic rename, synced).

Killed before 2 commits, the data is under the old key (``vault.key``); killed after, it
is under the new key (``vault.key.new``). Either way one key file on disk opens it, and
the Vault, when it next starts with the key of ``vault.key``
(:func:`settle_interrupted_rotation`), or the next rotation finds out which by the
database's key check value, keeps that one as ``vault.key`` and removes the other.

This module imports nothing heavy at load time (the supervisor imports it); the database
and cipher modules are imported only when a rotation, or the repair of an interrupted
one, needs them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from hearthlink_trio._util import ensure_private_dir, fsync_dir, write_private_file
from hearthlink_trio.services.vault.layout import DB_FILE, KEY_FILE, NEW_KEY_FILE, VAULT_DIR

if TYPE_CHECKING:
    from hearthlink_trio.services.vault.lock import VaultLock

__all__ = [
    "KEY_BYTES",
    "KEY_FILE",
    "NEW_KEY_FILE",
    "decode_key",
    "generate_key",
    "load_or_create_key",
    "rotate_key",
    "settle_interrupted_rotation",
]

#: AES-256 key size.
KEY_BYTES = 32
#: A key file is 45 bytes; anything much larger is not one.
_MAX_KEY_FILE_BYTES = 1024


def _no_checkpoint(step: str) -> None:
    """The default rotation checkpoint: nothing to do."""


#: Test seam: called with the name of each step of :func:`rotate_key` ("opened",
#: "new-key-written", "record:<n>" after each re-encrypted record, "before-commit",
#: "committed", "done"), so a test can kill the process at a chosen point.
rotation_checkpoint: Callable[[str], None] = _no_checkpoint


def _checkpoint(step: str) -> None:
    rotation_checkpoint(step)


def decode_key(text: str, *, source: str) -> bytes:
    """The 32 key bytes of a base64 key (standard or URL-safe alphabet).

    Raises:
        ValueError: not base64, or not 32 bytes. The message names ``source`` and never
            shows the key.
    """
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(cleaned.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(
            f"{source} is not a valid Vault key: it is not base64. A key is {KEY_BYTES} "
            "random bytes in base64, e.g. the output of `openssl rand -base64 32`"
        ) from None
    if len(raw) != KEY_BYTES:
        raise ValueError(
            f"{source} is not a valid Vault key: it decodes to {len(raw)} bytes, not "
            f"{KEY_BYTES}. A key is {KEY_BYTES} random bytes in base64, e.g. the output of "
            "`openssl rand -base64 32`"
        )
    return raw


def generate_key() -> str:
    """A fresh random key, base64-encoded."""
    # os.urandom is the CSPRNG ``secrets`` uses, without its import of hashlib/OpenSSL.
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def load_or_create_key(data_dir: Path) -> str:
    """The key kept in ``<data_dir>/vault.key``, created on first use.

    A new key file is created 0600 from the start (never readable by others, even
    briefly) and appears atomically; ``data_dir`` is created 0700 if absent. A rotation
    interrupted with ``vault.key.new`` left behind is not looked into here: the Vault
    settles it when it starts with this key.

    Raises:
        ValueError: the key file is malformed or readable by other users; or the file is
            missing while encrypted data exists and no ``vault.key.new`` is there to open
            it (a new key could not read that data).
    """
    data_dir = Path(data_dir).expanduser()
    key_path = data_dir / KEY_FILE
    try:
        return _read_key_file(key_path)
    except FileNotFoundError:
        pass
    if _holds_data(data_dir) and not os.path.lexists(data_dir / NEW_KEY_FILE):
        raise ValueError(
            f"{key_path} is missing but {data_dir / VAULT_DIR} holds encrypted Vault data: "
            "restore the key file from your backup (or set HEARTHLINK_VAULT_KEY); a new "
            "key could not read that data"
        )
    ensure_private_dir(data_dir)
    key = generate_key()
    try:
        write_private_file(key_path, f"{key}\n")
    except FileExistsError:
        # Another process created it between our read and our write: theirs stands.
        return _read_key_file(key_path)
    return key


def settle_interrupted_rotation(data_dir: Path, key: str) -> str:
    """The key to open the Vault data with, an interrupted rotation settled first.

    When ``vault.key.new`` is left by a rotation and ``key`` is the one in ``vault.key``
    (the key file's key, as the supervisor passes it), whichever of the two keys opens the
    data, found by the database's key check value, is kept as ``vault.key``, the other is
    removed, and the kept one is returned. Otherwise ``key`` is returned and no file is
    touched: a key from elsewhere (the user's environment) is not second-guessed.

    The caller holds the Vault lock (:class:`~hearthlink_trio.services.vault.lock.VaultLock`).

    Raises:
        ValueError: a key file is malformed or readable by other users, or neither key
            opens the data (nothing is removed then).
    """
    data_dir = Path(data_dir).expanduser()
    if not os.path.lexists(data_dir / NEW_KEY_FILE):
        return key
    try:
        file_key = _read_key_file(data_dir / KEY_FILE)
    except FileNotFoundError:
        return key
    if file_key != key.strip():
        return key
    return _settle_rotation(data_dir)


def rotate_key(data_dir: Path, *, current_key: str | None = None) -> str:
    """Re-encrypt all Vault data in ``<data_dir>/vault/`` under a fresh key; return it.

    Args:
        data_dir: the Hearthlink data dir (``$HEARTHLINK_DATA_DIR``).
        current_key: the key the data is under, when it comes from the environment
            (``HEARTHLINK_VAULT_KEY``). Then ``vault.key`` is not touched: the caller must
            show the new key to the user, who puts it in the environment. For safety the
            new key is also left in ``<data_dir>/vault.key.new`` (0600), so a crash
            cannot lose it; tell the user to delete that file once the key is stored.
            ``None`` (the default): the key is ``vault.key``, which is replaced.

    The Vault must be stopped: rotation takes the Vault's folder lock and refuses to run
    while a Vault (or another rotation) holds it. The audit log gets a ``rotate_key``
    entry; its chain continues across the rotation.

    Raises:
        ValueError: the current key is malformed or does not match the data; there is no
            key to rotate; the Vault is running; or a record fails authentication (it
            names the record; nothing is changed).
    """
    from hearthlink_trio.services.vault.errors import KeyMismatchError, StoreError
    from hearthlink_trio.services.vault.store import VaultStore

    data_dir = Path(data_dir).expanduser()
    key_path = data_dir / KEY_FILE
    new_path = data_dir / NEW_KEY_FILE
    vault_dir = data_dir / VAULT_DIR
    with _lock(data_dir, purpose="rotate the Vault key") as lock:
        if current_key is not None:
            old_text = current_key.strip()
            source = "the current Vault key (HEARTHLINK_VAULT_KEY)"
        elif os.path.lexists(new_path):
            old_text = _settle_rotation(data_dir)
            source = str(key_path)
        else:
            try:
                old_text = _read_key_file(key_path)
            except FileNotFoundError:
                raise ValueError(
                    f"there is no Vault key at {key_path} to rotate (set "
                    "HEARTHLINK_VAULT_KEY if the key is kept in the environment)"
                ) from None
            source = str(key_path)
        old = decode_key(old_text, source=source)
        new_text = generate_key()
        new = decode_key(new_text, source="the new key")
        store = None
        if (vault_dir / DB_FILE).exists():
            try:
                store = VaultStore.open(vault_dir, old, lock=lock)
            except KeyMismatchError:
                raise ValueError(
                    f"{source} does not match the Vault data in {vault_dir / DB_FILE}; "
                    "nothing was changed"
                ) from None
            except StoreError as exc:
                raise ValueError(str(exc)) from None
        try:
            _checkpoint("opened")
            ensure_private_dir(data_dir)
            write_private_file(new_path, f"{new_text}\n", replace=True)
            _checkpoint("new-key-written")
            if store is not None:
                store.rotate(new, checkpoint=_checkpoint)
        except BaseException as exc:
            if store is not None:
                store.close()
            _discard_unused_key(vault_dir, new_path, new)
            if isinstance(exc, StoreError):
                raise ValueError(str(exc)) from None
            raise
        if store is not None:
            store.close()
        _checkpoint("committed")
        if current_key is None:
            os.replace(new_path, key_path)
            fsync_dir(data_dir)
        _checkpoint("done")
    return new_text


def _settle_rotation(data_dir: Path) -> str:
    """Keep whichever of ``vault.key`` / ``vault.key.new`` opens the data; return it.

    The caller holds the Vault lock.
    """
    from hearthlink_trio.services.vault.errors import StoreError
    from hearthlink_trio.services.vault.schema import probe_key

    key_path = data_dir / KEY_FILE
    new_path = data_dir / NEW_KEY_FILE
    vault_dir = data_dir / VAULT_DIR
    new_text = _read_key_file(new_path)
    try:
        old_text: str | None = _read_key_file(key_path)
    except FileNotFoundError:
        old_text = None
    try:
        new_matches = probe_key(vault_dir, decode_key(new_text, source=str(new_path)))
        old_matches = old_text is not None and bool(
            probe_key(vault_dir, decode_key(old_text, source=str(key_path)))
        )
    except StoreError as exc:
        raise ValueError(str(exc)) from None
    if new_matches or (new_matches is None and old_text is None):
        os.replace(new_path, key_path)
        fsync_dir(data_dir)
        return new_text
    if old_text is not None and (old_matches or new_matches is None):
        _remove(new_path)
        return old_text
    raise ValueError(
        f"neither {key_path} nor {new_path} matches the Vault data in {vault_dir}; nothing "
        "was changed. Restore the key the data was written with (or set "
        "HEARTHLINK_VAULT_KEY to it)"
    )


@contextlib.contextmanager
def _lock(data_dir: Path, *, purpose: str) -> Iterator[VaultLock]:
    """The Vault folder lock, with a busy folder reported as ``ValueError``."""
    from hearthlink_trio.services.vault.errors import VaultBusyError
    from hearthlink_trio.services.vault.lock import VaultLock

    try:
        lock = VaultLock.acquire(data_dir / VAULT_DIR, purpose=purpose)
    except VaultBusyError as exc:
        raise ValueError(str(exc)) from None
    try:
        yield lock
    finally:
        lock.release()


def _discard_unused_key(vault_dir: Path, new_path: Path, new: bytes) -> None:
    """After a failed rotation, remove the new key file unless the data is under it.

    The rotation may have failed after its commit (an interrupt during the WAL
    checkpoint, say); then the new key is the only one that opens the data and stays.
    """
    from hearthlink_trio.services.vault.schema import probe_key

    try:
        under_new = probe_key(vault_dir, new)
    except Exception:
        return
    if under_new is not True:
        _remove(new_path)


def _holds_data(data_dir: Path) -> bool:
    """Whether the Vault folder has an initialised database (one with a key check)."""
    db_path = data_dir / VAULT_DIR / DB_FILE
    if not db_path.exists():
        return False
    import sqlite3

    try:
        conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        # Unreadable as a database: treat as data, so no key is made up for it.
        return True
    return version != 0


def _read_key_file(path: Path) -> str:
    """The key in ``path``; FileNotFoundError if absent, ValueError if unusable."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if mode & 0o077:
            raise ValueError(
                f"{path} is accessible by other users (mode {mode & 0o777:o}); a key file "
                f"must be private: run `chmod 600 {path}`"
            )
        data = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise ValueError(f"{path} is not a Vault key file: it is larger than a key")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError(
            f"{path} is not a valid Vault key: it is not base64 text. A key is {KEY_BYTES} "
            "random bytes in base64, e.g. the output of `openssl rand -base64 32`"
        ) from None
    decode_key(text, source=str(path))
    return text


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
