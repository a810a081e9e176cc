"""The systemd user unit: its settings, quoting, installation, and systemd-analyze verify."""

from __future__ import annotations

import math
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hearthlink_trio.systemd.unit import (
    STOP_TIMEOUT_MARGIN,
    default_exec_start,
    enable_commands,
    install_unit,
    quote_environment,
    quote_exec_arg,
    quote_executable,
    render_unit,
    user_unit_dir,
)

REPO = Path(__file__).resolve().parents[2]
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def settings(unit: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit (comments and section headers left out)."""
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def verify(unit_path: Path, tmp_path: Path, *, home: Path | None = None) -> str:
    """Run ``systemd-analyze verify`` on the unit as a user unit; return its complaints."""
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": os.fspath(runtime)}
    if home is not None:
        env["HOME"] = os.fspath(home)
    command = ["systemd-analyze", "verify", "--user", os.fspath(unit_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    if result.returncode != 0 and "Failed to initialize manager" in result.stderr:
        # No user manager can be set up here: check the file with the system manager's rules.
        command.remove("--user")
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    # verify exits 0 on settings it merely ignores; those warnings name the unit's file.
    complaints = [line for line in result.stderr.splitlines() if unit_path.name in line]
    assert result.returncode == 0, result.stderr
    return "\n".join(complaints)


def test_render_settings(tmp_path: Path) -> None:
    unit = render_unit(
        exec_start=["/opt/hl/bin/hearthlink", "run"],
        config_path=Path("/etc/hl/hearthlink.toml"),
        data_dir=Path("/var/lib/hl"),
        stop_timeout_worst=40.0,
    )
    found = settings(unit)
    assert found["Type"] == ["notify"]
    assert found["NotifyAccess"] == ["main"]
    assert found["ExecStart"] == ["/opt/hl/bin/hearthlink run --config /etc/hl/hearthlink.toml"]
    assert found["Environment"] == ["HEARTHLINK_DATA_DIR=/var/lib/hl"]
    assert found["WatchdogSec"] == ["30s"]
    assert found["Restart"] == ["on-failure"]
    assert found["RestartPreventExitStatus"] == ["2"]
    assert found["TimeoutStopSec"] == [f"{math.ceil(40 + STOP_TIMEOUT_MARGIN)}s"]
    assert found["KillMode"] == ["control-group"]
    assert found["Delegate"] == ["yes"]
    assert found["WantedBy"] == ["default.target"]
    assert "[Unit]" in unit and "[Service]" in unit and "[Install]" in unit
    assert unit.endswith("\n")


def test_render_without_config_and_other_watchdog() -> None:
    unit = render_unit(
        exec_start=["/usr/bin/python3", "-m", "hearthlink_trio", "run"],
        config_path=None,
        data_dir=Path("/d"),
        stop_timeout_worst=10.5,
        watchdog_sec=1.5,
    )
    found = settings(unit)
    assert found["ExecStart"] == ["/usr/bin/python3 -m hearthlink_trio run"]
    assert found["WatchdogSec"] == ["1.5s"]
    assert found["TimeoutStopSec"] == [f"{math.ceil(10.5 + STOP_TIMEOUT_MARGIN)}s"]


@pytest.mark.parametrize(
    ("arg", "quoted"),
    [
        ("/usr/bin/hearthlink", "/usr/bin/hearthlink"),
        ("/home/me/My Apps/hl", '"/home/me/My Apps/hl"'),
        ("100%", "100%%"),
        ("$HOME", "$$HOME"),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        (";", '";"'),
        ("", '""'),
        ("tab\there", '"tab\\there"'),
    ],
)
def test_quote_exec_arg(arg: str, quoted: str) -> None:
    assert quote_exec_arg(arg) == quoted


@pytest.mark.parametrize(
    ("path", "quoted"),
    [
        ("/usr/bin/hearthlink", "/usr/bin/hearthlink"),
        ("/home/me/My Apps/hl", '"/home/me/My Apps/hl"'),
        ("/opt/50%/hl", "/opt/50%%/hl"),
        ("/opt/$x/hl", "/opt/$x/hl"),  # no variables in the executable: "$" stays single
    ],
)
def test_quote_executable(path: str, quoted: str) -> None:
    assert quote_executable(path) == quoted


@pytest.mark.parametrize("path", ["/home/o'brien/hl", '/a"b/hl', "/a\\b/hl", "/a\nb/hl"])
def test_quote_executable_refuses_what_systemd_cannot_start(path: str) -> None:
    with pytest.raises(ValueError, match="systemd cannot start"):
        quote_executable(path)


def test_quote_environment() -> None:
    assert quote_environment("A=/plain") == "A=/plain"
    assert quote_environment("A=/with space/50%/$x") == '"A=/with space/50%%/$x"'


@pytest.mark.parametrize(
    "kwargs",
    [
        {"exec_start": []},
        {"exec_start": ["hearthlink", "run"]},
        {"exec_start": ["/home/o'brien/hearthlink", "run"]},
        {"data_dir": Path("relative")},
        {"config_path": Path("relative.toml")},
        {"stop_timeout_worst": -1.0},
        {"stop_timeout_worst": math.inf},
        {"watchdog_sec": 0.0},
    ],
)
def test_render_rejects(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {
        "exec_start": ["/bin/hl", "run"],
        "config_path": None,
        "data_dir": Path("/d"),
        "stop_timeout_worst": 10.0,
        **kwargs,
    }
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked by reading it
        render_unit(**arguments)  # type: ignore[arg-type]


@needs_systemd_analyze
def test_rendered_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # Paths with spaces, "%", "$", ";" and quotes: the quoting must survive systemd's parser.
    odd = tmp_path / "odd dir 50% $HOME"
    odd.mkdir()
    program = odd / "hearth link"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    unit = render_unit(
        exec_start=[os.fspath(program), "run", ";", "a\\b"],
        config_path=tmp_path / 'it\'s my "config" 100% $USER.toml',
        data_dir=tmp_path / "o'brien's data 5% $x",
        stop_timeout_worst=40.0,
    )
    unit_path = install_unit(unit, unit_dir=tmp_path / "units")
    assert verify(unit_path, tmp_path) == ""


@needs_systemd_analyze
def test_default_exec_start_unit_passes_verify(tmp_path: Path) -> None:
    unit = render_unit(
        exec_start=default_exec_start(),
        config_path=None,
        data_dir=tmp_path / "data",
        stop_timeout_worst=10.0,
    )
    assert verify(install_unit(unit, unit_dir=tmp_path), tmp_path) == ""


@needs_systemd_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    # The check above means something: a broken setting is reported.
    unit = render_unit(
        exec_start=[sys.executable], config_path=None, data_dir=Path("/d"), stop_timeout_worst=1
    )
    path = install_unit(unit.replace("Type=notify", "Type=bogus"), unit_dir=tmp_path)
    assert "Type" in verify(path, tmp_path) or "type" in verify(path, tmp_path)


@needs_systemd_analyze
def test_static_example_unit_passes_verify(tmp_path: Path) -> None:
    home = tmp_path / "home"
    script = home / ".local" / "bin" / "hearthlink"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    unit_path = tmp_path / "hearthlink.service"
    shutil.copyfile(REPO / "config" / "hearthlink.service", unit_path)
    assert verify(unit_path, tmp_path, home=home) == ""
    found = settings(unit_path.read_text())
    assert found["ExecStart"] == ["%h/.local/bin/hearthlink run"]
    assert found["Type"] == ["notify"]


def test_default_exec_start_is_runnable() -> None:
    argv = default_exec_start()
    assert argv[-1] == "run"
    assert Path(argv[0]).is_absolute()
    assert os.access(argv[0], os.X_OK)


def test_install_unit(tmp_path: Path) -> None:
    path = install_unit("[Service]\nExecStart=/bin/true\n", unit_dir=tmp_path / "a" / "b")
    assert path == tmp_path / "a" / "b" / "hearthlink.service"
    assert path.read_text() == "[Service]\nExecStart=/bin/true\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    install_unit("replaced\n", unit_dir=tmp_path / "a" / "b")
    assert path.read_text() == "replaced\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["hearthlink.service"]


def test_install_unit_default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", os.fspath(tmp_path / "cfg"))
    assert user_unit_dir() == tmp_path / "cfg" / "systemd" / "user"
    assert install_unit("x\n") == tmp_path / "cfg" / "systemd" / "user" / "hearthlink.service"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", os.fspath(tmp_path / "home"))
    assert user_unit_dir() == tmp_path / "home" / ".config" / "systemd" / "user"


def test_enable_commands() -> None:
    path = Path("/home/me/.config/systemd/user/hearthlink.service")
    assert enable_commands(path) == [
        "systemctl --user daemon-reload",
        "systemctl --user enable --now hearthlink.service",
        "systemctl --user status hearthlink.service",
    ]


def test_several_config_files_each_get_their_config_option() -> None:
    unit = render_unit(
        exec_start=["/opt/hl/bin/hearthlink", "run"],
        config_path=[Path("/etc/hl/hearthlink.toml"), Path("/etc/hl/local.toml")],
        data_dir=Path("/var/lib/hl"),
        stop_timeout_worst=40.0,
    )
    assert settings(unit)["ExecStart"] == [
        "/opt/hl/bin/hearthlink run --config /etc/hl/hearthlink.toml --config /etc/hl/local.toml"
    ]
    with pytest.raises(ValueError, match="absolute"):
        render_unit(
            exec_start=["/opt/hl/bin/hearthlink", "run"],
            config_path=[Path("/etc/hl/hearthlink.toml"), Path("local.toml")],
            data_dir=Path("/var/lib/hl"),
            stop_timeout_worst=40.0,
        )
