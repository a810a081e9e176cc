"""Small helpers shared by the supervisor and the services, with no heavy imports."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path


def utc_now() -> str:
    """The current time as ISO 8601 UTC with millisecond precision and a ``Z`` suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (fsync the directory itself)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
