"""Alden: the persona assistant, with its memories kept in the Vault.

Run as ``python -m hearthlink_trio.services.alden --host H --port P``.
"""

import sys

from hearthlink_trio.services.common.launcher import launch

if __name__ == "__main__":
    sys.exit(launch("alden", "hearthlink_trio.services.alden.app"))
