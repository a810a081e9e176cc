"""Hostile config input: every case a clear line (exit 2, or 3 for the preflight), never a
traceback, a hang or unbounded memory; and ``check`` refuses what ``run`` would refuse."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hearthlink_trio.config import load_config
from hearthlink_trio.config.graph import dependency_order
from hearthlink_trio.config.locate import locate
from hearthlink_trio.errors import ConfigError, HearthlinkError, PreflightError
from hearthlink_trio.supervisor.preflight import preflight
from tests.helpers import free_port
from tests.stack import run_command

SLEEP = shutil.which("sleep") or "/bin/sleep"


def toml(value: Any) -> str:
    """``value`` as TOML (strings JSON-escaped, which TOML's basic strings read alike)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def write(path: Path, tables: Mapping[str, Mapping[str, Any]]) -> Path:
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{json.dumps(key)} = {toml(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def config(tmp_path: Path, service: Mapping[str, Any] | None = None, **supervisor: Any) -> Path:
    """A one-service config in ``tmp_path``; ``service`` keys replace the defaults (None
    removes one)."""
    svc = {"command": [SLEEP, "10"], "probe": "none", **(service or {})}
    svc = {key: value for key, value in svc.items() if value is not None}
    sup = {"data_dir": str(tmp_path / "data"), **supervisor}
    return write(tmp_path / "hearthlink.toml", {"supervisor": sup, "services.web": svc})


def refused(path: Path) -> list[str]:
    """The problems of ``path`` (load and preflight, as ``check``), each checked to be one
    line in the error form."""
    started = time.monotonic()
    with pytest.raises(HearthlinkError) as info:
        preflight(load_config(path, environ={}), logging.getLogger("test"), keep_lock=False)
    assert time.monotonic() - started < 5
    problems = info.value.problems
    assert problems
    for line in problems:
        assert "\n" not in line and line.strip() == line
        if isinstance(info.value, ConfigError):
            files = (path.name, str(path), "hearthlink.override.toml")
            assert line.startswith(tuple(f"{name}: " for name in files)), line
    return problems


# -- check says OK, run crashes --------------------------------------------------------


def test_nul_in_a_command_or_env_value(tmp_path: Path) -> None:
    path = config(tmp_path, {"command": [SLEEP, "10\0x"], "env": {"A": "b\0c"}})
    assert refused(path) == [
        "hearthlink.toml: services.web.command.1: holds a NUL character",
        "hearthlink.toml: services.web.env.A: holds a NUL character",
    ]


@pytest.mark.parametrize("key", ["user", "data_dir"])
def test_nul_in_user_or_data_dir(tmp_path: Path, key: str) -> None:
    if key == "user":
        path = config(tmp_path, {"user": "ro\0ot"})
        expected = "hearthlink.toml: services.web.user: holds a NUL character"
    else:
        path = config(tmp_path, data_dir="da\0ta")
        expected = "hearthlink.toml: supervisor.data_dir: holds a NUL character"
    assert refused(path) == [expected]


def test_nul_in_an_env_file(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_bytes(b"A=1\nB=x\0y\n")
    [line] = refused(config(tmp_path, {"env_file": "app.env"}))
    assert line == (
        f"hearthlink.toml: services.web.env_file: {tmp_path / 'app.env'}: line 2: "
        "holds a NUL character"
    )


def test_env_name_with_equals_sign(tmp_path: Path) -> None:
    [line] = refused(config(tmp_path, {"env": {"A=B": "x"}}))
    assert line.startswith("hearthlink.toml: services.web.env: 'A=B' is not an environment")


def test_control_socket_too_long_is_refused_by_check(tmp_path: Path) -> None:
    long_path = tmp_path / ("s" * 120) / "hl.sock"
    [line] = refused(config(tmp_path, control_socket=str(long_path)))
    assert line.startswith(f"hearthlink.toml: supervisor.control_socket: {long_path} is longer")


def test_control_socket_and_log_dir_folders_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = config(
        tmp_path,
        control_socket=str(tmp_path / "file" / "run" / "hl.sock"),
        log_dir=str(tmp_path / "file" / "logs"),
    )
    assert refused(path) == [
        f"hearthlink.toml: supervisor.control_socket: {tmp_path / 'file'} is not a folder",
        f"hearthlink.toml: supervisor.log_dir: {tmp_path / 'file'} is not a folder",
    ]


def test_control_socket_path_taken_by_a_file(tmp_path: Path) -> None:
    (tmp_path / "hl.sock").write_text("")
    [line] = refused(config(tmp_path, control_socket=str(tmp_path / "hl.sock")))
    assert line == (
        f"hearthlink.toml: supervisor.control_socket: {tmp_path / 'hl.sock'} exists and is "
        "not a socket"
    )


def test_exec_probe_program_that_does_not_exist(tmp_path: Path) -> None:
    path = config(tmp_path, {"probe": {"exec": ["hearthlink-no-such-program"]}})
    assert refused(path) == [
        "hearthlink.toml: services.web.probe: program 'hearthlink-no-such-program' not found "
        "on PATH"
    ]


def test_a_relative_program_is_found_from_the_service_folder(tmp_path: Path) -> None:
    # As the spawn finds it: relative to the service's cwd, not to where `check` runs.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "probe").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "probe").chmod(0o755)
    path = config(tmp_path, {"probe": {"exec": ["./bin/probe"]}})
    assert preflight(load_config(path, environ={}), logging.getLogger("t"), keep_lock=False) is None


# -- unbounded reads and hangs ------------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_config_that_is_a_device(device: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Path(device), environ={})
    assert info.value.problems == [f"{device}: cannot read config: not a regular file"]


def test_config_and_env_file_that_are_fifos_do_not_block(tmp_path: Path) -> None:
    # In a child process with a time limit: a regression would hang, not fail.
    os.mkfifo(tmp_path / "fifo.toml")
    result = run_command("check", "--config", "fifo.toml", cwd=tmp_path, timeout=20)
    assert result.returncode == 2
    assert result.stderr.strip() == "fifo.toml: cannot read config: not a regular file"
    os.mkfifo(tmp_path / "fifo.env")
    config(tmp_path, env_file="fifo.env")
    result = run_command("check", "--config", "hearthlink.toml", cwd=tmp_path, timeout=20)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"hearthlink.toml: supervisor.env_file: {tmp_path / 'fifo.env'}: not a regular file"
    )


def test_large_config_and_env_files(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    with big.open("wb") as f:
        f.truncate(100 * 1024 * 1024)  # sparse: 100 MB that take no disk
    with pytest.raises(ConfigError) as info:
        load_config(big, environ={})
    assert info.value.problems == [f"{big}: cannot read config: larger than 1 MiB"]
    with (tmp_path / "big.env").open("wb") as f:
        f.truncate(100 * 1024 * 1024)
    assert refused(config(tmp_path, {"env_file": "big.env"})) == [
        f"hearthlink.toml: services.web.env_file: {tmp_path / 'big.env'}: larger than 1 MiB"
    ]


def test_secret_file_that_is_a_fifo(tmp_path: Path) -> None:
    path = config(tmp_path, {"secrets": {"APP_KEY": "app.key"}})
    (tmp_path / "data").mkdir()
    os.mkfifo(tmp_path / "data" / "app.key")
    [line] = refused(path)
    assert line.startswith("Secrets in ") and "app.key is not a regular file" in line


def test_deeply_nested_toml(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    assert refused(path) == [
        "c.toml: TOML nesting too deep (arrays or inline tables inside each other)"
    ]


def test_a_5000_digit_integer(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[supervisor]\nlog_backups = " + "7" * 5000 + "\n")
    assert refused(path) == ["c.toml: line 2: an integer of more than 4300 digits"]


def test_a_50000_part_dotted_key_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[services]\n" + ".".join(["a"] * 50_000) + " = 1\n")
    started = time.monotonic()
    assert refused(path) == ["c.toml: line 2: a key of more than 64 parts"]
    assert time.monotonic() - started < 1


def test_a_dependency_cycle_through_thousands_of_services(tmp_path: Path) -> None:
    n = 5000
    order, cycles = dependency_order({f"s{i}": [f"s{(i + 1) % n}"] for i in range(n)})
    assert len(order) == n and len(cycles) == 1
    assert cycles[0].startswith("s0 -> s1 -> ") and cycles[0].endswith(" -> s0")
    # Through the loader too, with as many services as a config may have.
    n = 1000
    tables = {
        f"services.s{i}": {"command": [SLEEP], "probe": "none", "depends_on": [f"s{(i + 1) % n}"]}
        for i in range(n)
    }
    [line] = refused(write(tmp_path / "c.toml", tables))
    assert line.startswith("c.toml: services.s0.depends_on: dependency cycle: s0 -> s1 -> ")


def test_a_script_name_of_300_characters(tmp_path: Path) -> None:
    path = config(tmp_path, {"command": None, "script": "x" * 300 + ".py", "port": free_port()})
    [line] = refused(path)
    assert line.startswith("hearthlink.toml: services.web.script: cannot be looked at (File name")


def test_home_of_a_user_that_does_not_exist(tmp_path: Path) -> None:
    assert refused(config(tmp_path, data_dir="~nosuchuser-hl/x")) == [
        "hearthlink.toml: supervisor.data_dir: '~nosuchuser-hl/x' names no home folder "
        "(no user 'nosuchuser-hl')"
    ]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="root and setpriv")
def test_a_script_in_a_folder_that_cannot_be_entered(tmp_path: Path) -> None:
    # Root passes every permission check; with the override capabilities dropped it does
    # not, as an ordinary user would not.
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "svc.py").write_text("")
    locked.chmod(0)
    config(tmp_path, {"command": None, "script": "locked/svc.py", "port": free_port()})
    try:
        result = _check_without_dac_override(tmp_path)
    finally:
        locked.chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"hearthlink.toml: services.web.script: cannot be looked at (Permission denied): "
        f"{locked / 'svc.py'}"
    )


def _check_without_dac_override(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}
    return subprocess.run(
        [
            "setpriv",
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
            sys.executable,
            "-m",
            "hearthlink_trio",
            "check",
            "--config",
            "hearthlink.toml",
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )


# -- values accepted that should not be --------------------------------------------------


def test_no_coercion(tmp_path: Path) -> None:
    path = config(tmp_path, {"port": True, "critical": "yes"})
    assert refused(path) == [
        "hearthlink.toml: services.web.port: Input should be a valid integer",
        "hearthlink.toml: services.web.critical: Input should be a valid boolean",
    ]
    assert refused(config(tmp_path, {"port": "30001"})) == [
        "hearthlink.toml: services.web.port: Input should be a valid integer"
    ]


def test_durations_are_finite(tmp_path: Path) -> None:
    path = config(tmp_path, {"stop_timeout": float("inf")}, stop_timeout=float("nan"))
    assert refused(path) == [
        "hearthlink.toml: supervisor.stop_timeout: Input should be a finite number",
        "hearthlink.toml: services.web.stop_timeout: Input should be a finite number",
    ]


def test_an_integer_duration_is_still_a_duration(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path, {"stop_timeout": 3}, stop_timeout=7), environ={})
    assert cfg.service("web").stop_timeout == 3.0


def test_service_names_have_a_length_limit_and_are_quoted(tmp_path: Path) -> None:
    svc = {"command": [SLEEP], "probe": "none"}
    path = write(
        tmp_path / "c.toml",
        {
            f"services.{'a' * 63}": svc,
            f"services.{'b' * 10_000}": svc,
            'services."bad\\nname"': svc,
            'services."a.b"': svc,
        },
    )
    found = refused(path)
    advice = "invalid service name (use at most 63 lowercase letters, digits, '_' and '-', "
    assert found == [
        f"c.toml: services.{'b' * 10_000}: {advice}starting with a letter)",
        f'c.toml: services."bad\\nname": {advice}starting with a letter)',
        f'c.toml: services."a.b": {advice}starting with a letter)',
    ]


@pytest.mark.parametrize("var", ["PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONHOME"])
def test_secrets_cannot_replace_what_runs_programs(tmp_path: Path, var: str) -> None:
    [line] = refused(config(tmp_path, {"secrets": {var: "x.key"}}))
    assert line == (
        f"hearthlink.toml: services.web.secrets: {var!r} would replace a variable that "
        "controls how programs run (PATH and names starting with LD_ or PYTHON are refused)"
    )


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = config(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    (tmp_path / "app.env").write_bytes(b"\xef\xbb\xbfGREETING=hi\n")
    cfg = load_config(path, environ={})
    assert cfg.names == ("web",)
    path.write_text(path.read_text(encoding="utf-8-sig") + 'env_file = "app.env"\n')
    assert load_config(path, environ={}).service("web").file_env == {"GREETING": "hi"}


def test_preflight_lines_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(PreflightError) as info:
        preflight(
            load_config(config(tmp_path, control_socket="/" + "x" * 200), environ={}),
            logging.getLogger("t"),
            keep_lock=False,
        )
    assert info.value.exit_code == 3
    assert info.value.problems[0].startswith("hearthlink.toml: supervisor.control_socket: ")


def test_a_flood_of_problems_is_cut_to_a_hundred_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("".join(f"[t{i}]\n" for i in range(5000)))
    found = refused(path)
    assert len(found) == 101
    assert found[0] == "c.toml: t0: unknown key"
    assert found[-1] == "c.toml: … and 4900 more problem(s)"


def test_at_most_a_thousand_services(tmp_path: Path) -> None:
    path = config(tmp_path, {"replicas": 600})
    path.write_text(path.read_text() + f'[services.more]\ncommand = ["{SLEEP}"]\nreplicas = 401\n')
    assert refused(path) == [
        "hearthlink.toml: services: 1001 services (replicas included); at most 1000"
    ]


def test_a_memory_size_of_thousands_of_digits(tmp_path: Path) -> None:
    [line] = refused(config(tmp_path, {"max_memory": "9" * 5000 + "M"}))
    assert line == (
        "hearthlink.toml: services.web.max_memory: '99999999999999999999'… is not a size a "
        "machine has"
    )


def test_a_schedule_of_more_than_a_year(tmp_path: Path) -> None:
    path = config(tmp_path, {"kind": "task", "probe": None, "schedule": "every 1e300"})
    assert refused(path) == [
        "hearthlink.toml: services.web.schedule: 'every' is at most 31622400 seconds, a year "
        "(got '1e300'; a cron expression names rarer times)"
    ]


def test_a_log_file_that_is_a_fifo(tmp_path: Path) -> None:
    # run opens it for appending at start, which would block on a FIFO with no reader.
    (tmp_path / "logs").mkdir()
    os.mkfifo(tmp_path / "logs" / "web.log")
    assert refused(config(tmp_path, log_dir="logs")) == [
        f"hearthlink.toml: supervisor.log_dir: {tmp_path / 'logs' / 'web.log'} is a FIFO, not "
        "a file to write the log in"
    ]


def test_an_override_of_many_keys_merges_quickly(tmp_path: Path) -> None:
    # Merging costs what the files hold: each replaced key forgets only what it replaced.
    path = config(tmp_path)
    keys = "".join(f"k{i} = 1\n" for i in range(30_000))
    path.write_text(path.read_text() + "[x]\n" + keys)
    (tmp_path / "hearthlink.override.toml").write_text("[x]\n" + keys)
    started = time.monotonic()
    assert refused(path) == ["hearthlink.override.toml: x: unknown key"]
    assert time.monotonic() - started < 5


def test_clients_find_the_supervisor_of_a_hostile_config(tmp_path: Path) -> None:
    # status, stop, logs…: a key that names no path falls back to its default, never raises.
    path = config(tmp_path, data_dir="~nosuchuser-hl/x", log_dir="lo\0gs")
    where = locate(path, environ={})
    assert where.data_dir == tmp_path / "~nosuchuser-hl" / "x"
    assert where.log_dir == where.data_dir / "logs"
    os.mkfifo(tmp_path / "fifo.toml")
    assert locate(tmp_path / "fifo.toml", environ={}).data_dir.name == "hearthlink"


def test_a_control_socket_another_process_answers_on(tmp_path: Path) -> None:
    sock_path = Path(tempfile.mkdtemp(prefix="hl-")) / "hl.sock"  # short: a socket's path
    path = config(tmp_path, control_socket=str(sock_path))
    with socket.socket(socket.AF_UNIX) as holder:
        holder.bind(str(sock_path))
        # Bound, not listening: what a crashed run leaves; run replaces it, so check is OK.
        assert (
            preflight(load_config(path, environ={}), logging.getLogger("t"), keep_lock=False)
            is None
        )
        holder.listen()
        assert refused(path) == [
            f"hearthlink.toml: supervisor.control_socket: another hearthlink supervisor "
            f"answers on {sock_path}; stop it first (hearthlink stop)"
        ]
    shutil.rmtree(sock_path.parent)
