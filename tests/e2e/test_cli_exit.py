"""The console script's exit codes come from main(), not from the argument parser's exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hearthlink_trio.cli import main


def test_main_returns_the_commands_exit_code(tmp_path: object) -> None:
    import hearthlink_trio.cli.app as cli_app

    cli_app.app.command(lambda: 7, name="seven")
    try:
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


def _modules_after(*argv: str) -> set[str]:
    code = (
        "import contextlib, io, json, sys\n"
        f"sys.argv = ['hearthlink', *{list(argv)!r}]\n"
        "from hearthlink_trio.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_version_and_help_import_neither_trio_nor_pydantic() -> None:
    version = _modules_after("--version")
    assert "cyclopts" not in version  # answered before the parser is loaded
    for modules in (version, _modules_after("--help")):
        assert not {"trio", "pydantic", "pydantic_core", "yaml", "httpx"} & modules


def test_only_the_mcp_command_loads_the_mcp_sdk(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[supervisor]\ndata_dir = "{tmp_path / "d"}"\n[services.s]\ncommand = ["true"]\n'
    )
    for argv in (
        ["--help"],
        ["restart", "s", "--config", str(config)],
        ["wait", "--config", str(config)],
    ):
        modules = _modules_after(*argv)
        assert "hearthlink_trio.cli.app" in modules
        assert not {m for m in modules if m.split(".")[0] in ("mcp", "mcp_types")}, argv
    # The control: the mcp command's module does load it.
    code = "import sys, hearthlink_trio.cli.mcpserver; print('mcp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_run_of_an_unchanged_config_does_not_build_the_file_model(tmp_path: Path) -> None:
    # A config checked once is cached: `run` then starts without pydantic.
    from tests.stack import write_config

    config = write_config(
        tmp_path / "c.toml",
        {
            "supervisor": {"data_dir": str(tmp_path / "d")},
            "services.s": {"command": ["true"], "port": 1},
        },
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from hearthlink_trio.config.cache import load_config_cached\n"
        f"config = load_config_cached(Path({str(config)!r}))\n"
        "print(json.dumps(['pydantic' in sys.modules, config.names]))\n"
    )
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
            ).stdout
        )
        for _ in range(2)
    ]
    assert runs == [[True, ["s"]], [False, ["s"]]]
    # Any change to the file is a full load again.
    config.write_text(config.read_text().replace("port = 1", "port = 2"))
    third = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert json.loads(third.stdout)[0] is True
