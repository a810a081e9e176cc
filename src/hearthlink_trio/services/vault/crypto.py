"""Authenticated encryption of Vault records: AES-256-GCM with bound associated data.

Every sealed value gets a fresh 96-bit random nonce. The associated data names what the
ciphertext belongs to (a record's namespace, key and version; the key check value; the
wrapped audit key), so a ciphertext copied to another place fails to authenticate instead
of decrypting to someone else's value.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: Bytes of a random GCM nonce (96 bits, the size GCM is designed for).
NONCE_BYTES = 12
#: The plaintext of the key check value; what matters is that it authenticates.
KEY_CHECK_PLAINTEXT = b"hearthlink-vault key check v1"
#: Associated data of the key check value and of the wrapped audit key.
KEY_CHECK_AAD = b"hearthlink-vault/v1\x00key-check"
AUDIT_KEY_AAD = b"hearthlink-vault/v1\x00audit-key"


class IntegrityError(Exception):
    """A ciphertext failed authentication: altered, moved, or sealed under another key."""


def record_aad(namespace: str, key: str, version: int) -> bytes:
    """The associated data binding a record's ciphertext to its place and version.

    Names cannot hold NUL (the name pattern), so the NUL-separated form is unambiguous.
    """
    return f"hearthlink-vault/v1\x00record\x00{namespace}\x00{key}\x00{version}".encode()


class Cipher:
    """AES-256-GCM under one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """Encrypt ``plaintext`` under a fresh random nonce; returns ``(nonce, ciphertext)``."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce, self._aead.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Decrypt and authenticate; raises :class:`IntegrityError` if anything is off."""
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except (InvalidTag, ValueError, TypeError) as exc:
            # ValueError/TypeError: a nonce of the wrong size or a non-bytes column, which
            # only a damaged or edited database holds. Same verdict as a failed tag.
            raise IntegrityError("ciphertext failed authentication") from exc
