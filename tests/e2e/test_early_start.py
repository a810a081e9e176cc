"""The start of ``hearthlink run`` before the argument parser loads, and the cgroup join of
processes that fork at once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from hearthlink_trio.cli import early
from hearthlink_trio.process import cgroups
from tests.helpers import pid_alive, wait_for
from tests.stack import all_gone, children, running, sentinel_of, write_config

SLEEP = "/bin/sleep"


def _cgroups_possible() -> bool:
    run, _ = cgroups.create_run_cgroup()
    if run is None:
        return False
    run.rmdir()
    return True


def _forker_config(tmp_path: Path, names: list[str]) -> Path:
    # Each service forks two children the moment its shell starts: before the supervisor
    # can have moved it into its cgroup.
    script = f"{SLEEP} 600 & {SLEEP} 600 & exec {SLEEP} 600"
    return write_config(
        tmp_path / "hearthlink.toml",
        {
            "supervisor": {"data_dir": str(tmp_path / "data"), "stop_timeout": 2.0},
            **{
                f"services.{name}": {"command": ["sh", "-c", script], "probe": "none"}
                for name in names
            },
        },
    )


def _descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        for task in os.listdir(f"/proc/{current}/task"):
            text = Path(f"/proc/{current}/task/{task}/children").read_text()
            kids = [int(word) for word in text.split()]
            found += kids
            pending += kids
    return found


@pytest.mark.skipif(not _cgroups_possible(), reason="cgroup v2 not writable here")
def test_children_forked_before_the_cgroup_join_are_moved_with_their_parent(
    tmp_path: Path,
) -> None:
    names = ["a", "b", "c"]
    config = _forker_config(tmp_path, names)
    with running(config) as sup:
        for name in names:
            sup.wait_line(f"^Started {name} service")
        sentinel = sentinel_of(sup)
        trees: dict[int, list[int]] = {}

        def forked() -> bool:
            services = [pid for pid in children(sup.pid) if pid != sentinel]
            trees.update({pid: _descendants(pid) for pid in services})
            return len(services) == len(names) and all(len(t) == 2 for t in trees.values())

        wait_for(forked, timeout=5.0, what="every service and its two children")
        every = [pid for leader, kids in trees.items() for pid in (leader, *kids)]
        for pid in every:
            text = Path(f"/proc/{pid}/cgroup").read_text()
            assert any(f"/hearthlink-{sup.pid}/{name}\n" in text for name in names), (pid, text)
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone(every)


def test_a_prepared_run_for_another_command_line_is_closed_unused(tmp_path: Path) -> None:
    config = _forker_config(tmp_path, ["a"])
    early.begin(["run", "--config", str(config)])
    try:
        prepared = early._early.prepared if early._early else None
        assert prepared is not None
        ((child, _),) = prepared.launcher._early.values()
        leader = child.pid
        kids = wait_for(
            lambda: len(k := _descendants(leader)) == 2 and k,
            timeout=5.0,
            what="the service's two children",
        )
        # The parser read names or options the early start did not: nothing prepared is used.
        assert early.take((config,), "human", plain=False) is None
        assert not pid_alive(leader)
        all_gone(list(kids))
    finally:
        early.discard()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)


@pytest.mark.parametrize("setpriv", ["on", "off"])
def test_a_program_that_cannot_start_is_reported_as_such(tmp_path: Path, setpriv: str) -> None:
    # Each program passes the preflight, then makes itself unstartable and exits: its
    # restart meets what exec would meet.
    gone, denied = tmp_path / "gone.sh", tmp_path / "denied.sh"
    gone.write_text('#!/bin/sh\nrm -f "$0"\nexit 1\n')
    denied.write_text('#!/bin/sh\nchmod -x "$0"\nexit 1\n')
    for script in (gone, denied):
        script.chmod(0o755)
    config = write_config(
        tmp_path / "hearthlink.toml",
        {
            "supervisor": {"data_dir": str(tmp_path / "data"), "stop_timeout": 2.0},
            "restart": {"initial_backoff": 0.05, "max_attempts": 1},
            "services.gone": {"command": [str(gone)], "probe": "none"},
            "services.denied": {"command": [str(denied)], "probe": "none"},
        },
    )
    with running(config, env={"HEARTHLINK_SETPRIV": setpriv}) as sup:
        sup.wait_line("^gone service could not start: No such file or directory$")
        sup.wait_line("^denied service could not start: Permission denied$")
        sup.signal(signal.SIGTERM)
        sup.wait()
