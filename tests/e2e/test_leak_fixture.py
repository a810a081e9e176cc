"""The leak fixture itself: a grandchild orphaned by its parent is still found."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import descendants, pid_alive, wait_for

GRANDPARENT = (
    "import subprocess as s; "
    "p = s.Popen(['sleep', '30'], stdout=s.DEVNULL, stderr=s.DEVNULL); print(p.pid)"
)


def test_orphaned_grandchild_is_seen_and_can_be_removed() -> None:
    # The child starts a sleeping grandchild and exits at once, orphaning it.
    out = subprocess.run(
        [sys.executable, "-c", GRANDPARENT], capture_output=True, text=True, check=True
    )
    grandchild = int(out.stdout)
    try:
        assert grandchild in descendants()
    finally:
        subprocess.run(["kill", "-9", str(grandchild)], check=True)
    wait_for(lambda: not pid_alive(grandchild), timeout=5, what="grandchild to die")
    assert grandchild not in descendants()
