"""Run the Vault: ``python -m hearthlink_trio.services.vault --host H --port P``."""

import sys

from hearthlink_trio.services.common.launcher import launch

if __name__ == "__main__":
    # Everything the Vault creates (database, WAL, audit log) is owner-only.
    sys.exit(launch("vault", "hearthlink_trio.services.vault.app", umask=0o077))
