"""Helpers for tests that run real processes: ports, bounded polls, service processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

from hearthlink_trio.process.procfs import proc_stat

T = TypeVar("T")

TOKEN = "test-token-0123456789"
SRC_DIR = Path(__file__).resolve().parents[1] / "src"


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that were all free a moment ago (for
    replicas, which take port .. port+count-1)."""
    for _ in range(100):
        base = free_port()
        if base + count > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base
    raise AssertionError(f"no {count} consecutive free ports found")


def wait_for(
    predicate: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat.state != "Z"


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = proc_stat(int(entry))
        if stat is not None:
            children.setdefault(stat.ppid, []).append(int(entry))
    return children


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def descendants(root: int | None = None) -> dict[int, str]:
    """Live (non-zombie) descendants of ``root`` (default: this process) with their cmdlines."""
    root = os.getpid() if root is None else root
    tree = _children_map()
    found: dict[int, str] = {}
    stack = list(tree.get(root, []))
    while stack:
        pid = stack.pop()
        if pid_alive(pid):
            found[pid] = _cmdline(pid)
        stack.extend(tree.get(pid, []))
    return found


def reap_zombies() -> None:
    """Reap zombie children of this process (orphans re-parented to us as subreaper)."""
    for pid in _children_map().get(os.getpid(), []):
        if not pid_alive(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def health_ok(url: str) -> bool:
    try:
        response = httpx.get(url, timeout=0.5, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@dataclass
class ServiceProcess:
    """A service started by a test; ``url`` is its base URL."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, *, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10, trust_env=False)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the process, wait for it (SIGKILL after ``timeout``), return its status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def service_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}
    env.update(HEARTHLINK_DATA_DIR=str(data_dir), HEARTHLINK_API_TOKEN=TOKEN)
    env.update(extra)
    return env


@contextlib.contextmanager
def run_service(
    module: str,
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    wait_healthy: bool = True,
    log_path: Path | None = None,
    as_script: bool = False,
) -> Iterator[ServiceProcess]:
    """Start ``python -m module --host 127.0.0.1 --port P`` and stop it (by pid) afterwards.

    ``as_script``: run the module's file as a plain script instead (``python .../module.py``),
    with ``src`` on ``PYTHONPATH``, as a user may start it by hand.
    """
    port = free_port() if port is None else port
    log_path = log_path or data_dir / f"{module.rsplit('.', 1)[-1]}-{port}.out"
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = service_env(data_dir)
    if as_script:
        full_env["PYTHONPATH"] = str(SRC_DIR)
        program = [str(SRC_DIR / (module.replace(".", "/") + ".py"))]
    else:
        program = ["-m", module]
    full_env.update(env or {})
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, *program, "--host", "127.0.0.1", "--port", str(port)],
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    service = ServiceProcess(proc, port, log_path)
    try:
        if wait_healthy:
            wait_for(
                lambda: health_ok(f"{service.url}/health") or proc.poll() is not None,
                timeout=20,
                what=f"{module} on port {port} to answer /health",
            )
            if proc.poll() is not None:
                raise AssertionError(
                    f"{module} exited with {proc.returncode}:\n{service.output()[-3000:]}"
                )
        yield service
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def start_refused(module: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Start ``python -m module`` expecting it to exit by itself; its status and output."""
    return subprocess.run(
        [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(free_port())],
        env=service_env(data_dir, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass
class Recorded:
    """One request seen by a :class:`JsonServer`."""

    method: str
    path: str
    headers: dict[str, str]
    body: object


#: A :class:`JsonServer` route: ``(path, parsed JSON body)`` -> ``(status, JSON body)``, or
#: ``(status, bytes)`` for a raw answer.
JsonHandler = Callable[[str, object], tuple[int, object]]


class JsonServer:
    """A small threaded HTTP server on loopback, started by a test in its own process.

    Every request is recorded (``requests``) before ``handler`` answers it, so a test can
    tell whether a call reached the server. ``release`` is an event handlers may wait on
    (bounded) to simulate a slow answer; it is set on exit so no thread stays blocked.
    """

    def __init__(self, handler: JsonHandler) -> None:
        import http.server
        import threading

        self.requests: list[Recorded] = []
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                import json

                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: object = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                server.requests.append(
                    Recorded(self.command, self.path, dict(self.headers.items()), body)
                )
                status, answer = handler(self.path, body)
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    # One request per connection: once the server is shut down, nothing
                    # answers any more (no kept-alive connection outlives it).
                    self.send_header("Connection", "close")
                    self.close_connection = True
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    def __enter__(self) -> JsonServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    """``response`` is a JSON ``{"error", "detail"}`` answer with ``status``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["detail"], str)
    if code is not None:
        assert body["error"] == code, body
