"""The control API's errors, in hearthlink's one exception tree (exit code 1)."""

from __future__ import annotations

from hearthlink_trio.errors import ExitCode, HearthlinkError

#: Longest ``sun_path`` Linux accepts, terminating NUL included (unix(7)).
MAX_SOCKET_PATH_BYTES = 108


class ControlError(HearthlinkError):
    """Talking to, or serving, the control API failed."""

    exit_code = ExitCode.FATAL


class NotRunning(ControlError):
    """No supervisor answers on the control socket."""


class UnknownService(ControlError):
    """The supervisor has no service of that name."""


class ControlSocketError(ControlError):
    """The control socket cannot be created (in use by another supervisor, bad path...)."""
