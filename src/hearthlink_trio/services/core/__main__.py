"""Core: sessions and multi-agent coordination, persisted in SQLite.

Run as ``python -m hearthlink_trio.services.core --host H --port P``.
"""

import sys

from hearthlink_trio.services.common.launcher import launch

if __name__ == "__main__":
    sys.exit(launch("core", "hearthlink_trio.services.core.app"))
