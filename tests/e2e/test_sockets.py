"""Held sockets: the supervisor binds a service's port once and passes it as fd 3."""

from __future__ import annotations

import json
import signal
import socket
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import descendants, free_port, pid_alive, wait_for
from tests.stack import Stack, all_gone, run_command, running

BUNDLED = ["{python}", "-m"]
ARGS = ["--host", "{host}", "--port", "{port}"]


def get(port: int, path: str = "/health", timeout: float = 3.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def test_the_socket_reaches_a_stdlib_service_as_fd_3(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web", socket=True)
    config = stack.write()
    port = stack.port("web")
    with running(config) as sup:
        sup.wait_line(r"^web service is healthy$")
        # It served on the passed socket (it says so), not on one it bound itself.
        said = f"web listening on {port} on passed fd 3 pid "
        wait_for(lambda: said in sup.stdout(), timeout=5, what=said)
        (pid,) = stack.pids("web")
        env = get(port, "/env")
        assert env["LISTEN_FDS"] == "1"
        assert env["LISTEN_FDNAMES"] == "web"
        assert env["LISTEN_PID"] == str(pid)
        assert get(port)["pid"] == pid
        # fd 3 of the service is the supervisor's listening socket: same inode.
        service_fd3 = Path(f"/proc/{pid}/fd/3").readlink()
        supervisor_fds = {p.readlink() for p in Path(f"/proc/{sup.pid}/fd").iterdir()}
        assert str(service_fd3).startswith("socket:[")
        assert service_fd3 in supervisor_fds
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone([pid])


def test_a_bundled_service_serves_on_the_passed_socket(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    port = free_port()
    stack.services["synapse"] = {
        "command": [*BUNDLED, "hearthlink_trio.services.synapse", *ARGS],
        "port": port,
        "socket": True,
    }
    config = stack.write()
    with running(config) as sup:
        sup.wait_line(r"^synapse service is healthy$")
        said = "(on the socket passed by the supervisor)"
        wait_for(lambda: said in sup.stdout(), timeout=5, what=said)
        (pid,) = [p for p, cmd in descendants(sup.pid).items() if "services.synapse" in cmd]
        # Its only listening socket is the one the supervisor holds: it bound none itself.
        fd3 = Path(f"/proc/{pid}/fd/3").readlink()
        supervisor_fds = {p.readlink() for p in Path(f"/proc/{sup.pid}/fd").iterdir()}
        assert fd3 in supervisor_fds
        assert listening_inodes(port) == {str(fd3).removeprefix("socket:[").removesuffix("]")}
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone([pid])


def listening_inodes(port: int) -> set[str]:
    """The inodes of the sockets listening on ``port`` (IPv4)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
            found.add(fields[9])
    return found


def test_without_socket_nothing_is_passed(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("plain")
    config = stack.write()
    with running(config) as sup:
        sup.wait_line(r"^plain service is healthy$")
        env = get(stack.port("plain"), "/env")
        assert "LISTEN_FDS" not in env and "LISTEN_PID" not in env
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0


def test_replicas_share_the_one_port(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web", socket=True, replicas=2)
    config = stack.write()
    port = stack.port("web")
    with running(config) as sup:
        sup.wait_line(r"^web-1 service is healthy$")
        sup.wait_line(r"^web-2 service is healthy$")
        pids = set(stack.pids("web-1") + stack.pids("web-2"))
        assert len(pids) == 2
        seen: set[int] = set()
        # Fresh connections on the one port reach both processes.
        wait_for(lambda: seen.add(get(port)["pid"]) or seen == pids, timeout=10)
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone(list(pids))


def test_a_busy_port_names_its_holder(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stack = Stack(tmp_path)
        stack.add("web", socket=True, port=port)
        with running(stack.write()) as sup:
            code = sup.wait()
        assert code != 0
        assert f"Port {port} unavailable for web service: Address already in use" in sup.stderr()


def test_a_reload_that_changes_the_port_rebinds(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web", socket=True)
    config = stack.write()
    old_port = stack.port("web")
    with running(config) as sup:
        sup.wait_line(r"^web service is healthy$")
        (old_pid,) = stack.pids("web")
        new_port = free_port()
        stack.services["web"]["port"] = new_port
        stack.write()
        sup.signal(signal.SIGHUP)
        sup.wait_line(r"^web service is healthy$", count=2)
        new_pid = get(new_port)["pid"]
        assert get(new_port, "/env")["LISTEN_PID"] == str(new_pid)
        assert new_pid != old_pid
        assert not pid_alive(old_pid)
        # The old port is closed: the supervisor no longer holds it.
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", old_port)) != 0
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone([new_pid])


def test_a_service_left_out_of_the_run_gets_its_socket_when_started(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web", socket=True)
    stack.add("other")
    config = stack.write()
    port = stack.port("web")
    with running(config, "other") as sup:
        sup.wait_line(r"^other service is healthy$")
        assert stack.pids("web") == []
        # Held from the start: connections wait in the backlog rather than being refused.
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        done = run_command("start", "web", "--config", str(config), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        sup.wait_line(r"^web service is healthy$")
        (pid,) = stack.pids("web")
        assert get(port, "/env")["LISTEN_PID"] == str(pid)
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone([pid])
