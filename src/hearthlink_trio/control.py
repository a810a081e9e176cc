"""The control API (SPEC §6): a small ASGI app served by hypercorn's trio worker on a Unix
socket, and the synchronous client the ``status``, ``restart`` and ``stop`` commands use.

The server side is :func:`serve_control`, run in the supervisor's nursery with a
:class:`Controller` (the supervisor's view of itself). Routes::

    GET  /v1/health                   200 {"status": ..., "services": [ServiceStatus, ...]}
    POST /v1/services/{name}/restart  202 {"accepted": true, ...}; 404 for an unknown name
    POST /v1/shutdown                 202 {"accepted": true, ...}

Every error is ``{"error": <code>, "detail": <text>}``: 404 for an unknown route, 405 (with
``Allow``) for a wrong method, 500 if the controller itself fails.

Access is controlled by the file system: the socket's folder is 0700 and the socket 0600,
so only the user who runs the supervisor can connect.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
import stat
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

if TYPE_CHECKING:
    import httpx
    from hypercorn.config import Config
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

__all__ = [
    "ControlClient",
    "ControlError",
    "ControlSocketError",
    "Controller",
    "NotRunning",
    "UnknownService",
    "serve_control",
]

#: Mode of the socket's folder and of the socket itself (SPEC §6).
FOLDER_MODE = 0o700
SOCKET_MODE = 0o600
#: Pending connections the kernel queues before the server accepts them.
LISTEN_BACKLOG = 16
#: How long a socket found in the way gets to accept a connection before it counts as live.
STALE_PROBE_TIMEOUT = 1.0
#: Longest ``sun_path`` Linux accepts, terminating NUL included (unix(7)).
MAX_SOCKET_PATH_BYTES = 108

#: hypercorn's own messages ("Running on ...", connection errors) go here. Its start-up
#: line ends in "(CTRL + C to quit)", which is wrong for a socket inside a supervisor, so
#: only warnings and worse get through; the access log is off.
http_log = logging.getLogger("hearthlink.control.http")
http_log.setLevel(logging.WARNING)
log = logging.getLogger("hearthlink.control")

_RESTART_ROUTE = re.compile(r"/v1/services/([^/]+)/restart")


class Controller(Protocol):
    """What the control API needs from the supervisor.

    The methods are called from the trio thread (inside the supervisor's ``trio.run``), so
    they may set trio events or start tasks, but must not block.
    """

    def health(self) -> dict[str, Any]:
        """The whole ``/v1/health`` object: ``{"status": ..., "services": [...]}``."""
        ...

    def restart(self, name: str) -> None:
        """Ask for a manual restart of service ``name``; ``KeyError`` if there is none."""
        ...

    def shutdown(self) -> None:
        """Ask for a graceful stop of everything (returns at once)."""
        ...


class ControlError(Exception):
    """Talking to, or serving, the control API failed."""


class NotRunning(ControlError):
    """No supervisor answers on the control socket."""


class UnknownService(ControlError):
    """The supervisor has no service of that name."""


class ControlSocketError(ControlError):
    """The control socket cannot be created (in use by another supervisor, bad path...)."""


# --------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------


class _ControlApp:
    """The three routes as a plain ASGI application (no framework: nothing to import)."""

    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await _run_lifespan(receive, send)
        elif scope["type"] == "http":
            status, body, headers = self._dispatch(scope)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *headers,
                    ],
                    "trailers": False,
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})
        # Websockets are not offered: returning without accepting makes hypercorn refuse.

    def _dispatch(self, scope: HTTPScope) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        method, path = scope["method"], scope["path"]
        try:
            if path == "/v1/health":
                if method != "GET":
                    return _method_not_allowed(method, path, "GET")
                return _json(200, self._controller.health())
            if path == "/v1/shutdown":
                if method != "POST":
                    return _method_not_allowed(method, path, "POST")
                self._controller.shutdown()
                return _json(202, {"accepted": True, "action": "shutdown"})
            match = _RESTART_ROUTE.fullmatch(path)
            if match is not None:
                if method != "POST":
                    return _method_not_allowed(method, path, "POST")
                return self._restart(match.group(1))
        except Exception:
            # The supervisor must outlive a bug in what it reports; the caller gets a 500.
            log.exception("control API: %s %s failed", method, path)
            return _error(500, "internal", f"{method} {path} failed inside the supervisor")
        return _error(404, "not_found", f"no route for {method} {path}")

    def _restart(self, name: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        try:
            self._controller.restart(name)
        except KeyError:
            known = ", ".join(sorted(s["name"] for s in self._controller.health()["services"]))
            detail = f"no service named {name!r} (services: {known or 'none'})"
            return _error(404, "unknown_service", detail)
        return _json(202, {"accepted": True, "action": "restart", "service": name})


async def _run_lifespan(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    # Nothing to set up or tear down, but answering keeps hypercorn from logging that the
    # app "does not support lifespan".
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _json(status: int, payload: Any) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    return status, json.dumps(payload).encode(), []


def _error(status: int, code: str, detail: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    return _json(status, {"error": code, "detail": detail})


def _method_not_allowed(
    method: str, path: str, allowed: str
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    status, body, _ = _error(405, "method_not_allowed", f"{path} accepts {allowed}, not {method}")
    return status, body, [(b"allow", allowed.encode())]


async def serve_control(
    socket_path: Path,
    controller: Controller,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control API on ``socket_path`` until cancelled.

    Creates the socket's folder with mode 0700 (and tightens it to 0700 if it exists and
    belongs to us), replaces a stale socket left by a crashed run, binds the socket with mode
    0600, and reports ``task_status.started()`` once connections are accepted. On
    cancellation it stops serving at once (open requests are dropped) and removes the socket
    file, if it is still the one it created.

    Raises:
        ControlSocketError: another process answers on ``socket_path``, the path exists and
            is not a socket, or it is too long for a Unix socket.
    """
    # Imported here, not at the top: the thin clients (status, restart, stop) import this
    # module too, and hypercorn costs them about 5 MiB and 50 ms they do not need.
    from hypercorn.config import Sockets
    from hypercorn.trio.run import worker_serve
    from hypercorn.utils import wrap_app

    _prepare_folder(socket_path.parent)
    await _clear_stale_socket(socket_path)
    sock, identity = _bind(socket_path)
    try:
        config = _hypercorn_config()
        app = wrap_app(_ControlApp(controller), config.wsgi_max_body_size, "asgi")
        sockets = Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])
        async with trio.open_nursery() as nursery:
            # hypercorn.trio.serve() binds its own sockets: for a "unix:" bind it unlinks
            # whatever socket file is in the way (a live supervisor's too), marks the fd
            # inheritable and never closes it. worker_serve(), the trio worker serve() wraps,
            # serves sockets we bound ourselves and leaves closing them to us.
            await nursery.start(partial(worker_serve, app, config, sockets=sockets))
            task_status.started()
    finally:
        sock.close()
        _remove_if_ours(socket_path, identity)


def _hypercorn_config() -> Config:
    from hypercorn.config import Config

    config = Config()
    config.accesslog = None
    config.errorlog = http_log
    return config


def _prepare_folder(folder: Path) -> None:
    folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    info = folder.stat()
    # A folder someone else owns (a shared /tmp, say) is left alone: the socket's own 0600
    # mode still keeps other users out.
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) != FOLDER_MODE:
        folder.chmod(FOLDER_MODE)


async def _clear_stale_socket(path: Path) -> None:
    if not _is_socket(path):
        return
    probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with trio.move_on_after(STALE_PROBE_TIMEOUT) as scope:
            await probe.connect(os.fspath(path))
    except ConnectionRefusedError:
        # Nobody listens: a crashed run left it behind.
        log.info("removing stale control socket %s", path)
        _unlink(path)
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ControlSocketError(f"cannot check the existing control socket {path}: {exc}") from exc
    finally:
        probe.close()
    what = "does not answer" if scope.cancelled_caught else "accepts connections"
    raise ControlSocketError(
        f"another hearthlink supervisor is running on this data dir: its control socket {path} "
        f"{what}; stop it first with `hearthlink stop`"
    )


def _is_socket(path: Path) -> bool:
    """True if ``path`` is a socket, False if absent; ControlSocketError if something else."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlSocketError(
            f"{path} exists and is not a socket; move it away or set "
            "supervisor.control_socket to another path"
        )
    return True


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _bind(path: Path) -> tuple[socket.socket, tuple[int, int]]:
    if len(os.fsencode(path)) >= MAX_SOCKET_PATH_BYTES:
        raise ControlSocketError(
            f"control socket path {path} is longer than a Unix socket allows "
            f"({MAX_SOCKET_PATH_BYTES - 1} bytes); set supervisor.control_socket to a shorter path"
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # bind() creates the file with 0777 & ~umask, so a umask of 0177 gives 0600 with no
        # moment where the socket is open to others. The umask is process-wide: this is a
        # single syscall, and the chmod below repairs a file another thread might have
        # created meanwhile only for our own socket, which is what matters here.
        old_umask = os.umask(0o777 & ~SOCKET_MODE)
        try:
            sock.bind(os.fspath(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, SOCKET_MODE)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ControlSocketError(
                f"control socket {path} was created by another process meanwhile"
            ) from exc
        raise ControlSocketError(f"cannot create control socket {path}: {exc}") from exc
    info = path.lstat()
    return sock, (info.st_dev, info.st_ino)


def _remove_if_ours(path: Path, identity: tuple[int, int]) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if (info.st_dev, info.st_ino) == identity:
        _unlink(path)


# --------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------


class ControlClient:
    """A synchronous client of the control API at ``socket_path``.

    Every method makes one request with ``timeout`` seconds to answer.

    Raises (from every method):
        NotRunning: the socket is absent or refuses connections.
        UnknownService: the named service does not exist (``restart``).
        ControlError: anything else (timeout, a broken answer, a server error).
    """

    def __init__(
        self, socket_path: Path, *, timeout: float = 5.0, data_dir: Path | None = None
    ) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        # The default socket is <data_dir>/run/hearthlink.sock: name the data dir in messages.
        if data_dir is None and socket_path.parent.name == "run":
            data_dir = socket_path.parent.parent
        self.data_dir = data_dir

    def health(self) -> dict[str, Any]:
        """``GET /v1/health``: the overall status and every service's status."""
        return self._request("GET", "/v1/health")

    def restart(self, name: str) -> dict[str, Any]:
        """``POST /v1/services/{name}/restart``; returns once the restart is accepted."""
        return self._request("POST", f"/v1/services/{name}/restart")

    def shutdown(self) -> dict[str, Any]:
        """``POST /v1/shutdown``; returns once the stop is accepted, not when it is done."""
        return self._request("POST", "/v1/shutdown")

    def wait_gone(self, timeout: float, *, interval: float = 0.1) -> bool:
        """Poll until no supervisor answers any more; False if one still does at ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.health()
            except NotRunning:
                return True
            except ControlError:
                # Mid-shutdown the server may drop a request: that is not "gone" yet.
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def _request(self, method: str, path: str) -> dict[str, Any]:
        # Connecting once first sorts out "not running" cleanly, and spares httpcore's sync
        # Unix-socket connect, which leaks its socket when the connection is refused
        # (httpcore 1.0.9, _backends/sync.py), that case but for a supervisor that dies in
        # between.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(self.timeout)
            try:
                probe.connect(os.fspath(self.socket_path))
            except OSError as exc:
                raise self._connect_error(exc) from exc
        import httpx  # only the CLI's client needs it, never the supervisor

        transport = httpx.HTTPTransport(uds=os.fspath(self.socket_path))
        try:
            with httpx.Client(transport=transport, timeout=self.timeout, trust_env=False) as client:
                response = client.request(method, f"http://hearthlink{path}")
        except httpx.ConnectError as exc:
            raise self._connect_error(_os_error(exc) or exc) from exc
        except httpx.TimeoutException as exc:
            raise self._connect_error(TimeoutError()) from exc
        except httpx.TransportError as exc:
            raise ControlError(f"talking to the supervisor on {self.socket_path}: {exc}") from exc
        return self._decode(response)

    def _connect_error(self, exc: BaseException) -> ControlError:
        where = f" for data dir {self.data_dir}" if self.data_dir is not None else ""
        if isinstance(exc, FileNotFoundError):
            reason = f"no control socket at {self.socket_path}"
        elif isinstance(exc, ConnectionRefusedError):
            reason = (
                f"control socket {self.socket_path} refuses connections; "
                "a previous run probably crashed"
            )
        elif isinstance(exc, TimeoutError):
            return ControlError(
                f"the supervisor on {self.socket_path} did not answer within {self.timeout:g}s"
            )
        else:
            return ControlError(f"cannot connect to {self.socket_path}: {exc}")
        return NotRunning(f"no hearthlink supervisor is running{where} ({reason})")

    def _decode(self, response: httpx.Response) -> dict[str, Any]:
        try:
            payload = response.json()
        except ValueError as exc:
            raise ControlError(
                f"the supervisor answered {response.status_code} with a body that is not JSON"
            ) from exc
        if not isinstance(payload, dict):
            raise ControlError(f"the supervisor answered {response.status_code} with {payload!r}")
        if response.is_success:
            return payload
        detail = str(payload.get("detail", payload))
        if payload.get("error") == "unknown_service":
            raise UnknownService(detail)
        raise ControlError(f"the supervisor answered {response.status_code}: {detail}")


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError at the root of an httpx exception chain, if there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
