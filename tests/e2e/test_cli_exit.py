"""The console script's exit codes come from main(), not from the argument parser's exit."""

from __future__ import annotations

import subprocess
import sys

from hearthlink_trio.cli import main


def test_main_returns_the_commands_exit_code(tmp_path: object) -> None:
    import hearthlink_trio.cli.app as cli_app

    cli_app.app.command(lambda: 7, name="seven")
    try:
        assert main.__module__ == "hearthlink_trio.cli.app"
        old = sys.argv
        sys.argv = ["hearthlink", "seven"]
        try:
            assert main() == 7
        finally:
            sys.argv = old
            cli_app._EXIT_AT_ONCE = False
    finally:
        del cli_app.app["seven"]


def test_usage_errors_exit_2_and_version_exits_0() -> None:
    run = [sys.executable, "-m", "hearthlink_trio"]
    bad = subprocess.run([*run, "--no-such-option"], capture_output=True, text=True)
    assert bad.returncode == 2
    version = subprocess.run([*run, "--version"], capture_output=True, text=True)
    assert version.returncode == 0
    assert version.stdout.strip()
