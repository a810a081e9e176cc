"""``hearthlink run`` started before the argument parser loads.

Importing the parser (cyclopts) takes longer than everything else the run does before its
first spawn. So for the plain forms of the command, ``hearthlink run`` with nothing but
``--config FILE`` (repeatable) and ``--log-format human|json``, optionally followed by
``-- CMD…``, :func:`begin` makes the run's start (signals, preflight, containment, the
services that wait for nothing) at once, from the raw words. Any other word, or any doubt,
and nothing is done here: the parser runs as for every other command.

This is no second parser: the parser still reads the whole command line afterwards, and the
``run`` command uses what was prepared only if what it parsed is exactly what :func:`begin`
assumed (:func:`take`); anything else, and what was started is killed before anything else
happens, then the run starts as usual.
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


def plain_run(words: list[str]) -> tuple[tuple[Path, ...] | None, str] | None:
    """The config files given (None: none given) and the log format of ``run``'s ``words``
    (what follows ``run``, up to a ``--``), if they are of the plain form only; else None."""
    paths: list[Path] = []
    log_format = "human"
    i = 0
    while i < len(words):
        word = words[i]
        name, eq, value = word.partition("=")
        if name not in ("--config", "--log-format"):
            return None
        if not eq:
            if i + 1 >= len(words) or words[i + 1].startswith("-"):
                return None
            value = words[i + 1]
            i += 1
        i += 1
        if not value:
            return None
        if name == "--config":
            paths.append(Path(value))
        elif value in _LOG_FORMATS:
            log_format = value
        else:
            return None
    return (tuple(paths) or None), log_format


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
