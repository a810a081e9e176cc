"""Secrets the supervisor hands to services: the API token and each declared secret.

A service declares ``secrets = { VAR = "file" }``. The value comes from the supervisor's
environment when ``VAR`` is set there; otherwise from ``<data_dir>/<file>``, generated once
(32 random bytes, standard padded base64, one line, mode 0600). The API token works the same
way with ``HEARTHLINK_API_TOKEN`` and ``<data_dir>/api.token``. A file that exists but is
malformed is an error and is never overwritten: it may be the only copy of a key that
opens a service's data.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hearthlink_trio._util import (
    NotReadableFile,
    ensure_private_dir,
    read_regular_file,
    write_private_file,
)
from hearthlink_trio.config import Config
from hearthlink_trio.config.resolved import TOKEN_FILE

TOKEN_VARIABLE = "HEARTHLINK_API_TOKEN"
#: A generated secret's size.
SECRET_BYTES = 32
#: The shortest API token accepted from its file.
MIN_TOKEN_CHARS = 16
#: Secret files are a line of text; anything much larger is not one.
MAX_SECRET_FILE_BYTES = 4096


@dataclass
class Secrets:
    """The values of a run's secrets, never logged or shown."""

    token: str
    #: Declared secrets: environment variable -> value.
    values: dict[str, str]
    #: The file of each declared secret that did not come from the environment.
    files: dict[str, Path] = field(default_factory=dict)

    def current(self, var: str) -> str:
        """The value of ``var`` now: its file is read again, since the service may have
        replaced it (the Vault adopting a rotated key, say). A file that has become
        unreadable or malformed leaves the last good value in use."""
        path = self.files.get(var)
        if path is not None:
            with contextlib.suppress(OSError, ValueError):
                self.values[var] = _check_secret(path, _read_line(path))
        return self.values[var]

    def redact(self, text: str) -> str:
        """``text`` with every secret value replaced by ``***``."""
        for secret in (self.token, *self.values.values()):
            if secret:
                text = text.replace(secret, "***")
        return text


def generate_secret() -> str:
    """A fresh secret: 32 random bytes in standard, padded base64."""
    import base64
    import secrets  # only when a secret is made: not on the way to the first services

    return base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _read_line(path: Path) -> str:
    try:
        data = read_regular_file(path, limit=MAX_SECRET_FILE_BYTES)
    except NotReadableFile as exc:
        raise ValueError(f"{path} is {exc}, not a secret file") from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not one line of text") from None
    if not text.strip():
        raise ValueError(f"{path} is empty; delete it to have a new one generated")
    lines = text.splitlines()
    if len(lines) != 1:
        raise ValueError(f"{path} must hold exactly one line")
    return lines[0].strip()


def _check_secret(path: Path, value: str) -> str:
    import base64  # only for a declared secret: most configs have none
    import binascii

    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != SECRET_BYTES:
        raise ValueError(
            f"{path} does not hold a secret (one line of standard base64 of {SECRET_BYTES} bytes)"
        )
    return value


def _check_token(path: Path, value: str) -> str:
    if len(value) < MIN_TOKEN_CHARS:
        raise ValueError(f"{path} holds a token shorter than {MIN_TOKEN_CHARS} characters")
    return value


def _new_token() -> str:
    import secrets  # only when a secret is made: not on the way to the first services

    return secrets.token_urlsafe(SECRET_BYTES)


def _from_file(path: Path, fresh: Callable[[], str], *, create: bool) -> str:
    if not os.path.lexists(path):
        if not create:
            return ""
        ensure_private_dir(path.parent)
        with contextlib.suppress(FileExistsError):  # another process made it first
            write_private_file(path, fresh() + "\n")
    return _read_line(path)


def load_secrets(
    config: Config, environ: Mapping[str, str] | None = None, *, create: bool
) -> Secrets:
    """The run's secrets; with ``create``, missing files are generated.

    Without ``create`` (``hearthlink check``) missing files are left missing and existing
    ones are validated all the same.

    Raises:
        ValueError: a secret file is unreadable or malformed (the message names it).
        OSError: the data dir or a file cannot be read or written.
    """
    environ = os.environ if environ is None else environ
    data_dir = config.data_dir
    token = environ.get(TOKEN_VARIABLE) or ""
    if not token:
        path = data_dir / TOKEN_FILE
        token = _from_file(path, _new_token, create=create)
        if token:
            _check_token(path, token)
    values: dict[str, str] = {}
    files: dict[str, Path] = {}
    for service in config.services:
        for var, filename in service.secrets.items():
            if var in values:
                continue
            if environ.get(var):
                values[var] = environ[var]
                continue
            path = data_dir / filename
            value = _from_file(path, generate_secret, create=create)
            if value:
                values[var] = _check_secret(path, value)
                files[var] = path
    return Secrets(token=token, values=values, files=files)
