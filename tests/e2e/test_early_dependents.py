"""Dependents started before the supervisor loads: the launcher's thread starts a service
once what it depends on passes its probe, the supervisor announces it after its
dependencies (the log keeps that order), and the process lives on as any other (the thread
that started it stays, or its parent-death signal would kill it)."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

from tests.helpers import pid_alive, wait_for
from tests.stack import Stack, running


def thread_children(pid: int) -> dict[int, set[int]]:
    """The children of each thread of process ``pid`` (thread id -> child pids)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "children").read_text()
        except OSError:
            continue
        found[int(task.name)] = {int(child) for child in text.split()}
    return found


def story(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if re.match(r"^(Started \w+ service|\w+ service is healthy|\w+ service exited)", line)
    ]


def test_a_dependent_is_started_by_the_launcher_and_announced_after_its_dependency(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path)
    # ``none`` passes at once: the launcher starts b as soon as a has started.
    stack.add("a", probe="none")
    stack.add("b", depends_on=["a"])
    stack.add("c", depends_on=["b"])
    with running(stack.write()) as sup:
        sup.wait_line(r"^c service is healthy$")
        (b,) = stack.pids("b")
        # b's parent is the supervisor, but not its main thread: the launcher's thread.
        children = thread_children(sup.pid)
        assert b not in children[sup.pid]
        assert any(b in kids for tid, kids in children.items() if tid != sup.pid), children
        lines = [re.sub(r" on port \d+ with PID \d+", "", line) for line in story(sup.stderr())]
        assert lines == [
            "Started a service",
            "a service is healthy",
            "Started b service",
            "b service is healthy",
            "Started c service",
            "c service is healthy",
        ]
        assert f"Started b service on port {stack.port('b')} with PID {b}" in sup.stderr()
        # Alive a while later, as every other, with nothing restarted.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert pid_alive(b)
            time.sleep(0.05)
        assert len(stack.pids()) == 3
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    assert "exited" not in sup.stderr()
    wait_for(lambda: not any(pid_alive(pid) for pid in stack.pids()), timeout=5)


def test_a_chain_of_http_services_starts_in_order_and_each_once(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    names = ["s0", "s1", "s2", "s3"]
    for index, name in enumerate(names):
        stack.add(name, **({"depends_on": [names[index - 1]]} if index else {}))
    with running(stack.write()) as sup:
        sup.wait_line(r"^s3 service is healthy$")
        lines = [re.sub(r" on port \d+ with PID \d+", "", line) for line in story(sup.stderr())]
        assert lines == [
            text
            for name in names
            for text in (f"Started {name} service", f"{name} service is healthy")
        ]
        pids = stack.pids()
        assert len(pids) == 4 and all(pid_alive(pid) for pid in pids)
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    wait_for(lambda: not any(pid_alive(pid) for pid in stack.pids()), timeout=5)


def test_sigkill_of_the_supervisor_takes_the_services_the_thread_started(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("a", probe="none")
    stack.add("b", depends_on=["a"])
    with running(stack.write()) as sup:
        sup.wait_line(r"^b service is healthy$")
        pids = stack.pids()
        assert len(pids) == 2
        sup.kill()
        wait_for(lambda: not any(pid_alive(pid) for pid in pids), timeout=5, what="services gone")


def test_a_stop_while_the_launcher_starts_dependents_is_graceful(tmp_path: Path) -> None:
    # a passes at once, so the launcher's thread starts b, then c once b answers, while the
    # supervisor loads: a SIGTERM at each of these moments stops whatever started, each
    # announced before the stop line and said stopped after it, and leaves nothing.
    for delay in (0.0, 0.005, 0.02, 0.05, 0.1):
        root = tmp_path / f"run-{delay}"
        root.mkdir()
        stack = Stack(root)
        stack.add("a", probe="none")
        stack.add("b", depends_on=["a"])
        stack.add("c", depends_on=["b"])
        with running(stack.write()) as sup:
            wait_for(
                lambda sup=sup: bool(service_children(sup.pid)),
                timeout=15,
                interval=0.0005,
                what="a first service process",
            )
            time.sleep(delay)
            sup.signal(signal.SIGTERM)
            assert sup.wait(15) == 0, sup.stderr()
        err = sup.stderr()
        lines = err.splitlines()
        began = lines.index("Received SIGTERM, stopping all services")
        started = re.findall(r"Started (\w+) service on port \d+ with PID (\d+)", err)
        assert not [line for line in lines[began:] if line.startswith("Started ")], err
        for name, _ in started:
            assert f"Stopped {name} service" in err, err
        # No process of theirs went unannounced: each pid written is one announced.
        assert set(stack.pids()) <= {int(pid) for _, pid in started}, err
        wait_for(
            lambda stack=stack, started=started: (
                not any(pid_alive(pid) for pid in [*stack.pids(), *(int(p) for _, p in started)])
            ),
            timeout=5,
            what="every service gone",
        )


def service_children(pid: int) -> list[int]:
    """The children of ``pid`` that are not its sentinel."""
    found = []
    for kids in thread_children(pid).values():
        for child in kids:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue  # gone meanwhile
            if b"sentinel" not in cmdline:
                found.append(child)
    return found
