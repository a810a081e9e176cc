"""The rotating file of a service's log, whose write errors are reported, not printed.

Its own module: ``logging.handlers`` (and the pickle and socket modules it loads) is not
needed before the first services have started.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys


class QuietRotatingHandler(logging.handlers.RotatingFileHandler):
    """A rotating file whose write errors go to ``ServiceLog``, not to a traceback on stderr."""

    failure: OSError | None = None

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        self.failure = exc if isinstance(exc, OSError) else OSError(str(exc))
        # A failed flush leaves the lines in the stream's buffer, to be written (or to fail
        # again) with the next ones: drop them, so one full disk does not grow memory.
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.stream.close()
            self.stream = None
