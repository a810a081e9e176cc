"""The Vault's storage errors, one tree: :class:`StoreError` and what it can be."""

from __future__ import annotations

__all__ = ["KeyMismatchError", "RecordIntegrityError", "StoreError", "VaultBusyError"]


class StoreError(Exception):
    """The Vault's data cannot be used; the message says why and what to do."""


class KeyMismatchError(StoreError):
    """The key does not decrypt the database's key check value."""


class VaultBusyError(StoreError):
    """Another process (a running Vault or a key rotation) holds the Vault folder."""


class RecordIntegrityError(Exception):
    """A record failed authentication (moved or altered ciphertext); it is not returned."""
