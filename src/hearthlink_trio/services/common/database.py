"""The services' SQLite helper, and how their blocking calls stay off the event loop.

SQLite with ``synchronous=FULL`` waits for an fsync on every commit. A route that called it
directly would stall the event loop, and with it every other request (``/health`` too),
for as long as the disk takes. So each store's blocking work runs in a worker thread
through :func:`run_blocking`, and each store keeps its own ``threading.Lock`` around its
one connection (opened with ``check_same_thread=False``), so that work from different
threads never interleaves on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import anyio.to_thread

from hearthlink_trio.services.common.settings import ConfigurationError

if TYPE_CHECKING:
    import sqlite3
    from pathlib import Path

P = ParamSpec("P")
T = TypeVar("T")


async def run_blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` in a worker thread; the event loop serves others meanwhile.

    The call is not abandoned when the request is cancelled (the client went away): a
    write that started is finished and its lock released, never left half done.
    """
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), abandon_on_cancel=False)


def open_database(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open (creating) a service's SQLite database in WAL mode.

    Writes go through ``with conn:`` (one transaction, committed or rolled back); every
    statement waits up to 5 s for a lock instead of failing at once. The connection may be
    used from any thread (never by two at once: its owner holds a lock around each use).

    Raises:
        ConfigurationError: the file cannot be opened as a database (exit 78).
    """
    # Imported here: a service without a database (Alden) saves the library's ~1 MiB.
    import sqlite3

    try:
        conn = sqlite3.connect(path, timeout=5.0, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        raise ConfigurationError(f"cannot open database {path}: {exc}") from exc
    return conn
