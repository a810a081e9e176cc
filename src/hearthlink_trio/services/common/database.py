"""The services' SQLite helper."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hearthlink_trio.services.common.settings import ConfigurationError

if TYPE_CHECKING:
    import sqlite3
    from pathlib import Path


def open_database(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open (creating) a service's SQLite database in WAL mode.

    Writes go through ``with conn:`` (one transaction, committed or rolled back); every
    statement waits up to 5 s for a lock instead of failing at once.

    Raises:
        ConfigurationError: the file cannot be opened as a database (exit 78).
    """
    # Imported here: a service without a database (Alden) saves the library's ~1 MiB.
    import sqlite3

    try:
        conn = sqlite3.connect(path, timeout=5.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        raise ConfigurationError(f"cannot open database {path}: {exc}") from exc
    return conn
