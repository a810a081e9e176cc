"""The Vault: the encrypted memory store of the other services.

Run as ``python -m hearthlink_trio.services.vault --host H --port P``. Needs
``HEARTHLINK_DATA_DIR``, ``HEARTHLINK_API_TOKEN`` and ``HEARTHLINK_VAULT_KEY`` (32 bytes,
base64); keeps its data in ``$HEARTHLINK_DATA_DIR/vault/``:

- ``vault.db``: SQLite (WAL, ``synchronous=FULL``); each value sealed with AES-256-GCM
  under a fresh nonce, bound to its namespace, key and version (:mod:`.store`,
  :mod:`.schema`, :mod:`.crypto`).
- ``audit.jsonl``: one keyed-hash-chained line per request (:mod:`.audit`).
- ``vault.lock``: held while the Vault runs, so a key rotation cannot run beside it
  (:mod:`.lock`).

The key files beside that folder, ``vault.key`` and, after an interrupted rotation,
``vault.key.new``, belong to :mod:`.keys`; the Vault settles such a rotation itself when it
starts. A missing or malformed key, a key that does not match the data, or data that is in
use by another process is a start-up error: a message on stderr and exit status 78.

This package imports nothing heavy: the supervisor and the command line import
:mod:`.keys`.
"""
