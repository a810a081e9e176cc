"""Reading a config file's TOML, whatever the file holds.

A config file is a regular file of at most 1 MiB in UTF-8 (a byte-order mark allowed), and
its TOML is refused before parsing where the parser would take long (a key of thousands of
dotted parts) and caught where it would fail in Python's own limits (nesting too deep, an
integer too long). Light (no pydantic), so the config cache uses it too.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

from hearthlink_trio._util import NotReadableFile, read_text_file
from hearthlink_trio.errors import ConfigError

__all__ = ["MAX_KEY_PARTS", "read_toml"]

#: The most parts a dotted key may have (``a.b.c`` has 3): tomllib takes time quadratic in
#: it, and a real config never nests more than a few tables deep.
MAX_KEY_PARTS = 64
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
#: A key (at a line's start, in a table header or an inline table) of too many parts.
_DEEP_KEY = re.compile(
    rf"(?:^|[{{,\[])[ \t]*(?:{_KEY_PART}[ \t]*\.[ \t]*){{{MAX_KEY_PARTS},}}", re.MULTILINE
)
#: Python refuses to convert longer digit strings to integers.
MAX_DIGITS = sys.get_int_max_str_digits() or 4300
_LONG_NUMBER = re.compile(rf"[0-9_]{{{MAX_DIGITS + 1},}}")


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def read_toml(path: Path, label: str | None = None) -> dict[str, Any]:
    """The TOML of the config file at ``path``: a regular file of at most 1 MiB, in UTF-8
    (a byte-order mark allowed); every other input is refused with one line saying why.

    Raises:
        ConfigError: the file cannot be read or is not TOML hearthlink can take.
    """
    label = label or path.name
    try:
        text = read_text_file(path)
    except FileNotFoundError:
        raise ConfigError([f"{path}: cannot read config: file not found"]) from None
    except NotReadableFile as exc:
        raise ConfigError([f"{path}: cannot read config: {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{label}: not valid UTF-8"]) from None
    deep = _DEEP_KEY.search(text)
    if deep is not None:
        line = _line_of(text, deep.start())
        raise ConfigError([f"{label}: line {line}: a key of more than {MAX_KEY_PARTS} parts"])
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: TOML syntax error: {exc}"]) from None
    except RecursionError:
        raise ConfigError(
            [f"{label}: TOML nesting too deep (arrays or inline tables inside each other)"]
        ) from None
    except ValueError as exc:  # an integer too long for Python to convert
        number = _LONG_NUMBER.search(text)
        if number is None:
            raise ConfigError([f"{label}: TOML value refused: {exc}"]) from None
        line = _line_of(text, number.start())
        raise ConfigError(
            [f"{label}: line {line}: an integer of more than {MAX_DIGITS} digits"]
        ) from None
