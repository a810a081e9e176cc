"""``check`` agrees with ``run``: what ``run`` refuses, ``check`` refuses with the same lines;
what ``check`` accepts (mutated configs included), ``run`` starts and stops cleanly."""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stack import run_command, running
from tests.unit.test_config_mutations import base_config, check, mutants, render, two_ports
from tests.unit.test_hostile_config import SLEEP, write

#: How many accepted mutants are started (each takes a few seconds).
STARTED_MUTANTS = 4


@pytest.fixture
def root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hl-") as tmp:  # short: the socket's path
        yield Path(tmp)


def _config(root: Path, service: dict[str, Any], **supervisor: Any) -> Path:
    svc = {"command": [SLEEP, "10"], "probe": "none", **service}
    sup = {"data_dir": str(root / "data"), **supervisor}
    return write(root / "hearthlink.toml", {"supervisor": sup, "services.web": svc})


CASES = {
    "nul_in_command": ({"command": [SLEEP, "10\0x"]}, {}),
    "nul_in_env": ({"env": {"A": "x\0y"}}, {}),
    "equals_in_env_name": ({"env": {"A=B": "x"}}, {}),
    "socket_too_long": ({}, {"control_socket": "/tmp/" + "s" * 120 + "/hl.sock"}),
    "socket_folder_under_a_file": ({}, {"control_socket": "file/run/hl.sock"}),
    "log_dir_under_a_file": ({}, {"log_dir": "file/logs"}),
    "exec_probe_missing": ({"probe": {"exec": ["hearthlink-no-such-program"]}}, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_run_refuses_what_check_refuses_with_the_same_lines(root: Path, case: str) -> None:
    service, supervisor = CASES[case]
    (root / "file").write_text("")
    path = _config(root, service, **supervisor)
    checked = run_command("check", "--config", str(path), cwd=root, timeout=20)
    ran = run_command("run", "--config", str(path), cwd=root, timeout=20)
    assert checked.returncode in (2, 3), checked.stderr
    assert ran.returncode == checked.returncode, ran.stderr
    assert ran.stderr == checked.stderr
    assert "Traceback" not in ran.stderr
    assert not (root / "data" / "logs").exists()  # nothing was started


def test_accepted_mutants_start_and_stop_cleanly(root: Path) -> None:
    ports = two_ports()
    base = set(render(base_config(root, ports)).splitlines())
    started = 0
    for mutant in mutants(root, ports):
        path = root / "hearthlink.toml"
        path.write_text(mutant.text)
        if mutant.text == "" or set(mutant.text.splitlines()) <= base or check(path) is not None:
            continue  # refused, or no line changed: the unit test covers those
        with running(path) as sup:
            sup.wait_line(r"Started .* with PID")
            sup.signal(signal.SIGTERM)
            code = sup.wait()
            assert code == 0, f"mutant {mutant.number}:\n{mutant.text}\n{sup.stderr()}"
            assert "Traceback" not in sup.stderr() + sup.stdout(), mutant.text
        started += 1
        if started == STARTED_MUTANTS:
            return
    pytest.fail(f"only {started} accepted mutants changed a line")


def test_a_sample_of_mutants_through_the_command(root: Path) -> None:
    # The real command, for a sample (the unit test checks all of them in-process): exit
    # 0, 2 or 3, never a traceback; every line of a refusal names the file.
    for mutant in mutants(root, two_ports()):
        if mutant.number % 50:
            continue
        path = root / "hearthlink.toml"
        path.write_bytes(mutant.text.encode("utf-8", "surrogatepass"))
        result = run_command("check", "--config", str(path), cwd=root, timeout=20)
        assert result.returncode in (0, 2, 3), (mutant.text, result.stderr)
        assert "Traceback" not in result.stderr
        if result.returncode == 2:
            for line in result.stderr.splitlines():
                assert line.startswith(("hearthlink.toml: ", f"{path}: ")), line
