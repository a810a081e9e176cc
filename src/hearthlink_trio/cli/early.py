"""``hearthlink run`` started (and ``hearthlink status`` answered) before the argument
parser loads.

Importing the parser (cyclopts) takes longer than everything else the run does before its
first spawn. So for the plain forms of the command, ``hearthlink run`` with nothing but
``--config FILE`` (repeatable) and ``--log-format human|json``, optionally followed by
``-- CMD…``, :func:`begin` makes the run's start (signals, preflight, containment, the
services that wait for nothing) at once, from the raw words. Any other word, or any doubt,
and nothing is done here: the parser runs as for every other command.

This is no second parser: the parser still reads the whole command line afterwards, and the
``run`` command uses what was prepared only if what it parsed is exactly what :func:`begin`
assumed (:func:`take`); anything else, and what was started is killed before anything else
happens, then the run starts as usual. ``hearthlink status`` in its plain form (``--config
FILE``, repeatable, and ``--json``) is answered by the same function as the parser's command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hearthlink_trio.supervisor.run import PreparedRun

_LOG_FORMATS = ("human", "json")


@dataclass
class _Early:
    paths: tuple[Path, ...] | None
    log_format: str
    prepared: PreparedRun | None = None
    failure: Exception | None = None


_early: _Early | None = None


def plain_options(
    words: list[str], *, values: tuple[str, ...], flags: tuple[str, ...] = ()
) -> dict[str, list[str]] | None:
    """``words`` as ``{option: [value, …]}`` if they are only the options ``values`` (each
    with a value: ``--name VALUE`` or ``--name=VALUE``, repeatable) and ``flags`` (no value;
    ``[]``); else None, and the argument parser reads them."""
    found: dict[str, list[str]] = {}
    i = 0
    while i < len(words):
        name, eq, value = words[i].partition("=")
        if name in flags and not eq:
            found.setdefault(name, [])
            i += 1
            continue
        if name not in values:
            return None
        if not eq:
            if i + 1 >= len(words) or words[i + 1].startswith("-"):
                return None
            value = words[i + 1]
            i += 1
        i += 1
        if not value:
            return None
        found.setdefault(name, []).append(value)
    return found


def plain_run(words: list[str]) -> tuple[tuple[Path, ...] | None, str] | None:
    """The config files given (None: none given) and the log format of ``run``'s ``words``
    (what follows ``run``, up to a ``--``), if they are of the plain form only; else None."""
    found = plain_options(words, values=("--config", "--log-format"))
    if found is None:
        return None
    formats = found.get("--log-format", ["human"])
    if any(value not in _LOG_FORMATS for value in formats):
        return None
    paths = tuple(Path(value) for value in found.get("--config", []))
    return (paths or None), formats[-1]


def plain_status(words: list[str]) -> tuple[list[Path] | None, bool] | None:
    """The config files given (None: none) and whether ``--json`` was, for ``status``'s
    ``words`` of the plain form (``--config FILE``, repeatable, and ``--json``); else None."""
    found = plain_options(words, values=("--config",), flags=("--json",))
    if found is None:
        return None
    paths = [Path(value) for value in found.get("--config", [])]
    return (paths or None), "--json" in found


def begin(args: list[str]) -> None:
    """Prepare the run of ``hearthlink ARGS`` now if it is a plain ``run``; else do nothing.
    A failure is kept for the ``run`` command to report, as it would have met it itself."""
    global _early
    if args[:1] != ["run"]:
        return
    words = args[1:]
    if "--" in words:
        words = words[: words.index("--")]
    plain = plain_run(words)
    if plain is None:
        return
    from hearthlink_trio.supervisor.run import PendingSignals

    # The stop signals are kept from here on, as the run itself would keep them.
    pending = PendingSignals()
    pending.install()
    paths, log_format = plain
    early = _early = _Early(paths, log_format)
    try:
        from hearthlink_trio.config.cache import load_config_cached
        from hearthlink_trio.config.lookup import config_paths
        from hearthlink_trio.config.selection import Selection
        from hearthlink_trio.supervisor.run import prepare_run

        config = load_config_cached(config_paths(paths))
        early.prepared = prepare_run(
            config, log_format=log_format, selection=Selection(), pending=pending
        )
    except Exception as exc:  # reported by the run command, as if it had met it
        early.failure = exc


def take(paths: tuple[Path, ...] | None, log_format: str, *, plain: bool) -> PreparedRun | None:
    """What :func:`begin` prepared for this ``run`` (None if nothing); ``plain``: the parsed
    command has no service names, profiles or other options that :func:`begin` would not
    have read. A failure it met is raised here. What was prepared for another command line
    than the one parsed is closed (its processes killed) and not used."""
    global _early
    early, _early = _early, None
    if early is None:
        return None
    if not plain or early.paths != paths or early.log_format != log_format:
        if early.prepared is not None:
            early.prepared.close()
        return None
    if early.failure is not None:
        raise early.failure
    return early.prepared


def discard() -> None:
    """Close what was prepared and never taken (the command line failed to parse)."""
    global _early
    early, _early = _early, None
    if early is not None and early.prepared is not None:
        early.prepared.close()
