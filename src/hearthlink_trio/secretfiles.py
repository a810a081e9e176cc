"""Secrets kept in the data dir (SPEC §8): created once, owner-only, never logged."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from hearthlink_trio._util import ensure_private_dir, write_private_file

TOKEN_FILE = "api.token"


def api_token(data_dir: Path, environ: Mapping[str, str] | None = None) -> str:
    """``$HEARTHLINK_API_TOKEN``, else the token in ``<data_dir>/api.token`` (made once)."""
    environ = os.environ if environ is None else environ
    if environ.get("HEARTHLINK_API_TOKEN"):
        return environ["HEARTHLINK_API_TOKEN"]
    path = data_dir / TOKEN_FILE
    if not path.exists():
        ensure_private_dir(data_dir)
        with contextlib.suppress(FileExistsError):
            write_private_file(path, secrets.token_urlsafe(32) + "\n")
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"{path} is empty; delete it to have a new token generated")
    return token
