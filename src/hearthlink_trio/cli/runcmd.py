"""``hearthlink run`` and the error report of every command: the functions behind the
parsed commands, which import no argument parser (the plain forms of ``run`` call
:func:`run_command` straight from the console script, see ``early``)."""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hearthlink_trio.config.lookup import config_paths
from hearthlink_trio.errors import ExitCode, HearthlinkError

if TYPE_CHECKING:
    from hearthlink_trio.supervisor.run import PendingSignals


def report(exc: HearthlinkError, log_format: str = "human") -> int:
    """Print every problem of ``exc`` on stderr (as JSON events with ``--log-format json``)."""
    problems = getattr(exc, "problems", None) or [exc.message]
    if log_format == "json":
        from hearthlink_trio.supervisor.output import setup_event_log

        log = setup_event_log("json")
        for line in problems:
            log.error(line, extra={"event": type(exc).__name__})
    else:
        for line in problems:
            print(line, file=sys.stderr)
    return exc.exit_code


def run_command(
    *,
    names: Sequence[str] = (),
    config: Sequence[Path] | None = None,
    log_format: str = "human",
    profiles: Sequence[str] = (),
    watch: bool = True,
    wait_timeout: float = 60.0,
    command: Sequence[str] = (),
    exit_at_once: bool = False,
    pending: PendingSignals | None = None,
) -> int:
    """``hearthlink run``: returns its exit code (with ``exit_at_once``, the process ends
    here once everything is stopped and written, without the interpreter's teardown).
    ``pending``: the stop signals caught already."""
    from hearthlink_trio.config.cache import load_config_cached
    from hearthlink_trio.config.selection import Selection
    from hearthlink_trio.supervisor.run import run_supervisor

    if wait_timeout <= 0:
        print("--wait-timeout must be more than 0", file=sys.stderr)
        return ExitCode.CONFIG
    try:
        cfg = load_config_cached(config_paths(config))
        selection = Selection(tuple(names), tuple(profiles))
        selection.check(cfg)
        if not gc.isenabled():
            # The plain start turned the collector off until here (see ``early``): what
            # exists now lasts the run, so later collections need not walk it again.
            gc.freeze()
            gc.enable()
        code = run_supervisor(
            cfg,
            log_format=log_format,
            selection=selection,
            watch=watch,
            command=command,
            wait_timeout=wait_timeout,
            pending=pending,
        )
    except HearthlinkError as exc:
        return report(exc, log_format)
    if exit_at_once:
        # Every service is stopped and reaped, every line written: skip the interpreter's
        # teardown (~70 ms of freeing modules), so the exit follows the last service's.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
