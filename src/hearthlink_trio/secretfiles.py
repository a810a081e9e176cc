"""Secrets kept in the data dir (SPEC §8): created once, owner-only, never logged."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

TOKEN_FILE = "api.token"


def write_private_file(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 atomically; it is never readable by others, even briefly.

    Raises:
        FileExistsError: ``path`` already exists (another process created it first).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if path exists: never overwrite a secret
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def api_token(data_dir: Path, environ: Mapping[str, str] | None = None) -> str:
    """``$HEARTHLINK_API_TOKEN``, else the token in ``<data_dir>/api.token`` (made once)."""
    environ = os.environ if environ is None else environ
    if environ.get("HEARTHLINK_API_TOKEN"):
        return environ["HEARTHLINK_API_TOKEN"]
    path = data_dir / TOKEN_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileExistsError):
            write_private_file(path, secrets.token_urlsafe(32) + "\n")
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"{path} is empty; delete it to have a new token generated")
    return token
