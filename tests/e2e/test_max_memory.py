"""``max_memory`` with real processes: a service that allocates 20 MiB a second is restarted
once its memory stays above the limit; the meter reads real process groups and cgroups."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hearthlink_trio.process.memory import MemoryMeter
from tests.e2e.test_orphans import mode_env
from tests.helpers import wait_for
from tests.stack import Stack, run_command, running

MIB = 1024 * 1024
# Holds 64 MiB (filled: resident) in itself and 32 MiB in a child of its process group.
HOLDER = (
    "import os, subprocess, sys, time; "
    "child = subprocess.Popen([sys.executable, '-c', "
    "'import time; x = bytes([1]) * (32 << 20); print(1, flush=True); time.sleep(60)'], "
    "stdout=subprocess.PIPE); "
    "child.stdout.readline(); x = bytes([1]) * (64 << 20); "
    "print(child.pid, flush=True); time.sleep(60)"
)


def test_the_meter_sums_the_resident_memory_of_the_process_group() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        assert int(proc.stdout.readline()) > 0  # both hoards are filled
        used = MemoryMeter(None).read("holder", proc.pid)
        assert used is not None
        # Both processes' hoards, plus two interpreters (under 40 MiB together).
        assert 96 * MIB < used < 136 * MIB, used / MIB
        assert MemoryMeter(None).read("nobody", None) is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("mode", ["cgroup", "fallback"])
def test_a_growing_service_is_restarted_over_its_limit_with_the_reason(
    tmp_path: Path, mode: str
) -> None:
    stack = Stack(tmp_path)
    stack.restart.update(max_attempts=5, initial_backoff=0.1)
    stack.add("hog", max_memory="60M", env={"TESTSVC_GROW_MIB": "20"})
    stack.add("calm")
    config = stack.write()
    with running(config, env=mode_env(mode)) as sup:
        sup.wait_line(
            "^Process containment: cgroup v2"
            if mode == "cgroup"
            else r"^Process containment: process groups \+ subreaper"
        )
        sup.wait_line("^calm service is healthy$")
        # Python's own ~15-20 MiB, then 20 MiB more a second: over 60 MiB within ~3 s, and
        # restarted at the second reading in a row above it.
        (line,) = sup.wait_line(
            r"^hog service memory \d+ MiB over max_memory 60 MiB, scheduling restart$", timeout=20
        )
        used = int(line.split()[3])
        # Over the limit, and caught within a few readings of crossing it (each second of
        # lag on a loaded machine is 20 MiB more; unwatched it would grow to 400 MiB here).
        assert 60 < used < 200, line
        sup.wait_line(r"^Service hog restarted \(attempt 1\), next backoff: 0.2s$")
        result = run_command("status", "--json", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        services = {s["name"]: s for s in json.loads(result.stdout)["services"]}
        assert services["hog"]["restart_count"] >= 1
        # Known for every service, limited or not.
        assert services["calm"]["memory_bytes"] > 5 * MIB
        assert "memory_bytes" in services["hog"]
        # The calm one was never restarted.
        assert services["calm"]["restart_count"] == 0
        # The replacement records its pid once its interpreter runs: on a loaded machine that
        # can be after the restart line, so wait for it before stopping.
        wait_for(lambda: len(stack.pids("hog")) >= 2, what="the replacement hog's pid file")
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    assert len(stack.pids("hog")) >= 2
    assert len(stack.pids("calm")) == 1
