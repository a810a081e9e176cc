"""Shared fixtures: every test is checked for leaked processes.

The pytest process makes itself a child subreaper, so any process a test starts (and any
grandchild that outlives its parent) stays a descendant of pytest. After each test the
``no_leaked_processes`` fixture waits (bounded) for the descendants the test added to be
gone, kills any that are left by pid, and fails the test that leaked them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.helpers import descendants, reap_zombies

PR_SET_CHILD_SUBREAPER = 36
LEAK_GRACE_SECONDS = 5.0


def pytest_configure(config: pytest.Config) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # The configs the tests run are cached by hearthlink: keep those entries out of ~/.cache.
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="hearthlink-test-cache-")


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    before = descendants()
    yield
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    while True:
        reap_zombies()
        leaked = {pid: cmd for pid, cmd in descendants().items() if pid not in before}
        if not leaked:
            return
        if time.monotonic() > deadline:
            for pid in leaked:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
            reap_zombies()
            pytest.fail(f"test leaked processes: {leaked}")
        time.sleep(0.05)
