"""The command line: ``hearthlink run``, ``check``, ``status``, ``restart``, ``stop``, ``logs``…

:func:`main` answers ``--version`` before anything is imported (the argument parser alone
costs more than the whole answer should take), runs the plain forms of ``run`` and
``status`` through the functions the parser's commands call, without the parser
(:mod:`hearthlink_trio.cli.early`), and hands everything else to the commands of
:mod:`hearthlink_trio.cli.app`.
"""

from __future__ import annotations

import sys

from hearthlink_trio import __version__


def main() -> int:
    """The console script ``hearthlink``; returns the exit code."""
    if sys.argv[1:] == ["--version"]:
        print(__version__)
        return 0
    if sys.argv[1:2] == ["status"]:
        from hearthlink_trio.cli.early import plain_status

        plain = plain_status(sys.argv[2:])
        if plain is not None:
            from hearthlink_trio.cli.statuscmd import show_status

            return show_status(plain[0], as_json=plain[1])
    if sys.argv[1:2] == ["run"]:
        from hearthlink_trio.cli.early import run_plain

        code = run_plain(sys.argv[1:])
        if code is not None:
            return code
    from hearthlink_trio.cli.app import main as run_command_line

    return run_command_line()


__all__ = ["main"]
