"""Core (SPEC §7): sessions and multi-agent coordination, persisted in SQLite.

Run as ``python -m hearthlink_trio.services.core --port 8000`` or as a script path.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hearthlink_trio.services._base import serve

if TYPE_CHECKING:
    from fastapi import FastAPI


def build() -> FastAPI:
    # Imported here, after serve() has trimmed unused optional imports (RSS budget).
    from hearthlink_trio.services._core_app import build_app

    return build_app()


def main(argv: Sequence[str] | None = None) -> int:
    return serve("core", build, argv)


if __name__ == "__main__":
    sys.exit(main())
