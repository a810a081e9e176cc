"""Dotenv files (``env_file``), read with python-dotenv; a bad line is named by file and line."""

from __future__ import annotations

import io
from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from hearthlink_trio._util import NotReadableFile, read_text_file


class EnvFileError(ValueError):
    """A dotenv file is missing, unreadable or malformed (the message names file and line)."""


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of the dotenv file at ``path``; ``${VAR}`` refers to earlier ones.

    The file must be a regular file of at most 1 MiB in UTF-8 (a byte-order mark allowed).

    Raises:
        EnvFileError: the file cannot be read, or a line is not ``NAME=value``.
    """
    try:
        text = read_text_file(path)
    except FileNotFoundError:
        raise EnvFileError(f"{path}: file not found") from None
    except NotReadableFile as exc:
        raise EnvFileError(f"{path}: {exc}") from None
    except UnicodeDecodeError:
        raise EnvFileError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise EnvFileError(f"{path}: {exc.strerror or exc}") from None
    if "\0" in text:  # no environment variable can hold one: the spawn would fail
        number = text.count("\n", 0, text.index("\0")) + 1
        raise EnvFileError(f"{path}: line {number}: holds a NUL character")
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            line = binding.original.string.strip()
            raise EnvFileError(
                f"{path}: line {binding.original.line}: not NAME=value: {line[:60]!r}"
            )
    values = dotenv_values(stream=io.StringIO(text), interpolate=True)
    return {key: value or "" for key, value in values.items()}
