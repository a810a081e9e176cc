"""The Vault: the encrypted memory store of the other services (SPEC §7, §8).

Run as ``python -m hearthlink_trio.services.vault --host H --port P`` or as a script.
Needs ``HEARTHLINK_DATA_DIR``, ``HEARTHLINK_API_TOKEN`` and ``HEARTHLINK_VAULT_KEY``
(32 bytes, base64); keeps its data in ``$HEARTHLINK_DATA_DIR/vault/``:

- ``vault.db``: SQLite (WAL, ``synchronous=FULL``); each value sealed with AES-256-GCM
  under a fresh nonce, bound to its namespace, key and version.
- ``audit.jsonl``: one keyed-hash-chained line per request (see ``_vault_audit``).
- ``vault.lock``: held while the Vault runs, so a key rotation cannot run beside it.

A missing or malformed key, a key that does not match the data, or data that is in use by
another process is a start-up error: a message on stderr and exit status 78.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hearthlink_trio.services._base import serve

if TYPE_CHECKING:
    from fastapi import FastAPI

SERVICE = "vault"


def build() -> FastAPI:
    """The Vault app, its data opened and the key checked (ConfigurationError if not)."""
    # Imported here, after serve() has trimmed unused optional imports (RSS budget).
    from hearthlink_trio.services._vault_app import build_app

    return build_app()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the Vault until SIGTERM; 78 on a start-up (configuration) error."""
    # Everything the Vault creates (database, WAL, audit log) is owner-only.
    os.umask(0o077)
    return serve(SERVICE, build, argv)


if __name__ == "__main__":
    sys.exit(main())
