"""What every importer shares: reading the source file, the draft config, TOML out.

An importer fills a :class:`Draft`: the tables of a hearthlink config as plain values,
and for each thing that does not carry over one note (``services.x.key: why``). The draft
is written with tomlkit, the notes as ``# not imported:`` comment lines, and checked
against the config model before it is given back, so what is printed loads.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
import yaml
from pydantic import ValidationError
from tomlkit.items import InlineTable, Table

from hearthlink_trio import __version__
from hearthlink_trio._util import NotReadableFile, read_regular_file
from hearthlink_trio.config.model import PROFILE_RE, SERVICE_NAME_RE, ConfigFile
from hearthlink_trio.errors import ConfigError

#: The largest file an import reads: every tool's config is far smaller.
MAX_SOURCE_BYTES = 1024 * 1024
#: The most values a YAML file may expand to (aliases included), so that a file of a few
#: kilobytes whose anchors nest ("billion laughs") is refused instead of walked for hours.
MAX_YAML_NODES = 100_000

#: Characters that, unquoted, make a command line need a shell: pipes, lists,
#: redirections, subshells, globs, substitutions and variables.
_SHELL_CHARS = frozenset("|&;<>()`$*?[]~")
_PORT_VARIABLE = re.compile(r"\$(?:\{PORT\}|PORT\b)")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def read_text(path: Path) -> str:
    """The text of the source file.

    Raises:
        ConfigError: it is missing, unreadable, not a regular file (a FIFO is refused
            unread), too big, binary or not UTF-8.
    """
    try:
        data = read_regular_file(path, limit=MAX_SOURCE_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except NotReadableFile as exc:
        raise ConfigError(f"{path}: {exc}; not a config this import reads") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    if b"\0" in data:
        raise ConfigError(f"{path}: a binary file, not a config")
    try:
        # A byte-order mark, as some editors write, is no part of the text.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def _too_many_values(data: Any) -> bool:
    """``data`` holds more than :data:`MAX_YAML_NODES` values, aliases counted each time
    they are used (walked with a stack: no nesting depth can overflow it)."""
    budget = MAX_YAML_NODES
    stack = [data]
    while stack:
        value = stack.pop()
        budget -= 1
        if budget < 0:
            return True
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The source file as a YAML mapping (``yaml.safe_load``: no object is ever built).

    Raises:
        ConfigError: the file cannot be read, is not YAML, expands too far, or its top
            is not a mapping.
    """
    text = read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"{path}: {where}not valid YAML: {exc.problem or exc}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if _too_many_values(data):
        raise ConfigError(
            f"{path}: expands to more than {MAX_YAML_NODES} values (nested anchors?); "
            "not a config this import reads"
        )
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{path}: the top level must be a mapping (got {got})")
    return {str(key): value for key, value in data.items()}


def service_name(name: str) -> str:
    """A hearthlink table name for ``name``: lowercase, ``[a-z][a-z0-9_-]*``."""
    out = re.sub(r"[^a-z0-9_-]", "-", name.lower())
    if not out or not out[0].isalpha():
        out = "s" + out
    return out


def split_command(line: str) -> tuple[list[str], bool]:
    """The argv of a command line, and whether it needed a shell.

    A line with shell syntax (pipes, ``&&``, redirections, ``$VAR``, globs) runs as
    ``sh -c LINE``; a plain one is split as a shell would split it, so it runs directly
    and its stop signal reaches the program itself.
    """
    try:
        words = shlex.split(line)
    except ValueError:
        return ["sh", "-c", line], True
    if not words:
        return [], False
    if _needs_shell(line) or "=" in words[0]:
        return ["sh", "-c", line], True
    return words, False


def _needs_shell(line: str) -> bool:
    """``line`` has shell syntax outside quotes (``$`` and backquotes inside double ones)."""
    quote = ""
    escaped = False
    for ch in line:
        if escaped:
            escaped = False
        elif quote == "'":
            quote = "" if ch == "'" else quote
        elif ch == "\\":
            escaped = True
        elif quote == '"':
            if ch in "$`":
                return True
            quote = "" if ch == '"' else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _SHELL_CHARS:
            return True
    return False


def uses_port_variable(line: str) -> bool:
    """``line`` refers to ``$PORT`` (or ``${PORT}``)."""
    return _PORT_VARIABLE.search(line) is not None


def port_placeholder(line: str) -> str:
    """``line`` with ``$PORT`` written as hearthlink's ``{port}``."""
    return _PORT_VARIABLE.sub("{port}", line)


def parse_duration(value: Any) -> float | None:
    """Seconds of a compose-style duration (``1m30s``, ``100ms``, ``10``), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    total, at = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != at:
            return None
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        at = match.end()
    return total if at == len(text) and at > 0 else None


def signal_name(value: Any) -> str | None:
    """A signal's name (``SIGINT``) from a name or a number, or None when unknown."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return signal.Signals(value).name
        except ValueError:
            return None
    if isinstance(value, str):
        name = value.strip().upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        if isinstance(getattr(signal, name, None), signal.Signals):
            return name
    return None


def env_pairs(value: Any) -> tuple[dict[str, str | None], list[str]]:
    """An ``environment`` given as a mapping or as ``NAME=value`` lines.

    Returns:
        The variables (None: taken from the caller's environment, no value given) and
        the entries that are neither.
    """
    out: dict[str, str | None] = {}
    bad: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if item is None:
                out[str(key)] = None
            elif isinstance(item, str | int | float | bool):
                out[str(key)] = str(item).lower() if isinstance(item, bool) else str(item)
            else:
                bad.append(str(key))
    elif isinstance(value, list):
        for item in value:
            if not isinstance(item, str):
                bad.append(repr(item))
                continue
            key, sep, rest = item.partition("=")
            out[key] = rest if sep else None
    elif value is not None:
        bad.append(repr(value))
    return out, bad


def profile_names(draft: Draft, service: str, key: str, value: Any) -> list[str]:
    """The valid profile names of ``value`` (a list, or one name); the others are noted."""
    names = value if isinstance(value, list) else [value]
    out = []
    for name in names:
        if isinstance(name, str) and re.match(PROFILE_RE, name):
            out.append(name)
        else:
            draft.note(service, key, f"{name!r} is not a profile name (letters, digits, _ . -)")
    return out


def relative_to(path: Path, folder: Path) -> str:
    """``path`` as the config at ``folder`` should write it (relative when it can be)."""
    try:
        return os.path.relpath(path, folder)
    except ValueError:
        return str(path)


@dataclass
class Draft:
    """A hearthlink config being written: its tables, and what did not carry over."""

    source: Path
    tool: str
    supervisor: dict[str, Any] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    restart: dict[str, Any] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Per service table: (key, why); an empty key is about the service as a whole.
    notes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    #: Notes about the file as a whole.
    file_notes: list[str] = field(default_factory=list)
    #: Problems that make the whole import fail (exit 2).
    problems: list[str] = field(default_factory=list)

    def note(self, service: str, key: str, why: str) -> None:
        """Record that ``services.<service>.<key>`` is not imported, and why."""
        self.notes.setdefault(service, []).append((key, why))

    def note_lines(self, service: str) -> list[str]:
        """The notes of ``service`` as ``services.x.key: why`` lines."""
        return [
            f"services.{service}{'.' + key if key else ''}: {why}"
            for key, why in self.notes.get(service, [])
        ]

    def set_shared(self, table: str, key: str, value: Any, service: str, source_key: str) -> None:
        """Set ``[table] key`` for every service, once: a service asking another value gets
        a note (hearthlink has one value for all)."""
        section: dict[str, Any] = getattr(self, table)
        if key not in section:
            section[key] = value
        elif section[key] != value:
            self.note(
                service,
                source_key,
                f"{value!r} differs from the [{table}] {key} = {section[key]!r} already taken "
                "from another service (one value for every service)",
            )

    def problem(self, line: str) -> None:
        self.problems.append(f"{self.source}: {line}")


def _inline(value: dict[str, Any]) -> InlineTable:
    table = tomlkit.inline_table()
    for key, item in value.items():
        table[key] = _inline(item) if isinstance(item, dict) else item
    return table


def _comment_lines(text: str) -> list[str]:
    return text.splitlines() or [""]


def render(draft: Draft) -> str:
    """The draft as a config file, checked against the config model.

    Raises:
        ConfigError: nothing could be imported (every problem named), or the draft is
            not a valid config.
    """
    if not draft.services and not draft.problems:
        draft.problem("nothing to import: no service could be carried over")
        for name in draft.notes:
            for line in draft.note_lines(name):
                draft.problem(line)
    if draft.problems:
        raise ConfigError(draft.problems)
    doc = tomlkit.document()
    doc.add(
        tomlkit.comment(
            f"Imported by hearthlink {__version__} from {draft.source.name} with "
            f"`hearthlink import {draft.tool}`."
        )
    )
    doc.add(tomlkit.comment("Check it with `hearthlink check --config <this file>`."))
    for line in draft.file_notes:
        doc.add(tomlkit.comment(f"not imported: {line}"))
    # A service refused whole has no table to hold its note: it is named at the top.
    for name in draft.notes:
        if name not in draft.services:
            for line in draft.note_lines(name):
                doc.add(tomlkit.comment(f"not imported: {line}"))
    for name in ("supervisor", "health", "restart"):
        values: dict[str, Any] = getattr(draft, name)
        if values:
            section = tomlkit.table()
            for key, item in values.items():
                section[key] = item
            doc[name] = section
    services = tomlkit.table(is_super_table=True)
    for name, values in draft.services.items():
        table: Table = tomlkit.table()
        for line in draft.note_lines(name):
            table.add(tomlkit.comment(f"not imported: {line}"))
        for key, item in values.items():
            table[key] = _inline(item) if isinstance(item, dict) else item
        services[name] = table
    doc["services"] = services
    text = tomlkit.dumps(doc)
    try:
        ConfigFile.model_validate(tomllib.loads(text))
    except ValidationError as exc:
        raise ConfigError(
            [
                f"{draft.source}: the imported config would be invalid: "
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                for err in exc.errors()
            ]
        ) from None
    return text


def check_names(draft: Draft, names: dict[str, str]) -> bool:
    """Record a problem for each pair of source names that map to one table name."""
    seen: dict[str, str] = {}
    ok = True
    for source, name in names.items():
        if not SERVICE_NAME_RE.match(name):
            draft.problem(f"{source}: cannot be turned into a service name")
            ok = False
        elif name in seen:
            draft.problem(f"{source} and {seen[name]} would both be named {name!r}; rename one")
            ok = False
        seen[name] = source
    return ok
