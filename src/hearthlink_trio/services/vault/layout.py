"""The names of the Vault's files, in one place (and importing nothing).

``<data_dir>/vault.key`` (and, after an interrupted rotation, ``vault.key.new``) beside
the Vault's folder ``<data_dir>/vault/``, which holds the database and its lock.
"""

from __future__ import annotations

#: The Vault's own folder inside the data dir (``$HEARTHLINK_DATA_DIR/vault/``).
VAULT_DIR = "vault"
#: The SQLite database, in the Vault's folder.
DB_FILE = "vault.db"
#: Held (``flock``) by the running Vault and by a key rotation, in the Vault's folder.
LOCK_FILE = "vault.lock"
#: The key file, in the data dir.
KEY_FILE = "vault.key"
#: The new key of a rotation until it replaces ``vault.key``, in the data dir.
NEW_KEY_FILE = "vault.key.new"
