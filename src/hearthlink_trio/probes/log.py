"""The log probe: ready once a line of the service's own output matches a pattern.

The lines are the ones the output pumps already read: the watch is fed as they pass, and
reads nothing itself. It is a readiness probe only: after a match the service counts as
healthy until its process exits.
"""

from __future__ import annotations

import re


class LogWatch:
    """Watches one process's output lines for ``pattern``."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._regex = re.compile(pattern)
        self.seen = False

    def feed(self, stream: str, lines: list[str]) -> None:
        if not self.seen and any(self._regex.search(line) for line in lines):
            self.seen = True

    def result(self) -> str | None:
        """None once a line matched, else why not yet."""
        return None if self.seen else f"no output line matched {self.pattern!r} yet"
