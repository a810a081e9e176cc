"""Synapse: the plugin gateway, with a registry persisted in SQLite.

Run as ``python -m hearthlink_trio.services.synapse --host H --port P``.
"""

import sys

from hearthlink_trio.services.common.launcher import launch

if __name__ == "__main__":
    sys.exit(launch("synapse", "hearthlink_trio.services.synapse.app"))
