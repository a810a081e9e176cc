"""The start of ``hearthlink run`` before the argument parser loads, and the cgroup join of
processes that fork at once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hearthlink_trio.process import cgroups
from tests.helpers import free_port, wait_for
from tests.stack import (
    all_gone,
    children,
    run_command,
    run_parsed,
    running,
    sentinel_of,
    write_config,
)

SLEEP = "/bin/sleep"


def _cgroups_possible() -> bool:
    run, _ = cgroups.create_run_cgroup()
    if run is None:
        return False
    run.rmdir()
    return True


def _forker_config(tmp_path: Path, names: list[str]) -> Path:
    # Each service forks two children the moment its shell starts (before the supervisor
    # can have moved it into its cgroup): one stays its child, the other is a daemon whose
    # parent exits at once (re-parented to the supervisor) and that replaced its environment
    # (no mark of the run).
    script = f"{SLEEP} 600 & (env -i setsid {SLEEP} 600 &); exec {SLEEP} 600"
    return write_config(
        tmp_path / "hearthlink.toml",
        {
            "supervisor": {"data_dir": str(tmp_path / "data"), "stop_timeout": 2.0},
            **{
                f"services.{name}": {"command": ["sh", "-c", script], "probe": "none"}
                for name in names
            },
        },
    )


def _descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        for task in os.listdir(f"/proc/{current}/task"):
            text = Path(f"/proc/{current}/task/{task}/children").read_text()
            kids = [int(word) for word in text.split()]
            found += kids
            pending += kids
    return found


@pytest.mark.skipif(not _cgroups_possible(), reason="cgroup v2 not writable here")
def test_children_forked_before_the_cgroup_join_are_moved_with_their_parent(
    tmp_path: Path,
) -> None:
    names = ["a", "b", "c"]
    config = _forker_config(tmp_path, names)
    with running(config) as sup:
        for name in names:
            sup.wait_line(f"^Started {name} service")
        sentinel = sentinel_of(sup)
        every: list[int] = []

        def forked() -> bool:
            # Each service, its child, and its daemon (now a child of the supervisor).
            every[:] = [pid for pid in children(sup.pid) if pid != sentinel]
            every.extend(kid for pid in list(every) for kid in _descendants(pid))
            return len(every) == 3 * len(names)

        wait_for(forked, timeout=5.0, what="every service, its child and its daemon")
        for pid in every:
            text = Path(f"/proc/{pid}/cgroup").read_text()
            assert any(f"/hearthlink-{sup.pid}/{name}\n" in text for name in names), (pid, text)
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone(every)


@pytest.mark.parametrize("log_format", ["human", "json"])
def test_a_plain_run_fails_as_the_parsed_one_does(tmp_path: Path, log_format: str) -> None:
    config = tmp_path / "hearthlink.toml"
    config.write_text('[services.web]\ncommand = ["true"]\nport = 99999\n')
    args = ["run", "--config", str(config), "--log-format", log_format]
    plain, parsed = run_command(*args, cwd=tmp_path), run_parsed(*args, cwd=tmp_path)
    assert plain.returncode == parsed.returncode == 2
    assert plain.stdout == parsed.stdout == ""

    def without_times(text: str) -> str:
        return re.sub(r'"ts": "[^"]*"', "", text)

    assert without_times(plain.stderr) == without_times(parsed.stderr)
    assert "port" in plain.stderr


def test_a_plain_run_loads_no_argument_parser(tmp_path: Path) -> None:
    config = tmp_path / "hearthlink.toml"
    config.write_text('[services.web]\ncommand = ["true"]\nport = 99999\n')
    code = (
        "import contextlib, io, json, sys\n"
        f"sys.argv = ['hearthlink', 'run', '--config', {str(config)!r}]\n"
        "from hearthlink_trio.cli import main\n"
        "with contextlib.redirect_stderr(io.StringIO()):\n"
        "    exit_code = main()\n"
        "print(json.dumps([exit_code, sorted(sys.modules)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    exit_code, modules = json.loads(out.stdout)
    assert exit_code == 2
    assert "hearthlink_trio.cli.runcmd" in modules
    assert not [m for m in modules if m.split(".")[0] == "cyclopts"]


@pytest.mark.parametrize("setpriv", ["on", "off"])
def test_a_program_that_cannot_start_is_reported_as_such(tmp_path: Path, setpriv: str) -> None:
    # Each program passes the preflight, then makes itself unstartable and exits: its
    # restart meets what exec would meet.
    gone, denied = tmp_path / "gone.sh", tmp_path / "denied.sh"
    gone.write_text('#!/bin/sh\nrm -f "$0"\nexit 1\n')
    denied.write_text('#!/bin/sh\nchmod -x "$0"\nexit 1\n')
    for script in (gone, denied):
        script.chmod(0o755)
    config = write_config(
        tmp_path / "hearthlink.toml",
        {
            "supervisor": {"data_dir": str(tmp_path / "data"), "stop_timeout": 2.0},
            "restart": {"initial_backoff": 0.05, "max_attempts": 1},
            "services.gone": {"command": [str(gone)], "probe": "none"},
            "services.denied": {"command": [str(denied)], "probe": "none"},
        },
    )
    with running(config, env={"HEARTHLINK_SETPRIV": setpriv}) as sup:
        sup.wait_line("^gone service could not start: No such file or directory$")
        sup.wait_line("^denied service could not start: Permission denied$")
        sup.signal(signal.SIGTERM)
        sup.wait()


#: Modules the plain run leaves for later: trio and the supervisor load while the first
#: services boot (the probes too: the launcher's thread loads its own checks, and h11, once
#: they have started), a config cache hit needs no TOML parser (nor the merging of files)
#: and no OpenSSL (hashlib), log lines no datetime, a config without secrets no base64.
_NOT_BEFORE_THE_FIRST_SPAWN = (
    "trio",
    "hearthlink_trio.supervisor.supervisor",
    "hearthlink_trio.probes.http",
    "hearthlink_trio.probes.early",
    "h11",
    "tomllib",
    "hearthlink_trio.config.merge",
    "hashlib",
    "_hashlib",
    "datetime",
    "base64",
)


def test_the_plain_run_reaches_its_first_spawn_without_what_it_does_not_need(
    tmp_path: Path,
) -> None:
    # The real command up to the moment it would start the first service: the sentinel
    # starts for real (and sweeps and exits once this process is gone), the service's
    # Popen reports the process's state instead and exits.
    config = write_config(
        tmp_path / "hearthlink.toml",
        {
            "supervisor": {"data_dir": str(tmp_path / "data")},
            "services.web": {
                "command": ["/bin/sh", "-c", "exit 0", "first-service"],
                "port": free_port(),  # a port: its check logs a line before the spawn
            },
        },
    )
    assert run_command("check", "--config", str(config), cwd=tmp_path).returncode == 0
    code = (
        "import gc, json, os, subprocess, sys\n"
        "real_init = subprocess.Popen.__init__\n"
        "sentinels = []\n"
        "def init(self, args, *rest, **kwargs):\n"
        "    if 'first-service' not in map(str, args):\n"
        "        real_init(self, args, *rest, **kwargs)\n"
        "        sentinels.append(self.pid)\n"
        "        return\n"
        "    state = [sentinels, sorted(sys.modules), gc.isenabled(), gc.get_freeze_count()]\n"
        "    print(json.dumps(state), flush=True)\n"
        "    os._exit(0)\n"
        "subprocess.Popen.__init__ = init\n"
        f"sys.argv = ['hearthlink', 'run', '--config', {str(config)!r}, '--log-format', 'json']\n"
        "from hearthlink_trio.cli import main\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}
    env["HEARTHLINK_API_TOKEN"] = "a-token-of-the-test-0123456789"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert out.stdout, out.stderr
    sentinels, modules, collecting, frozen = json.loads(out.stdout)
    all_gone(sentinels)
    assert "hearthlink_trio.supervisor.launcher" in modules  # it did get that far
    assert [name for name in _NOT_BEFORE_THE_FIRST_SPAWN if name in modules] == []
    # The collector is on again by then, with the modules loaded frozen out of its walks.
    assert collecting
    assert frozen > 10_000
