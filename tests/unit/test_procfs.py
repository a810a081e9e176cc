"""/proc/<pid>/stat, read in one place (procfs), checked against real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hearthlink_trio
from hearthlink_trio.process.procfs import ProcStat, parse_stat, proc_stat
from hearthlink_trio.process.usage import UsageSampler

TICKS = os.sysconf("SC_CLK_TCK")


def test_a_command_name_with_spaces_and_parentheses_is_skipped_whole() -> None:
    # Fields 3.. of proc(5): state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime ...
    rest = b"S 41 42 42 0 -1 4194560 10 0 0 0 7 3 0 0 20 0 1 0 98765 1000 50"
    stat = parse_stat(b"4242 (a) S 1 (b)) " + rest + b"\n")
    assert stat == ProcStat(state="S", pgid=42, start_ticks=98765, ppid=41, utime=7, stime=3)


@pytest.mark.parametrize("data", [b"", b"4242 (name) S 1 2", b"4242 (x) S one 2 3" + b" 0" * 20])
def test_a_text_that_is_not_a_stat_line_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"not a /proc/<pid>/stat line|invalid literal"):
        parse_stat(data)


def test_a_real_child_whose_name_holds_parentheses(tmp_path: Path) -> None:
    # The kernel's command name is the program's file name: make it one that would fool a
    # parser splitting at the first ')'.
    program = tmp_path / "x) R 1 2 (y"
    sleep = shutil.which("sleep")
    assert sleep is not None
    shutil.copy(sleep, program)
    child = subprocess.Popen([str(program), "30"], start_new_session=True)
    try:
        stat = proc_stat(child.pid)
        assert stat is not None
        assert stat.ppid == os.getpid()
        assert stat.pgid == child.pid  # a session (and group) of its own
        assert stat.state in ("S", "R")
        assert stat.start_ticks > 0
    finally:
        child.kill()
        child.wait(timeout=5)
    assert proc_stat(child.pid) is None


def test_cpu_times_match_what_the_kernel_tells_this_process() -> None:
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass  # burn some CPU so that the figures are not all zero
    stat = proc_stat(os.getpid())
    times = os.times()
    assert stat is not None
    # Both count every thread of this process; allow a tick or two of rounding each.
    assert stat.utime / TICKS == pytest.approx(times.user, abs=3 / TICKS)
    assert stat.stime / TICKS == pytest.approx(times.system, abs=3 / TICKS)
    assert stat.utime + stat.stime >= 0.3 * TICKS - 2
    cpu, rss = UsageSampler().usage(os.getpid())
    assert cpu is not None and cpu > 0 and rss is not None and rss > 0


def test_no_such_process_is_none() -> None:
    assert proc_stat(2**22 + 12345) is None


def test_the_sentinels_modules_load_only_the_stdlib() -> None:
    # The sentinel runs `python -S -I` with nothing but our own folder on its path.
    src = str(Path(hearthlink_trio.__file__).parent.parent)
    code = (
        f"import sys; sys.path.insert(0, {src!r}); import json; "
        "import hearthlink_trio.process.sentinel_main; print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-I", "-c", code], capture_output=True, text=True, check=True
    )
    loaded = json.loads(out.stdout)
    assert "hearthlink_trio.process.procfs" in loaded
    foreign = [
        name
        for name in loaded
        if name.split(".")[0] not in sys.stdlib_module_names
        and name.split(".")[0] not in ("hearthlink_trio", "__main__")
    ]
    assert foreign == []
