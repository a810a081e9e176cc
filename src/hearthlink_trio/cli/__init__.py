"""The command line: ``hearthlink run``, ``check``, ``status``, ``restart``, ``stop``, ``logs``…

:func:`main` answers ``--version`` before anything is imported (the argument parser alone
costs more than the whole answer should take), and the exact command lines ``status`` and
``status --json`` through the same function the parser's command calls; it starts the plain
forms of ``run`` before the parser loads (:mod:`hearthlink_trio.cli.early`), and hands
everything else to the commands of :mod:`hearthlink_trio.cli.app`.
"""

from __future__ import annotations

import sys

from hearthlink_trio import __version__


def main() -> int:
    """The console script ``hearthlink``; returns the exit code."""
    if sys.argv[1:] == ["--version"]:
        print(__version__)
        return 0
    if sys.argv[1:] in (["status"], ["status", "--json"]):
        from hearthlink_trio.cli.statuscmd import show_status

        return show_status(None, as_json=sys.argv[2:] == ["--json"])
    if sys.argv[1:2] == ["run"]:
        # The plain forms of ``run`` start their services before the parser even loads.
        from hearthlink_trio.cli import early

        early.begin(sys.argv[1:])
        try:
            from hearthlink_trio.cli.app import main as run_command_line

            return run_command_line()
        finally:
            early.discard()
    from hearthlink_trio.cli.app import main as run_command_line

    return run_command_line()


__all__ = ["main"]
