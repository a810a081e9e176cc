"""Restarts of a service with a held socket: rolling (new beside old) and recreate, under a
client that opens a fresh connection for every request."""

from __future__ import annotations

import json
import signal
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from hearthlink_trio.config import default_config_path
from tests.helpers import free_ports, pid_alive, wait_for
from tests.stack import Stack, all_gone, run_command, running


class ClientLoop:
    """Fresh connections to ``/health`` back to back, in a thread: who answered, what failed."""

    def __init__(self, port: int, *, pid: bool = True) -> None:
        self.port = port
        #: The answer names the pid that gave it (the test service); else its status is kept.
        self.pid = pid
        self.answered: list[int] = []
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        url = f"http://127.0.0.1:{self.port}/health"
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    body = json.loads(response.read())
                    self.answered.append(body["pid"] if self.pid else response.status)
            except Exception as exc:  # every failure counts, whatever its kind
                self.failed.append(repr(exc))
            self._stop.wait(0.005)

    @contextmanager
    def running(self) -> Iterator[ClientLoop]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(15)


def restart(config: Path, name: str) -> str:
    done = run_command("restart", name, "--config", str(config), cwd=config.parent)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_rolling_restart_refuses_nothing(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    # Half a second to start: with the old process stopped first, requests would wait or fail.
    stack.add("web", socket=True, env={"TESTSVC_DELAY": "0.5", "TESTSVC_GRACEFUL": "1"})
    config = stack.write()
    with running(config) as sup:
        sup.wait_line(r"^web service is healthy$")
        (old,) = stack.pids("web")
        with ClientLoop(stack.port("web")).running() as client:
            wait_for(lambda: len(client.answered) > 20, timeout=10)
            restart(config, "web")
            line = sup.wait_line(r"^Rolling restart of web: PID \d+ is ready, stopping PID \d+$")
            new = int(line[0].split("PID ")[1].split()[0])
            wait_for(lambda: not pid_alive(old), timeout=10)
            count = len(client.answered)
            wait_for(lambda: len(client.answered) > count + 20, timeout=10)
        assert client.failed == []
        # The old one answered until the new one was ready, then the new one.
        assert client.answered[0] == old and client.answered[-1] == new
        assert set(client.answered) == {old, new}
        # The new one was started beside the old one, before the old one stopped.
        lines = [k for k, name in stack.event_lines() if name == "web" and k in ("start", "stop")]
        assert lines == ["start", "start", "stop"], lines
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone([old, new])


def test_a_new_process_that_crashes_leaves_the_old_one_serving(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    fail = tmp_path / "fail"
    stack.add("web", socket=True, env={"TESTSVC_FAIL_FILE": str(fail)})
    config = stack.write()
    with running(config) as sup:
        sup.wait_line(r"^web service is healthy$")
        (old,) = stack.pids("web")
        fail.touch()
        with ClientLoop(stack.port("web")).running() as client:
            restart(config, "web")
            sup.wait_line(
                rf"^Rolling restart of web failed: the new process exited \(exit status 1\), "
                rf"web keeps running \(pid {old}\)$"
            )
            count = len(client.answered)
            wait_for(lambda: len(client.answered) > count + 10, timeout=10)
        assert client.failed == []
        assert set(client.answered) == {old}
        status = run_command("status", "--json", "--config", str(config), cwd=tmp_path)
        (web,) = json.loads(status.stdout)["services"]
        assert web["pid"] == old and web["status"] == "running"
        assert "rolling restart failed" in web["error_message"]
        # Once it can start, a restart asked again rolls.
        fail.unlink()
        restart(config, "web")
        sup.wait_line(r"^Rolling restart of web: PID \d+ is ready, stopping PID \d+$")
        wait_for(lambda: not pid_alive(old), timeout=10)
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone(stack.pids("web"))


def test_recreate_with_a_locked_folder_never_runs_two_and_refuses_nothing(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path)
    lock = tmp_path / "vault.lock"
    env = {"TESTSVC_LOCK": str(lock), "TESTSVC_DELAY": "0.3", "TESTSVC_GRACEFUL": "1"}
    stack.add("vault", socket=True, strategy="recreate", env=env)
    config = stack.write()
    with running(config) as sup:
        sup.wait_line(r"^vault service is healthy$")
        (old,) = stack.pids("vault")
        with ClientLoop(stack.port("vault")).running() as client:
            wait_for(lambda: len(client.answered) > 20, timeout=10)
            restart(config, "vault")
            sup.wait_line(r"^vault service is healthy$", count=2)
            count = len(client.answered)
            wait_for(lambda: len(client.answered) > count + 20, timeout=10)
        assert client.failed == []
        (new,) = set(stack.pids("vault")) - {old}
        assert set(client.answered) == {old, new}
        assert "cannot lock" not in sup.stdout()
        assert "Rolling restart" not in sup.stderr()
        # Stopped before the new one started: never two at once.
        lines = [k for k, name in stack.event_lines() if name == "vault" and k in ("start", "stop")]
        assert lines == ["start", "stop", "start"], lines
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone([old, new])


def test_a_reload_that_changes_the_env_rolls_and_refuses_nothing(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web", socket=True, env={"TESTSVC_DELAY": "0.5", "TESTSVC_GRACEFUL": "1"})
    config = stack.write()
    with running(config) as sup:
        sup.wait_line(r"^web service is healthy$")
        (old,) = stack.pids("web")
        with ClientLoop(stack.port("web")).running() as client:
            wait_for(lambda: len(client.answered) > 20, timeout=10)
            stack.services["web"]["env"]["CHANGED"] = "yes"
            stack.write()
            sup.signal(signal.SIGHUP)
            sup.wait_line(r"^Config reloaded: changed web$")
            sup.wait_line(r"^Rolling restart of web: PID \d+ is ready, stopping PID \d+$")
            wait_for(lambda: not pid_alive(old), timeout=10)
            (new,) = set(stack.pids("web")) - {old}
            wait_for(lambda: client.answered.count(new) > 20, timeout=10)
        assert client.failed == []
        assert set(client.answered) == {old, new}
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.port('web')}/env") as response:
            assert json.loads(response.read())["CHANGED"] == "yes"
        status = json.loads(
            run_command("status", "--json", "--config", str(config), cwd=tmp_path).stdout
        )
        (web,) = status["services"]
        assert (web["pid"], web["state"]) == (new, "healthy")
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone([old, new])


def test_the_default_stack_restarts_refusing_nothing(tmp_path: Path) -> None:
    """The bundled config (its four sockets held): Core rolls, the Vault is recreated, and a
    client of each sees no refused or failed request."""
    text = default_config_path().read_text()
    # One block: four calls of free_port() may hand out the same port twice.
    base = free_ports(4)
    ports = {name: base + i for i, name in enumerate(("alden", "vault", "core", "synapse"))}
    for name, seed in (("alden", 8888), ("vault", 8001), ("core", 8000), ("synapse", 8002)):
        text = text.replace(f"port = {seed}\n", f"port = {ports[name]}\n")
    text = text.replace('data_dir = "~/.local/share/hearthlink"', f'data_dir = "{tmp_path / "d"}"')
    config = tmp_path / "hearthlink.toml"
    config.write_text(text)
    with running(config) as sup:
        for name in ports:
            sup.wait_line(rf"^{name} service is healthy$", timeout=60)
        clients = {name: ClientLoop(ports[name], pid=False) for name in ("core", "vault")}
        with clients["core"].running(), clients["vault"].running():
            wait_for(lambda: all(len(c.answered) > 10 for c in clients.values()), timeout=20)
            restart(config, "core")
            sup.wait_line(
                r"^Rolling restart of core: PID \d+ is ready, stopping PID \d+$", timeout=60
            )
            restart(config, "vault")
            sup.wait_line(r"^vault service is healthy$", count=2, timeout=60)
            counts = {name: len(c.answered) for name, c in clients.items()}
            wait_for(
                lambda: all(len(c.answered) > counts[n] + 10 for n, c in clients.items()),
                timeout=20,
            )
        assert clients["core"].failed == [] and clients["vault"].failed == []
        assert "Rolling restart of vault" not in sup.stderr()
        sup.signal(signal.SIGTERM)
        assert sup.wait(timeout=30) == 0


def test_a_notify_service_rolls_on_the_new_process_own_ready(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    # It listens at once but says READY=1 only 0.5 s later: the old one's READY, long sent,
    # must not count for the new one.
    env = {"TESTSVC_NOTIFY": "0.5", "TESTSVC_GRACEFUL": "1"}
    stack.add("web", socket=True, probe="notify", env=env)
    config = stack.write()
    with running(config, "--log-format", "json") as sup:
        sup.wait_line(r'"event": "healthy"')
        (old,) = stack.pids("web")
        with ClientLoop(stack.port("web")).running() as client:
            restart(config, "web")
            (line,) = sup.wait_line(r'"event": "rolling_ready"')
            wait_for(lambda: not pid_alive(old), timeout=10)
        (new,) = set(stack.pids("web")) - {old}
        assert client.failed == []
        ready_at = datetime.fromisoformat(json.loads(line)["ts"]).timestamp()
        notified = [
            float(when)
            for kind, _, when in (entry.split() for entry in stack.events.read_text().splitlines())
            if kind == "notified"
        ]
        # The new process's own READY=1 (its second one in the file) came first.
        assert len(notified) == 2 and ready_at >= notified[1] - 0.002
        assert "ignored" not in sup.stderr()
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone([old, new])
