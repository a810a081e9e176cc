"""The plain forms of ``hearthlink run`` and ``hearthlink status``, run before the argument
parser loads.

Importing the parser (cyclopts) costs more CPU than everything ``run`` does before its
first spawn, and on a small machine that CPU is taken from the services starting. The
plain forms are command lines of a few options only, each with one reading and all the
others at their defaults: ``run`` with ``--config FILE`` (repeatable) and ``--log-format
human|json``, optionally followed by ``-- CMD…``; ``status`` with ``--config FILE``
(repeatable) and ``--json``. They go straight to the functions the parser's commands call
(``runcmd``, ``statuscmd``), with the same values the parser would give them. Any other
word (a service name, another option, ``--help``, a value missing), and the parser reads
the command line as for every other command.
"""

from __future__ import annotations

import gc
from pathlib import Path

_LOG_FORMATS = ("human", "json")


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


def run_plain(args: list[str]) -> int | None:
    """Run ``hearthlink ARGS`` if it is a plain ``run`` (its exit code; the process may end
    in it), else None: the argument parser reads the command line."""
    if args[:1] != ["run"]:
        return None
    words, command = args[1:], []
    if "--" in words:
        cut = words.index("--")
        words, command = words[:cut], words[cut + 1 :]
        if not command:
            return None  # the parser's path says what is missing
    plain = plain_run(words)
    if plain is None:
        return None
    # No collections while the supervisor's modules load and the config is read: they make
    # next to no garbage, yet the collector would walk what they build some twenty times
    # (~4 ms before the first spawn). ``run_command`` freezes what is there by then, alive
    # for the whole run, and turns the collector on again.
    gc.disable()
    from hearthlink_trio.supervisor.run import PendingSignals

    # The stop signals are kept from here on, before anything else loads.
    pending = PendingSignals()
    pending.install()
    from hearthlink_trio.cli.runcmd import run_command

    paths, log_format = plain
    return run_command(
        config=paths,
        log_format=log_format,
        command=command,
        exit_at_once=True,
        pending=pending,
    )
