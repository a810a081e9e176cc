"""The exception tree, and the one table of exit codes.

``HearthlinkError`` → ``ConfigError`` (2) | ``UsageError`` (2) | ``PreflightError`` (3).
The command line catches ``HearthlinkError`` and exits with its ``exit_code``; a run's own
outcomes (a critical service given up, a stop forced by a second signal) are the
supervisor's return value. This module imports nothing, so the services use it too.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

#: The exit status by which a service says "my configuration is wrong; do not restart me".
EX_CONFIG = 78


class ExitCode(enum.IntEnum):
    """The exit codes of ``hearthlink`` commands."""

    OK = 0
    FATAL = 1  # a runtime failure (a critical service gave up), or "not running"
    CONFIG = 2  # bad config or usage
    PREFLIGHT = 3  # the machine is not ready (port busy, another supervisor, bad secret)
    FORCED = 130  # stopped by force (a second Ctrl-C)


#: Characters that would break a problem's line (``str.splitlines`` splits at each).
_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in [*range(0x20), 0x7F, 0x85, 0x2028, 0x2029]
}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


class HearthlinkError(Exception):
    """Base of every error hearthlink reports to its user: one line per problem."""

    exit_code = ExitCode.FATAL

    def __init__(self, problems: str | Sequence[str]) -> None:
        given = [problems] if isinstance(problems, str) else list(problems)
        # A problem is one line, whatever text it quotes (a file name or a key with a
        # newline in it): control characters are written as escapes.
        self.problems = [line.translate(_ESCAPES) for line in given]
        self.message = "\n".join(self.problems)
        super().__init__(self.message)


class ConfigError(HearthlinkError):
    """The configuration is invalid."""

    exit_code = ExitCode.CONFIG


class UsageError(HearthlinkError):
    """The command line asks for what the config does not have (a service, a profile)."""

    exit_code = ExitCode.CONFIG


class PreflightError(HearthlinkError):
    """The machine is not ready for the services (port busy, another supervisor, …)."""

    exit_code = ExitCode.PREFLIGHT
