"""The event stream, stop/start/reload, the peer check and the config-tolerant clients,
against a real supervisor with real services."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hearthlink_trio.control.client import ControlClient
from hearthlink_trio.control.errors import ControlError, UnknownService
from tests.helpers import wait_for
from tests.stack import Running, Stack, run_command, running

CHATTER = Path(__file__).parents[1] / "fixtures" / "chatter.py"


@pytest.fixture
def root() -> Iterator[Path]:
    # Short, so the socket path stays under the 108-byte limit; under /var/tmp (1777) so
    # that the peer-check test's other user can reach the socket at all.
    with tempfile.TemporaryDirectory(prefix="hl-", dir="/var/tmp") as tmp:
        yield Path(tmp)


def socket_of(stack: Stack) -> Path:
    return stack.data_dir / "run" / "hearthlink.sock"


def client_of(stack: Stack) -> ControlClient:
    return ControlClient(socket_of(stack))


def wait_healthy(stack: Stack, *names: str, timeout: float = 15.0) -> dict[str, Any]:
    client = client_of(stack)

    def ready() -> dict[str, Any] | None:
        try:
            health = client.health()
        except ControlError:
            return None
        states = {s["name"]: s["state"] for s in health["services"]}
        return health if all(states.get(n) == "healthy" for n in names) else None

    result: dict[str, Any] = wait_for(ready, timeout=timeout, what=f"{names} healthy")
    return result


@contextlib.contextmanager
def stream(stack: Stack, query: str = "") -> Iterator[Iterator[dict[str, Any]]]:
    """The event stream's objects, each read within 15 s (a stall fails the test)."""
    transport = httpx.HTTPTransport(uds=os.fspath(socket_of(stack)))
    with (
        httpx.Client(transport=transport, timeout=15, trust_env=False) as client,
        client.stream("GET", f"http://x/v1/events{query}") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        yield (json.loads(line) for line in response.iter_lines() if line)


def read_until(
    events: Iterator[dict[str, Any]], done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    for event in events:
        seen.append(event)
        if done(seen):
            return seen
    raise AssertionError(f"the stream ended first: {seen[-5:]}")


def test_snapshot_then_crash_as_state_events_in_order_and_output(root: Path) -> None:
    stack = Stack(root)
    stack.add("steady")
    stack.add("crashy", env={"TESTSVC_EXIT_AFTER": "0.5"})
    with running(stack.write()) as sup:
        wait_healthy(stack, "steady")
        with stream(stack) as events:
            snapshot = next(events)
            assert snapshot["type"] == "snapshot"
            assert {s["name"] for s in snapshot["services"]} == {"steady", "crashy"}
            steady = next(s for s in snapshot["services"] if s["name"] == "steady")
            assert steady["state"] == "healthy"
            assert steady["rss_bytes"] > 0
            assert steady["cpu_percent"] >= 0

            seen = read_until(
                events,
                lambda seen: (
                    sum(
                        e["type"] == "state"
                        and e["service"] == "crashy"
                        and e["state"] == "healthy"
                        for e in seen
                    )
                    >= 2
                ),
            )
        crashy = [e for e in seen if e["type"] == "state" and e["service"] == "crashy"]
        # Each state event follows from the one before it.
        for before, after in itertools.pairwise(crashy):
            assert after["previous"] == before["state"], crashy
        states = [e["state"] for e in crashy]
        assert "backoff" in states
        assert states.index("backoff") < len(states) - 1
        assert states[states.index("backoff") + 1] == "starting"
        assert all(e["ts"] <= f["ts"] for e, f in itertools.pairwise(crashy))
        output = [e for e in seen if e["type"] == "output" and e["service"] == "crashy"]
        assert any(e["line"].startswith("crashy exiting with status 1") for e in output), output
        assert any("crashy listening on" in e["line"] for e in output)
        assert all(e["stream"] in ("stdout", "stderr") for e in output)
        supervisor = [e for e in seen if e["type"] == "supervisor"]
        assert any(e["event"] == "restarting" or "restart" in e["message"] for e in supervisor)
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0


def test_filters_by_service_and_type(root: Path) -> None:
    stack = Stack(root)
    stack.add("one")
    stack.add("two")
    with running(stack.write()):
        wait_healthy(stack, "one", "two")
        client = client_of(stack)
        with stream(stack, "?service=two&types=state,output") as events:
            snapshot = next(events)
            assert [s["name"] for s in snapshot["services"]] == ["two"]
            client.restart("one")
            client.restart("two")
            seen = read_until(
                events,
                lambda seen: any(e["type"] == "state" and e["state"] == "healthy" for e in seen),
            )
        assert {e["service"] for e in seen} == {"two"}
        assert {e["type"] for e in seen} <= {"state", "output"}
        assert any(e["type"] == "output" for e in seen)

        bad = httpx.Client(transport=httpx.HTTPTransport(uds=os.fspath(socket_of(stack))))
        with bad:
            assert bad.get("http://x/v1/events?types=state,bogus").status_code == 400
            assert bad.get("http://x/v1/events?service=nope").status_code == 404
            assert bad.post("http://x/v1/events").status_code == 405


def _raw_request(path: Path, request: bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.fspath(path))
    sock.sendall(request)
    return sock


def test_a_reader_that_stops_reading_is_dropped_and_probes_go_on(root: Path) -> None:
    stack = Stack(root)
    stack.add("chatty", script=str(CHATTER))
    with running(stack.write()) as sup:
        wait_healthy(stack, "chatty")
        stalled = _raw_request(socket_of(stack), b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        with stalled:
            # Reads nothing: the socket's buffers fill, then its 1000 events.
            sup.wait_line(r"Event stream: dropped a reader that was too slow", timeout=30)
            # Meanwhile (and after) another reader gets its probe results on time.
            with stream(stack, "?service=chatty&types=probe") as events:
                next(events)
                probes = read_until(events, lambda seen: len(seen) >= 3)
            assert all(p["ok"] for p in probes)
            assert probes[0]["ts"] < probes[1]["ts"] < probes[2]["ts"]
            # The dropped reader, reading again, gets what was buffered, then why it ends.
            stalled.settimeout(15)
            data = b""
            while b'"type":"dropped"' not in data:
                chunk = stalled.recv(1 << 16)
                assert chunk, "the stream ended without saying why"
                data += chunk
            assert b"fell 1000 events behind" in data
        health = client_of(stack).health()
        assert health["services"][0]["state"] == "healthy"


def test_stop_start_reload_through_the_api_and_the_cli(root: Path) -> None:
    stack = Stack(root)
    stack.add("base")
    stack.add("app", depends_on=["base"])
    config = stack.write()
    with running(config) as sup:
        before = wait_healthy(stack, "base", "app")
        app_pid = next(s["pid"] for s in before["services"] if s["name"] == "app")
        client = client_of(stack)

        answer = client.stop_service("base")
        assert answer == {
            "accepted": True,
            "action": "stop",
            "service": "base",
            "result": "stopping",
        }

        def state(name: str) -> str:
            return str(next(s for s in client.health()["services"] if s["name"] == name)["state"])

        wait_for(lambda: state("base") == "stopped", what="base stopped")
        assert client.stop_service("base")["result"] == "already stopped"
        # Its dependent keeps running, the same process.
        after = client.health()["services"]
        assert next(s for s in after if s["name"] == "app")["pid"] == app_pid
        assert client.start_service("base")["result"] == "starting"
        wait_healthy(stack, "base")
        assert client.start_service("base")["result"] == "not stopped (healthy)"

        done = run_command("stop", "app", "--config", str(config), cwd=root)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "Stop of app requested: stopping"
        wait_for(lambda: state("app") == "stopped", what="app stopped")
        done = run_command("start", "app", "--config", str(config), cwd=root)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "Start of app requested: starting"
        wait_healthy(stack, "app")
        for command in ("stop", "start", "restart"):
            done = run_command(command, "nope", "--config", str(config), cwd=root)
            assert done.returncode == 1
            assert "no service named 'nope'" in done.stderr
        with pytest.raises(UnknownService):
            client.stop_service("nope")

        answer = client.reload()
        assert answer["accepted"] is True
        assert answer["result"] == f"reloading {config}"
        sup.wait_line(r"Config reloaded: no service changed")

        done = run_command("stop", "--config", str(config), cwd=root)
        assert done.returncode == 0, done.stderr
        assert sup.wait() == 0
    for command in (["stop"], ["stop", "app"], ["start", "app"]):
        done = run_command(*command, "--config", str(config), cwd=root)
        assert done.returncode == 1
        assert "no hearthlink supervisor is running" in done.stderr


def test_clients_find_the_supervisor_while_the_config_has_errors(root: Path) -> None:
    stack = Stack(root)
    stack.add("svc")
    config = stack.write()
    with running(config) as sup:
        wait_healthy(stack, "svc")
        config.write_text(config.read_text() + "\n[services.broken]\nport = 'x'\n")
        note = (
            f"note: {config} has errors (hearthlink check shows them); "
            f"using its data dir {stack.data_dir}"
        )
        done = run_command("status", "--config", str(config), cwd=root)
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip() == note
        assert "svc" in done.stdout
        done = run_command("status", "--json", "--config", str(config), cwd=root)
        assert json.loads(done.stdout)["services"][0]["name"] == "svc"
        done = run_command("restart", "svc", "--config", str(config), cwd=root)
        assert done.returncode == 0, done.stderr
        done = run_command("logs", "svc", "--config", str(config), cwd=root)
        assert done.returncode == 0, done.stderr
        assert "svc listening on" in done.stdout
        done = run_command("stop", "--config", str(config), cwd=root)
        assert done.returncode == 0, done.stderr
        assert sup.wait() == 0
    done = run_command("status", "--config", str(config), cwd=root)
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == note


def test_status_watch_redraws_and_exits_0_on_ctrl_c(root: Path) -> None:
    stack = Stack(root)
    stack.add("svc")
    config = stack.write()
    done = run_command("status", "--watch", "--config", str(config), cwd=root)
    assert done.returncode == 1
    assert "no hearthlink supervisor is running" in done.stderr
    with running(config):
        wait_healthy(stack, "svc")
        watch = Running(["status", "--watch", "--config", str(config)], root)
        try:
            wait_for(lambda: re.search(r"svc +healthy", watch.stdout()), what="the table")
            client_of(stack).stop_service("svc")
            wait_for(lambda: re.search(r"svc +stopped", watch.stdout()), what="the new table")
            assert "\x1b[H\x1b[2J" in watch.stdout()
            watch.signal(signal.SIGINT)
            assert watch.wait() == 0
        finally:
            watch.kill()


def _as_other_user(path: Path, uid: int) -> bytes:
    """What a process running as ``uid`` gets back for ``GET /v1/health`` on ``path``."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to uid, ask, report, leave at once
        try:
            os.close(read)
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(os.fspath(path))  # the file system lets it in: errors are real
                answer = b""
                # A refused peer sees its connection closed: EOF, or EPIPE/ECONNRESET.
                with contextlib.suppress(OSError):
                    sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
                    while chunk := sock.recv(4096):
                        answer += chunk
                        if b"\r\n\r\n" in answer:
                            break
            os.write(write, b"ok:" + answer)
        except BaseException as exc:
            os.write(write, f"error:{exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        result = f.read()
    os.waitpid(pid, 0)
    return result


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a client as another user")
def test_a_peer_of_another_user_is_refused(root: Path) -> None:
    stack = Stack(root)
    stack.add("svc")
    with running(stack.write()) as sup:
        wait_healthy(stack, "svc")
        path = socket_of(stack)
        # Open the file system's doors: from here only the peer check keeps others out.
        for folder in (root, stack.data_dir, path.parent):
            folder.chmod(0o755)
        path.chmod(0o666)
        nobody = _as_other_user(path, 65534)
        assert nobody == b"ok:", nobody  # accepted by the kernel, closed unanswered
        sup.wait_line(r"control API: refused a connection from pid \d+ running as uid 65534")
        ours = _as_other_user(path, os.getuid())
        assert ours.startswith(b"ok:HTTP/1.1 200"), ours
        assert client_of(stack).health()["services"][0]["state"] == "healthy"
        assert sup.proc.poll() is None
