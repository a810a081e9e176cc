"""The control API: a real hypercorn server on a Unix socket, hit by ControlClient and curl."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from hearthlink_trio.control.client import ControlClient
from hearthlink_trio.control.errors import (
    ControlError,
    ControlSocketError,
    NotRunning,
    UnknownService,
)
from hearthlink_trio.control.server import serve_control


class FakeController:
    """A supervisor stand-in: fixed services, records what it is asked to do."""

    def __init__(self) -> None:
        self.services = {
            name: {
                "name": name,
                "status": "running",
                "port": port,
                "pid": 1000 + port,
                "started_at": 1_700_000_000.0,
                "health_check_url": f"http://127.0.0.1:{port}/health",
                "last_health_check": 1_700_000_100.0,
                "error_message": None,
                "restart_count": 0,
                "last_restart": None,
                "restart_backoff": 1.0,
            }
            for name, port in [("vault", 8001), ("core", 8000)]
        }
        self.restarted: list[str] = []
        self.shutdowns = 0
        self.fail_health = False

    def health(self) -> dict[str, Any]:
        if self.fail_health:
            raise RuntimeError("bug in the supervisor")
        return {"status": "healthy", "services": list(self.services.values())}

    def restart(self, name: str) -> str:
        if name not in self.services:
            raise KeyError(name)
        self.restarted.append(name)
        return "restarting"

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short, so the socket path stays under the 108-byte limit whatever the test's name.
    with tempfile.TemporaryDirectory(prefix="hl-") as tmp:
        yield Path(tmp)


@pytest.fixture
def sock_path(data_dir: Path) -> Path:
    return data_dir / "run" / "hearthlink.sock"


@asynccontextmanager
async def serving(path: Path, controller: FakeController) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, controller)
        yield nursery
        nursery.cancel_scope.cancel()


def raw_request(path: Path, method: str, url: str) -> httpx.Response:
    transport = httpx.HTTPTransport(uds=os.fspath(path))
    with httpx.Client(transport=transport, trust_env=False, timeout=5) as client:
        return client.request(method, f"http://x{url}")


async def test_client_health_restart_shutdown(sock_path: Path) -> None:
    controller = FakeController()
    client = ControlClient(sock_path)
    async with serving(sock_path, controller):
        health = await trio.to_thread.run_sync(client.health)
        assert health == json.loads(json.dumps(controller.health()))

        answer = await trio.to_thread.run_sync(client.restart, "vault")
        assert answer == {
            "accepted": True,
            "action": "restart",
            "service": "vault",
            "result": "restarting",
        }
        assert controller.restarted == ["vault"]

        with pytest.raises(
            UnknownService, match=r"no service named 'nope' \(services: core, vault\)"
        ):
            await trio.to_thread.run_sync(client.restart, "nope")
        assert controller.restarted == ["vault"]

        answer = await trio.to_thread.run_sync(client.shutdown)
        assert answer == {"accepted": True, "action": "shutdown"}
        assert controller.shutdowns == 1


async def test_modes_folder_0700_socket_0600(data_dir: Path, sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o755)
    sock_path.parent.chmod(0o755)
    async with serving(sock_path, FakeController()):
        info = sock_path.lstat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert stat.S_IMODE(sock_path.parent.stat().st_mode) == 0o700


async def test_creates_missing_folders(data_dir: Path) -> None:
    path = data_dir / "a" / "run" / "hearthlink.sock"
    async with serving(path, FakeController()):
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert await trio.to_thread.run_sync(ControlClient(path).health)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_unix_socket(sock_path: Path) -> None:
    controller = FakeController()
    async with serving(sock_path, controller):
        result = await trio.run_process(
            ["curl", "-sS", "--unix-socket", os.fspath(sock_path), "http://x/v1/health"],
            capture_stdout=True,
        )
        assert json.loads(result.stdout) == json.loads(json.dumps(controller.health()))

        result = await trio.run_process(
            ["curl", "-sS", "-X", "POST", "-w", "\n%{http_code}", "--unix-socket",
             os.fspath(sock_path), "http://x/v1/services/core/restart"],
            capture_stdout=True,
        )  # fmt: skip
        body, code = result.stdout.decode().rsplit("\n", 1)
        assert code == "202"
        assert json.loads(body)["accepted"] is True
        assert controller.restarted == ["core"]


@pytest.mark.parametrize(
    ("method", "url", "status", "error", "allow"),
    [
        ("GET", "/nope", 404, "not_found", None),
        ("GET", "/v1/health/", 404, "not_found", None),
        ("GET", "/v1/services//restart", 404, "not_found", None),
        ("POST", "/v1/services/nope/restart", 404, "unknown_service", None),
        ("POST", "/v1/health", 405, "method_not_allowed", "GET"),
        ("GET", "/v1/shutdown", 405, "method_not_allowed", "POST"),
        ("DELETE", "/v1/services/vault/restart", 405, "method_not_allowed", "POST"),
    ],
)
async def test_errors_are_json(
    sock_path: Path, method: str, url: str, status: int, error: str, allow: str | None
) -> None:
    controller = FakeController()
    async with serving(sock_path, controller):
        response = await trio.to_thread.run_sync(raw_request, sock_path, method, url)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == error
    assert body["detail"]
    assert response.headers.get("allow") == allow
    assert controller.restarted == []
    assert controller.shutdowns == 0


async def test_controller_failure_is_500_and_server_survives(sock_path: Path) -> None:
    controller = FakeController()
    controller.fail_health = True
    async with serving(sock_path, controller):
        response = await trio.to_thread.run_sync(raw_request, sock_path, "GET", "/v1/health")
        assert response.status_code == 500
        assert response.json()["error"] == "internal"
        with pytest.raises(ControlError, match="500"):
            await trio.to_thread.run_sync(ControlClient(sock_path).health)
        controller.fail_health = False
        assert (await trio.to_thread.run_sync(ControlClient(sock_path).health))["services"]


async def test_two_clients_at_once(sock_path: Path) -> None:
    controller = FakeController()
    results: list[str] = []

    def many(client: ControlClient) -> None:
        for _ in range(20):
            results.append(client.health()["status"])

    async with serving(sock_path, controller):
        # A client that holds its keep-alive connection open does not block another one.
        idle = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with idle:
            await idle.connect(os.fspath(sock_path))
            await idle.send(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            with trio.fail_after(5):
                assert (await idle.recv(65536)).startswith(b"HTTP/1.1 200")
            async with trio.open_nursery() as clients:
                clients.start_soon(trio.to_thread.run_sync, many, ControlClient(sock_path))
                clients.start_soon(trio.to_thread.run_sync, many, ControlClient(sock_path))
    assert results == ["healthy"] * 40


async def test_stale_socket_is_replaced(sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(sock_path))
    stale.close()  # bound, never listened: connecting is refused, as after a crash
    async with serving(sock_path, FakeController()):
        assert stat.S_IMODE(sock_path.lstat().st_mode) == 0o600
        assert (await trio.to_thread.run_sync(ControlClient(sock_path).health))["status"]


async def test_live_socket_is_refused(sock_path: Path) -> None:
    async with serving(sock_path, FakeController()):
        with pytest.raises(ControlSocketError, match="another hearthlink supervisor is running"):
            await serve_control(sock_path, FakeController())
        # The first server is untouched and still answers.
        assert sock_path.exists()
        assert (await trio.to_thread.run_sync(ControlClient(sock_path).health))["status"]


async def test_not_a_socket_is_left_alone(sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    sock_path.write_text("precious")
    with pytest.raises(ControlSocketError, match="exists and is not a socket"):
        await serve_control(sock_path, FakeController())
    assert sock_path.read_text() == "precious"


async def test_path_too_long(data_dir: Path) -> None:
    path = data_dir / ("x" * 120) / "hearthlink.sock"
    with pytest.raises(ControlSocketError, match="longer than a Unix socket allows"):
        await serve_control(path, FakeController())


async def test_cancel_stops_promptly_and_removes_socket(sock_path: Path) -> None:
    idle = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with idle:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, sock_path, FakeController())
            # An open keep-alive connection must not hold the shutdown up.
            await idle.connect(os.fspath(sock_path))
            await idle.send(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            with trio.fail_after(5):
                await idle.recv(65536)
            started = time.perf_counter()
            nursery.cancel_scope.cancel()
        elapsed = time.perf_counter() - started
    assert elapsed < 0.5
    assert not sock_path.exists()
    with pytest.raises(NotRunning):
        ControlClient(sock_path).health()


async def test_socket_of_someone_else_is_not_removed(sock_path: Path) -> None:
    async with serving(sock_path, FakeController()):
        sock_path.unlink()
        sock_path.write_text("not ours")
    assert sock_path.read_text() == "not ours"


async def test_wait_gone(sock_path: Path) -> None:
    client = ControlClient(sock_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, sock_path, FakeController())
        assert not await trio.to_thread.run_sync(lambda: client.wait_gone(0.05, interval=0.01))
        nursery.cancel_scope.cancel()
    assert client.wait_gone(1.0)


def test_client_without_socket(data_dir: Path, sock_path: Path) -> None:
    client = ControlClient(sock_path)
    with pytest.raises(NotRunning) as info:
        client.health()
    assert str(info.value) == (
        f"no hearthlink supervisor is running for data dir {data_dir} "
        f"(no control socket at {sock_path})"
    )
    other = ControlClient(data_dir / "ctl.sock")
    with pytest.raises(NotRunning, match=r"^no hearthlink supervisor is running \(no control"):
        other.shutdown()


def test_client_with_stale_socket(sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(os.fspath(sock_path))
    with pytest.raises(NotRunning, match="refuses connections"):
        ControlClient(sock_path).restart("vault")


LAZY_HTTP = """
import sys, tempfile, trio
from pathlib import Path
from hearthlink_trio.control.client import ControlClient
from hearthlink_trio.control.server import serve_control

class Controller:
    def health(self):
        return {"status": "healthy", "services": []}

async def main(path):
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, Controller())
        print("hypercorn at start:", "hypercorn.trio.tcp_server" in sys.modules)
        health = await trio.to_thread.run_sync(ControlClient(path).health)
        print("answered:", health["status"])
        print("hypercorn after a request:", "hypercorn.trio.tcp_server" in sys.modules)
        nursery.cancel_scope.cancel()

with tempfile.TemporaryDirectory(prefix="hl-") as tmp:
    trio.run(main, Path(tmp) / "run" / "hearthlink.sock")
"""


def test_hypercorn_is_loaded_by_the_first_connection_not_at_start() -> None:
    # Its import is 60-100 ms of CPU that would compete with the services starting.
    out = subprocess.run(
        [sys.executable, "-c", LAZY_HTTP], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.splitlines() == [
        "hypercorn at start: False",
        "answered: healthy",
        "hypercorn after a request: True",
    ]


async def test_hypercorn_is_loaded_a_while_after_start_without_a_connection(
    sock_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    from hearthlink_trio.control import server

    loads: list[float] = []
    real_load = server._LazyHandler.load

    def load(self: server._LazyHandler) -> object:
        loads.append(trio.current_time())
        return real_load(self)

    began = trio.current_time()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(server._LazyHandler, "load", load)
        async with serving(sock_path, FakeController()):
            await trio.sleep(server.HTTP_LOAD_DELAY + 1)
    assert [t - began for t in loads] == [pytest.approx(server.HTTP_LOAD_DELAY)]
