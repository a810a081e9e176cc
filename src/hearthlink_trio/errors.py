"""The exception tree, and the one place that maps each kind of failure to an exit code.

``HearthlinkError`` → ``ConfigError`` (2) | ``PreflightError`` (3). The command line
catches ``HearthlinkError`` and exits with ``exit_code``; runtime failures (a critical
service given up) are the supervisor's exit code 1, and a stopped-by-force run's 130.
"""

from __future__ import annotations

from collections.abc import Sequence


class HearthlinkError(Exception):
    """Base of every error hearthlink reports to its user."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(HearthlinkError):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    exit_code = 2

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class PreflightError(HearthlinkError):
    """The machine is not ready for the services (port busy, another supervisor, …)."""

    exit_code = 3

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


EXIT_OK = 0
EXIT_FATAL = 1
EXIT_PREFLIGHT = 3
EXIT_FORCED = 130
#: A service's exit status for "my configuration is wrong, restarting will not help"
#: (sysexits' EX_CONFIG).
EX_CONFIG = 78
