"""Finding the supervisor a client command talks to, without the argument parser.

``status``, ``restart``, ``stop``, ``start``, ``wait``, ``logs``, ``ui`` and ``mcp`` all
start here. Kept apart from :mod:`hearthlink_trio.cli.app` so that the commands answered
before the argument parser is imported (``hearthlink status``) find the supervisor the
same way, by the same code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hearthlink_trio.config.lookup import config_paths
from hearthlink_trio.errors import HearthlinkError

if TYPE_CHECKING:
    from hearthlink_trio.config import Config
    from hearthlink_trio.config.locate import Location
    from hearthlink_trio.control.client import ControlClient

__all__ = ["locate_supervisor", "target"]


def locate_supervisor(config: list[Path] | None) -> tuple[Config | None, Location]:
    """The config (None if the file does not load) and where its supervisor lives.

    A file with errors still names the data dir of the supervisor that runs it (which
    loaded it before the edit): say so in one line and find the supervisor anyway.
    """
    from hearthlink_trio.config.cache import load_config_cached
    from hearthlink_trio.config.locate import Location, locate

    paths = config_paths(config)
    try:
        # From the cache while the file is as the running supervisor loaded it: no pydantic.
        cfg = load_config_cached(paths)
    except HearthlinkError:
        where = locate(paths)
        print(
            f"note: {', '.join(map(str, paths))} has errors (hearthlink check shows them); "
            f"using its data dir {where.data_dir}",
            file=sys.stderr,
        )
        return None, where
    return cfg, Location(cfg.data_dir, cfg.control_socket, cfg.log_dir)


def target(config: list[Path] | None) -> tuple[Config | None, ControlClient]:
    """The config (None if it does not load) and a client of its supervisor."""
    from hearthlink_trio.control.client import ControlClient

    cfg, where = locate_supervisor(config)
    return cfg, ControlClient(where.control_socket, data_dir=where.data_dir)
