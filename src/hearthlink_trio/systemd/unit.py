"""The systemd user unit that runs ``hearthlink run`` (``hearthlink systemd [--install]``).

``Type=notify``: the supervisor reports ``READY=1`` once every service is healthy, status
text on changes and ``STOPPING=1`` at shutdown (:mod:`hearthlink_trio.sdnotify`), and pings
the watchdog. ``KillMode=control-group`` (systemd's default, written out) is the complete
no-orphan guarantee: whatever the supervisor leaves behind, systemd kills with the cgroup;
``Delegate=yes`` lets the supervisor give each service its own cgroup inside it.
``TimeoutStopSec`` lies above the supervisor's own worst-case shutdown, so systemd's
SIGKILL never cuts a clean stop short.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hearthlink_trio.errors import ConfigError

__all__ = [
    "UNIT_NAME",
    "default_exec_start",
    "enable_commands",
    "install_unit",
    "quote_environment",
    "quote_exec_arg",
    "quote_executable",
    "render_unit",
    "user_unit_dir",
]

UNIT_NAME = "hearthlink.service"
#: Added to the supervisor's worst-case shutdown for ``TimeoutStopSec``: output flushing,
#: the final SIGKILL sweeps and interpreter exit, with room to spare on a loaded machine.
STOP_TIMEOUT_MARGIN = 15.0
#: Pause before systemd restarts a supervisor that failed (``Restart=on-failure``).
RESTART_SEC = 2.0


def render_unit(
    *,
    exec_start: Sequence[str],
    config_path: Path | Sequence[Path] | None,
    data_dir: Path,
    stop_timeout_worst: float,
    watchdog_sec: float = 30.0,
) -> str:
    """The text of the user unit.

    Args:
        exec_start: the command that runs the supervisor, e.g.
            ``["/home/me/.venv/bin/hearthlink", "run"]`` (see :func:`default_exec_start`).
        config_path: appended as ``--config PATH`` when given (one for each of several
            files, merged in that order).
        data_dir: exported as ``HEARTHLINK_DATA_DIR``; must be absolute.
        stop_timeout_worst: the longest a requested shutdown of the supervisor can take, in
            seconds; ``TimeoutStopSec`` is this plus :data:`STOP_TIMEOUT_MARGIN`.
        watchdog_sec: ``WatchdogSec``; the supervisor pings at half of it.

    Raises:
        ValueError: an empty ``exec_start``, an executable systemd refuses to start (see
            :func:`quote_executable`), a relative path, or a timeout out of range.
    """
    if not exec_start:
        raise ValueError("exec_start must name the command that runs the supervisor")
    if not data_dir.is_absolute():
        raise ValueError(f"data_dir must be an absolute path, not {data_dir}")
    configs = [config_path] if isinstance(config_path, Path) else list(config_path or ())
    for config in configs:
        if not config.is_absolute():
            raise ValueError(f"config_path must be an absolute path, not {config}")
    if not (math.isfinite(stop_timeout_worst) and stop_timeout_worst >= 0):
        raise ValueError(f"stop_timeout_worst must be >= 0 seconds, not {stop_timeout_worst}")
    if not (math.isfinite(watchdog_sec) and watchdog_sec > 0):
        raise ValueError(f"watchdog_sec must be > 0 seconds, not {watchdog_sec}")

    executable, *args = exec_start
    if not os.path.isabs(executable):
        raise ValueError(f"the executable must be an absolute path, not {executable!r}")
    for config in configs:
        args += ["--config", os.fspath(config)]
    command_line = " ".join([quote_executable(executable), *map(quote_exec_arg, args)])
    stop_timeout = math.ceil(stop_timeout_worst + STOP_TIMEOUT_MARGIN)
    data_dir_assignment = f"HEARTHLINK_DATA_DIR={os.fspath(data_dir)}"
    lines = [
        "# hearthlink: the supervisor of the Hearthlink services, as a systemd user unit.",
        "# Written by `hearthlink systemd`; install it with `hearthlink systemd --install`.",
        "",
        "[Unit]",
        "Description=Hearthlink service supervisor",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={command_line}",
        f"Environment={quote_environment(data_dir_assignment)}",
        "SyslogIdentifier=hearthlink",
        f"WatchdogSec={_timespan(watchdog_sec)}",
        "Restart=on-failure",
        f"RestartSec={_timespan(RESTART_SEC)}",
        # A bad config (exit 2): restarting cannot help, so systemd must not.
        f"RestartPreventExitStatus={ConfigError.exit_code}",
        f"# Above the worst-case shutdown ({_timespan(stop_timeout_worst)}) plus a margin.",
        f"TimeoutStopSec={stop_timeout}s",
        "KillMode=control-group",
        # The supervisor may then give each service its own cgroup under the unit's.
        "Delegate=yes",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


def default_exec_start() -> list[str]:
    """The command that runs this installation's supervisor: the ``hearthlink`` script next
    to the running interpreter if there is one, else ``<python> -m hearthlink_trio``; with
    ``run`` appended."""
    # sys.executable is not resolved: in a venv, .venv/bin/python is what has our package.
    python = Path(sys.executable)
    script = python.with_name("hearthlink")
    if script.is_file() and os.access(script, os.X_OK):
        return [os.fspath(script), "run"]
    return [os.fspath(python), "-m", "hearthlink_trio", "run"]


def user_unit_dir() -> Path:
    """Where systemd looks for the user's own units: ``$XDG_CONFIG_HOME/systemd/user``,
    by default ``~/.config/systemd/user``."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config_home) / "systemd" / "user"


def install_unit(text: str, *, unit_dir: Path | None = None) -> Path:
    """Write ``text`` as ``hearthlink.service`` into ``unit_dir`` (default
    :func:`user_unit_dir`), replacing any earlier one atomically; return its path."""
    folder = user_unit_dir() if unit_dir is None else unit_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / UNIT_NAME
    tmp = path.with_name(f".{UNIT_NAME}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def enable_commands(path: Path) -> list[str]:
    """The commands that load the unit at ``path`` and start it now and at every login.

    (To keep it running while the user is logged out: ``loginctl enable-linger``.)
    """
    unit = path.name
    return [
        "systemctl --user daemon-reload",
        f"systemctl --user enable --now {unit}",
        f"systemctl --user status {unit}",
    ]


# systemd.syntax(7) and systemd.service(5), "Command lines": words are split on whitespace
# unless quoted; inside quotes C escapes apply; "%" starts a specifier in every setting, so
# it is doubled; "$" starts a variable in the arguments of an Exec line (not in its
# executable), so it is doubled there; a lone ";" separates commands, a quoted one does not.
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_NEEDS_QUOTES = frozenset(" \t\n\r\"'\\;")
#: systemd refuses to start an executable whose path holds one of these (string_is_safe()
#: in its source; seen as "Executable name contains special characters" from verify).
_UNSAFE_IN_EXECUTABLE = frozenset("\"'\\")


def quote_executable(path: str) -> str:
    """``path`` written as the executable (first word) of an ``Exec*=`` command line.

    Raises:
        ValueError: ``path`` holds a quote, a backslash or a control character, which
            systemd refuses in an executable's path however it is written.
    """
    if any(ch in _UNSAFE_IN_EXECUTABLE or _is_control(ch) for ch in path):
        raise ValueError(
            f"systemd cannot start {path!r}: an executable's path must not contain quotes, "
            "backslashes or control characters; install hearthlink under another path"
        )
    return _quote(path)


def quote_exec_arg(arg: str) -> str:
    """``arg`` written as one argument (a word after the first) of an ``Exec*=`` line."""
    return _quote(arg.replace("$", "$$"))


def quote_environment(assignment: str) -> str:
    """``NAME=value`` written as one assignment of ``Environment=`` ("$" is literal there)."""
    return _quote(assignment)


def _quote(word: str) -> str:
    word = word.replace("%", "%%")
    if word and not any(ch in _NEEDS_QUOTES or _is_control(ch) for ch in word):
        return word
    escaped = "".join(
        _C_ESCAPES.get(ch, f"\\x{ord(ch):02x}" if _is_control(ch) else ch) for ch in word
    )
    return f'"{escaped}"'


def _is_control(ch: str) -> bool:
    # Unit files are UTF-8: only ASCII control characters need an escape.
    return ord(ch) < 0x20 or ord(ch) == 0x7F


def _timespan(seconds: float) -> str:
    """Seconds as a systemd time span: "30s", "1.5s"."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"
