"""sd_notify: exact datagrams on a socket the test binds, the watchdog on a virtual clock."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from hearthlink_trio.systemd.notify import Notifier, clean_child_env


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hl-") as tmp:
        yield Path(tmp)


@asynccontextmanager
async def listener(address: str) -> AsyncIterator[trio.socket.SocketType]:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(address)
        yield sock


async def receive(sock: trio.socket.SocketType) -> bytes:
    with trio.fail_after(5):
        data: bytes = await sock.recv(65536)
        return data


async def test_exact_datagrams(short_dir: Path) -> None:
    address = os.fspath(short_dir / "notify")
    async with listener(address) as sock:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
        assert notifier.enabled

        await notifier.ready()
        assert await receive(sock) == b"READY=1"
        await notifier.ready(status="4/4 healthy")
        assert await receive(sock) == b"READY=1\nSTATUS=4/4 healthy"
        await notifier.status("vault restarting (attempt 2)")
        assert await receive(sock) == b"STATUS=vault restarting (attempt 2)"
        await notifier.status("two\nlines")
        assert await receive(sock) == b"STATUS=two lines"
        await notifier.stopping()
        assert await receive(sock) == b"STOPPING=1"
        await notifier.stopping(status="stopping 4 services")
        assert await receive(sock) == b"STOPPING=1\nSTATUS=stopping 4 services"
        await notifier.watchdog()
        assert await receive(sock) == b"WATCHDOG=1"
        await notifier.notify("A=1", "B=2")
        assert await receive(sock) == b"A=1\nB=2"


async def test_abstract_socket() -> None:
    name = f"hearthlink-test-{os.getpid()}-{id(object())}"
    async with listener("\0" + name) as sock:
        await Notifier.from_environ({"NOTIFY_SOCKET": "@" + name}).ready()
        assert await receive(sock) == b"READY=1"


async def test_disabled_without_notify_socket() -> None:
    sent: list[bytes] = []

    async def sender(data: bytes) -> None:
        sent.append(data)

    notifier = Notifier(None, watchdog_interval=1.0, sender=sender)
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    await notifier.ready()
    await notifier.status("x")
    await notifier.watchdog_loop()  # returns at once
    assert sent == []
    assert not Notifier.from_environ({}).enabled


async def test_failure_is_logged_once_and_never_raised(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hearthlink.sdnotify")
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": os.fspath(short_dir / "absent")})
    for _ in range(3):
        await notifier.ready()
        await notifier.watchdog()
    warnings = [r for r in caplog.records if r.name == "hearthlink.sdnotify"]
    assert len(warnings) == 1
    assert "could not notify systemd" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "nonsense"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "/run/user/1000/systemd/notify", **env})
    assert notifier.watchdog_interval == expected


def test_no_watchdog_without_notify_socket() -> None:
    assert Notifier.from_environ({"WATCHDOG_USEC": "30000000"}).watchdog_interval is None


async def test_watchdog_cadence(autojump_clock: trio.testing.MockClock) -> None:
    pings: list[tuple[float, bytes]] = []

    async def sender(data: bytes) -> None:
        pings.append((trio.current_time(), data))

    notifier = Notifier("/unused", watchdog_interval=15.0, sender=sender)
    start = trio.current_time()
    with trio.move_on_after(50):
        await notifier.watchdog_loop()
    assert [(t - start, data) for t, data in pings] == [
        (0.0, b"WATCHDOG=1"),
        (15.0, b"WATCHDOG=1"),
        (30.0, b"WATCHDOG=1"),
        (45.0, b"WATCHDOG=1"),
    ]


async def test_watchdog_loop_with_a_real_socket(
    short_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    address = os.fspath(short_dir / "notify")
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    async with listener(address) as sock, trio.open_nursery() as nursery:
        nursery.start_soon(Notifier.from_environ(env).watchdog_loop)
        for _ in range(3):
            assert await receive(sock) == b"WATCHDOG=1"
        nursery.cancel_scope.cancel()


def test_clean_child_env() -> None:
    env = {
        "NOTIFY_SOCKET": "/run/user/1000/systemd/notify",
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": "42",
        "PATH": "/usr/bin",
        "MY_WATCHDOG_USEC": "kept",
        "NOTIFY_SOCKET_PATH": "kept",
    }
    assert clean_child_env(env) == {
        "PATH": "/usr/bin",
        "MY_WATCHDOG_USEC": "kept",
        "NOTIFY_SOCKET_PATH": "kept",
    }
    assert "NOTIFY_SOCKET" in env  # the argument is not changed
