"""The sentinel's watching shell: the groups it keeps, ``bye``, and what it execs at the end.

The real ``/bin/sh`` runs :data:`WATCH`, fed through a real pipe; in place of the sweep's
``python -S -I -c BOOT`` it execs a ``python -c`` that prints the arguments it was given
(``-S -I`` are the interpreter's own options, so the program still runs).
"""

from __future__ import annotations

import json
import subprocess
import sys

from hearthlink_trio.process.sentinel import NAME, WATCH

#: Stands in for the sweep: prints what the sweep would be given.
ECHO = "import json, sys; print(json.dumps(sys.argv[1:]))"


def _watch(lines: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "/src", ECHO, "4242", "4242-77", "/sys/fs/cgroup/x"]
    return subprocess.run(
        ["/bin/sh", "-c", WATCH, NAME, *args],
        input=lines,
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )


def test_end_of_file_execs_the_sweep_with_the_groups_still_recorded() -> None:
    out = _watch("+ 10 100\n+ 11 111\n+ 110 5\n+ 1 9\n- 11\n- 99\n- 1\n+ 12 120\n")
    assert json.loads(out.stdout) == [
        "/src",
        "4242",
        "4242-77",
        "/sys/fs/cgroup/x",
        "10:100",
        "110:5",
        "12:120",
    ]


def test_a_group_recorded_again_after_its_drop_is_kept_once() -> None:
    out = _watch("+ 10 100\n- 10\n+ 10 200\n")
    assert json.loads(out.stdout)[4:] == ["10:200"]


def test_no_group_left_execs_the_sweep_with_none() -> None:
    out = _watch("+ 10 100\n- 10\n")
    assert json.loads(out.stdout) == ["/src", "4242", "4242-77", "/sys/fs/cgroup/x"]


def test_bye_exits_at_once_without_a_sweep() -> None:
    out = _watch("+ 10 100\nbye\n+ 11 111\n")
    assert out.stdout == ""
    assert out.returncode == 0
