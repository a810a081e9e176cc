"""Several config files read as one: a base file, the override file beside it, and any
further ``--config`` files, each merged onto what came before.

Tables merge key by key, recursively; every other value (a string, a number, an array)
is replaced whole. Each key remembers the file that set it last, so that a problem found
in the merged result names the file the user must edit.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearthlink_trio.config.lookup import OVERRIDE_NAME, effective_files
from hearthlink_trio.config.tomlfile import read_toml

__all__ = [
    "OVERRIDE_NAME",
    "Merged",
    "drop_disabled",
    "effective_files",
    "merge_files",
    "read_merged",
]


@dataclass
class Merged:
    """The merged tables, and for each key the label of the file that set it last."""

    raw: dict[str, Any]
    files: tuple[Path, ...]
    labels: tuple[str, ...]
    origin: dict[tuple[str, ...], str] = field(default_factory=dict)

    @property
    def base_label(self) -> str:
        return self.labels[0]

    def label_for(self, keys: Sequence[str]) -> str:
        """The file that set ``keys`` (a dotted key, split), or the nearest table holding
        it; the base file for what no file set (a missing key, a default)."""
        parts = tuple(keys)
        while parts:
            if parts in self.origin:
                return self.origin[parts]
            parts = parts[:-1]
        return self.base_label

    def relabel(self, line: str) -> str:
        """A problem line ``<base file>: <dotted.key>: <problem>`` with its file replaced by
        the one that set the key."""
        prefix = f"{self.base_label}: "
        if len(self.labels) == 1 or not line.startswith(prefix):
            return line
        dotted, sep, rest = line[len(prefix) :].partition(": ")
        if not sep:
            return line
        return f"{self.label_for(dotted.split('.'))}: {dotted}: {rest}"


def _labels(files: Sequence[Path]) -> tuple[str, ...]:
    # A file's name is enough unless two merged files share it (say a folder's
    # hearthlink.toml over another's): then the path as given tells them apart.
    names = [path.name for path in files]
    return tuple(
        name if names.count(name) == 1 else str(path)
        for name, path in zip(names, files, strict=True)
    )


def _read(path: Path, label: str) -> dict[str, Any]:
    return read_toml(path, label)


def merge_files(tables: Sequence[tuple[str, Mapping[str, Any]]]) -> Merged:
    """Merge already-parsed files (label, tables) in order; see the module's rules."""
    merged = Merged(raw={}, files=(), labels=tuple(label for label, _ in tables))
    for label, top in tables:
        _merge_into(merged.raw, top, label, (), merged.origin)
    return merged


def _merge_into(
    into: dict[str, Any],
    top: Mapping[str, Any],
    label: str,
    prefix: tuple[str, ...],
    origin: dict[tuple[str, ...], str],
) -> None:
    for key, value in top.items():
        path = (*prefix, key)
        origin[path] = label
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge_into(into[key], value, label, path, origin)
        else:
            _unmark(into.get(key), path, origin)
            into[key] = copy.deepcopy(value)
            _mark(value, label, path, origin)


def _unmark(old: Any, prefix: tuple[str, ...], origin: dict[tuple[str, ...], str]) -> None:
    """Forget who set the keys under a table that is being replaced whole (an earlier file
    set them). Walks the old table itself, so merging costs what the files hold, not that
    times every key seen."""
    if isinstance(old, dict):
        for key, inner in old.items():
            origin.pop((*prefix, key), None)
            _unmark(inner, (*prefix, key), origin)


def _mark(
    value: Any, label: str, prefix: tuple[str, ...], origin: dict[tuple[str, ...], str]
) -> None:
    """Every key under a table replaced whole comes from ``label``."""
    if isinstance(value, dict):
        for key, inner in value.items():
            origin[(*prefix, key)] = label
            _mark(inner, label, (*prefix, key), origin)


def read_merged(paths: Path | Sequence[Path]) -> Merged:
    """Read and merge the files of :func:`effective_files` (``paths``).

    Raises:
        ConfigError: a file cannot be read or is not TOML (one line, naming it).
    """
    files = effective_files(paths)
    labels = _labels(files)
    tables = [(label, _read(path, label)) for path, label in zip(files, labels, strict=True)]
    merged = merge_files(tables)
    merged.files = files
    return merged


def drop_disabled(merged: Merged) -> list[str]:
    """Remove every service table whose ``enabled`` is false; returns one problem line per
    dependency on a removed service (naming the file of each side), and takes that
    dependency out so that it is not reported a second time as unknown."""
    services = merged.raw.get("services")
    if not isinstance(services, dict):
        return []
    disabled = {
        name: merged.label_for(("services", name, "enabled"))
        for name, table in services.items()
        if isinstance(table, dict) and table.get("enabled") is False
    }
    for name in disabled:
        del services[name]
    problems = []
    for name, table in services.items():
        deps = table.get("depends_on") if isinstance(table, dict) else None
        if not isinstance(deps, list | dict):
            continue
        for dep in [dep for dep in deps if isinstance(dep, str) and dep in disabled]:
            at = merged.label_for(("services", name, "depends_on", dep))
            problems.append(
                f"{at}: services.{name}.depends_on: depends on {dep}, which "
                f"{disabled[dep]} disables (services.{dep}.enabled = false)"
            )
            if isinstance(deps, list):
                deps.remove(dep)
            else:
                del deps[dep]
    return problems
