"""The benchmark's view of the services from outside: /health polling and free ports."""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procs import BenchError

REQUEST = (
    b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: hearthlink-bench\r\n"
    b"Connection: close\r\n\r\n"
)
#: Ports the default config uses: never taken by a generated service.
RESERVED_PORTS = (8000, 8001, 8002, 8888)


# -- health polling from outside ------------------------------------------------------------


def _parse_health(raw: bytes) -> dict[str, Any] | None:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        return None
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("status") != "healthy":
        return None
    return obj


def poll_health(
    targets: dict[str, int],
    *,
    deadline: float,
    interval: float,
    path: str = "/health",
    eligible: Callable[[str], bool] | None = None,
    accept: Callable[[str, dict[str, Any]], bool] | None = None,
    supervisor: subprocess.Popen[bytes] | None = None,
) -> dict[str, tuple[float, dict[str, Any]]]:
    """Poll every port concurrently (one selector) until each answers a healthy /health.

    Each round opens a non-blocking connection to every port still pending (and
    ``eligible``: there is no point in polling a service its supervisor has not started),
    at most one in flight per port. Returns ``{name: (monotonic time of the answer, body)}``.
    """
    request = REQUEST % path.encode()
    sel = selectors.DefaultSelector()
    pending = dict(targets)
    inflight: dict[str, tuple[socket.socket, bytearray, float]] = {}
    done: dict[str, tuple[float, dict[str, Any]]] = {}

    def drop(name: str) -> None:
        sock = inflight.pop(name)[0]
        sel.unregister(sock)
        sock.close()

    next_round = 0.0
    try:
        while pending:
            now = time.monotonic()
            if now > deadline:
                raise BenchError(f"no healthy answer from {', '.join(sorted(pending)[:5])}")
            if supervisor is not None and supervisor.poll() is not None:
                raise BenchError(f"the supervisor exited with status {supervisor.returncode}")
            if now >= next_round:
                for name, port in pending.items():
                    if name in inflight or (eligible is not None and not eligible(name)):
                        continue
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    err = sock.connect_ex(("127.0.0.1", port))
                    if err in (0, errno.EINPROGRESS):
                        sel.register(sock, selectors.EVENT_WRITE, name)
                        inflight[name] = (sock, bytearray(), now)
                    else:
                        sock.close()
                next_round = now + interval
                for name in [n for n, v in inflight.items() if now - v[2] > 2.0]:
                    drop(name)
            timeout = max(0.0, next_round - time.monotonic())
            for key, mask in sel.select(timeout):
                name = key.data
                sock, buf, _started = inflight[name]
                if mask & selectors.EVENT_WRITE:
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        drop(name)
                        continue
                    try:
                        sock.send(request)
                    except OSError:
                        drop(name)
                        continue
                    sel.modify(sock, selectors.EVENT_READ, name)
                    continue
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    drop(name)
                    continue
                if chunk:
                    buf += chunk
                    continue
                when = time.monotonic()
                drop(name)
                body = _parse_health(bytes(buf))
                if body is not None and (accept is None or accept(name, body)):
                    done[name] = (when, body)
                    del pending[name]
    finally:
        for name in list(inflight):
            drop(name)
        sel.close()
    return done


def free_ports(count: int) -> list[int]:
    """``count`` free ports below the kernel's ephemeral range (so no outgoing connection
    of ours can be holding one), each checked by a bind as the services bind."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = min(low, 32768) - 1
    bottom = 20000 if top > 21000 + count else 10000
    ports: list[int] = []
    port = bottom + (os.getpid() * 7919 + int(time.time() * 1000)) % max(1, top - bottom - count)
    tried = 0
    while len(ports) < count:
        tried += 1
        if tried > (top - bottom):
            raise BenchError("not enough free ports")
        port = bottom if port >= top else port + 1
        if port in RESERVED_PORTS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
