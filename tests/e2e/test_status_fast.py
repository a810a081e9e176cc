"""``hearthlink status`` in its plain forms (``--config FILE``, ``--json``) is answered
before the argument parser is loaded; it must print what the parser's ``status`` command
prints, byte for byte, and exit with the same code, whatever the supervisor's state.

The fast path is reached by the console script's entry (the config from
``$HEARTHLINK_CONFIG``, or given as ``--config``), the parser's path by calling the parser's
entry itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import wait_for
from tests.stack import Stack, all_gone, run_command, run_parsed, running


def _fast(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_command("status", *args, cwd=config.parent, env={"HEARTHLINK_CONFIG": str(config)})


def _fast_config(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_command("status", *args, "--config", str(config), cwd=config.parent)


def _parsed(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_parsed("status", *args, "--config", str(config), cwd=config.parent)


def _answer(result: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    return result.returncode, result.stdout, result.stderr


def _same_answer(config: Path, *args: str) -> tuple[int, str, str]:
    """The parser's answer, asserted equal to the fast path's.

    The table shows uptimes in whole seconds, which only grow (the services here are never
    probed, so no "last check" goes back to 0s): when the fast path answers the same before
    and after the parser's path, the parser's answer in between must be that one too.
    """

    def sandwich() -> tuple[tuple[int, str, str], ...] | None:
        before, parsed, given, after = (
            _answer(_fast(config, *args)),
            _answer(_parsed(config, *args)),
            _answer(_fast_config(config, *args)),
            _answer(_fast(config, *args)),
        )
        return (before, parsed, given) if before == after else None

    before, parsed, given = wait_for(
        sandwich, timeout=20, what="two equal fast answers around the others"
    )
    assert parsed == before
    assert given == before
    return parsed


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}


def _modules_after_status(config: Path) -> set[str]:
    code = (
        "import contextlib, io, json, sys\n"
        "sys.argv = ['hearthlink', 'status']\n"
        "from hearthlink_trio.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    with contextlib.redirect_stderr(io.StringIO()):\n"
        "        main()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**_environ(), "HEARTHLINK_CONFIG": str(config)},
    )
    return set(json.loads(out.stdout))


def _stack(tmp_path: Path) -> Stack:
    stack = Stack(tmp_path)
    # Never probed, CPU and memory do not move: the JSON object is the same at every ask.
    stack.services["idle"] = {"command": ["sleep", "600"], "probe": "none"}
    stack.services["other"] = {"command": ["sleep", "600"], "probe": "none"}
    return stack


def test_status_of_a_running_supervisor_is_the_same_either_way(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("^idle service is healthy$")
        sup.wait_line("^other service is healthy$")
        code, table, err = _same_answer(config)
        assert (code, err) == (0, "")
        assert table.startswith("hearthlink: healthy (2/2 services healthy)\nNAME ")
        code, text, err = _same_answer(config, "--json")
        assert (code, err) == (0, "")
        health = json.loads(text)
        assert [s["name"] for s in health["services"]] == ["idle", "other"]
        pids = [s["pid"] for s in health["services"]]
        # The fast path really is the one without the parser, and the client the one
        # without the standard library's HTTP stack (email parser, ssl) or an async one.
        modules = _modules_after_status(config)
        assert not {"cyclopts", "http.client", "ssl", "email.parser", "httpx"} & modules
        assert "h11" in modules
    all_gone(pids)


def test_no_supervisor_is_the_same_either_way(tmp_path: Path) -> None:
    config = _stack(tmp_path).write()
    for args in ((), ("--json",)):
        code, out, err = _same_answer(config, *args)
        assert code == 1
        assert out == ""
        assert err.startswith("no hearthlink supervisor is running for data dir ")
        assert err.count("\n") == 1
    assert "cyclopts" not in _modules_after_status(config)


def test_a_broken_config_is_noted_the_same_either_way(tmp_path: Path) -> None:
    config = _stack(tmp_path).write()
    config.write_text(config.read_text() + "\n[services.idle.nonsense]\n")
    code, out, err = _same_answer(config)
    assert code == 1
    assert out == ""
    note, reason = err.splitlines()
    assert note == (
        f"note: {config} has errors (hearthlink check shows them); "
        f"using its data dir {tmp_path / 'data'}"
    )
    assert reason.startswith("no hearthlink supervisor is running")


def test_a_socket_that_refuses_is_reported_the_same_either_way(tmp_path: Path) -> None:
    import socket

    stack = _stack(tmp_path)
    config = stack.write()
    run_dir = stack.data_dir / "run"
    run_dir.mkdir(parents=True)
    # A socket file nobody listens on: what a crashed supervisor leaves behind.
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(run_dir / "hearthlink.sock"))
    code, out, err = _same_answer(config)
    assert (code, out) == (1, "")
    assert "refuses connections" in err
