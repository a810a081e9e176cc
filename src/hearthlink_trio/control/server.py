"""The control API's server: hypercorn's HTTP/1.1 connections on a Unix socket we bind.

Access is controlled twice: by the file system (the socket's folder is 0700 and the socket
0600, so only the user who runs the supervisor can connect), and at accept, where a
connection whose peer (SO_PEERCRED) is neither that user nor root is closed unanswered,
whatever the socket's mode has become. A stale socket (no supervisor behind it) is
replaced; one a live supervisor answers on is refused.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import struct
import weakref
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

import trio

from hearthlink_trio.control.api import ControlApp, Controller
from hearthlink_trio.control.errors import MAX_SOCKET_PATH_BYTES, ControlSocketError

if TYPE_CHECKING:
    from hypercorn.config import Config
    from hypercorn.typing import AppWrapper

#: Mode of the socket's folder and of the socket itself .
FOLDER_MODE = 0o700
SOCKET_MODE = 0o600
#: Pending connections the kernel queues before the server accepts them.
LISTEN_BACKLOG = 16
#: How long a socket found in the way gets to accept a connection before it counts as live.
STALE_PROBE_TIMEOUT = 1.0

#: hypercorn's own messages ("Running on ...", connection errors) go here. Its start-up
#: line ends in "(CTRL + C to quit)", which is wrong for a socket inside a supervisor, so
#: only warnings and worse get through; the access log is off.
http_log = logging.getLogger("hearthlink.control.http")
http_log.setLevel(logging.WARNING)

#: What a client that leaves mid-answer makes hypercorn raise in the task writing to it.
_GONE = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.BusyResourceError,
    ConnectionError,
)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _calm(record: logging.LogRecord) -> bool:
    """hypercorn's errors as one line each, never a traceback on the supervisor's stderr.

    A client that went away mid-answer (it closed early, or never sent the body it
    announced) is no news: its record is dropped. Anything else keeps one line naming the
    exception.
    """
    if record.exc_info is None or record.exc_info[1] is None:
        return True
    leaves = _leaves(record.exc_info[1])
    if all(isinstance(leaf, _GONE) for leaf in leaves):
        return False
    summary = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves)
    record.msg = f"control API: {record.getMessage()} ({summary})"
    record.args = ()
    record.exc_info = None
    record.exc_text = None
    return True


http_log.addFilter(_calm)
log = logging.getLogger("hearthlink.control")

#: A peer that takes none of what we send for this long is cut off (an event stream's
#: reader that stopped reading), so its connection never holds a task forever.
SEND_STALL_TIMEOUT = 10.0
#: The most bytes handed to the kernel in one send (progress is measured per piece).
SEND_PIECE_BYTES = 16 * 1024
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


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
    from hypercorn.utils import wrap_app

    _prepare_folder(socket_path.parent)
    await _clear_stale_socket(socket_path)
    sock, identity = _bind(socket_path)
    config = _hypercorn_config()
    app = wrap_app(ControlApp(controller), config.wsgi_max_body_size, "asgi")
    while True:
        try:
            listener = PeerCheckedListener(
                trio.SocketListener(trio.socket.from_stdlib_socket(sock)),
                allowed_uids=frozenset({os.getuid(), 0}),
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_close_all_when_cancelled, listener)
                await nursery.start(partial(_serve, app, config, listener))
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED
                # A socket deleted under a running supervisor is made again.
                await _until_deleted(socket_path)
                nursery.cancel_scope.cancel()
        finally:
            sock.close()
            _remove_if_ours(socket_path, identity)
        sock, identity = await _bind_again(socket_path)


async def _close_all_when_cancelled(listener: PeerCheckedListener) -> None:
    # The moment the server is told to stop, not once its connections have ended on their
    # own: a connection whose reader stopped reading would hold the end up otherwise.
    try:
        await trio.sleep_forever()
    finally:
        listener.close_all()


#: How often the supervisor checks that its control socket is still there.
SOCKET_CHECK_SECONDS = 3.0


async def _until_deleted(path: Path) -> None:
    """Return once the socket file is gone (one ``lstat`` every few seconds)."""
    while True:
        await trio.sleep(SOCKET_CHECK_SECONDS)
        if not _exists(path):
            return


def _exists(path: Path) -> bool:
    try:
        path.lstat()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


async def _bind_again(path: Path) -> tuple[socket.socket, tuple[int, int]]:
    """Re-create a deleted control socket, retrying every few seconds; warns once."""
    warned = False
    while True:
        try:
            _prepare_folder(path.parent)
            bound = _bind(path)
        except (ControlSocketError, OSError) as exc:
            if not warned:
                warned = True
                log.warning(
                    "Control socket %s was deleted and cannot be created again (%s); "
                    "`hearthlink status` cannot reach this supervisor until it can",
                    path,
                    exc,
                    extra={"event": "control_socket_lost"},
                )
            await trio.sleep(SOCKET_CHECK_SECONDS)
            continue
        log.warning(
            "Control socket %s was deleted; it was created again",
            path,
            extra={"event": "control_socket_recreated"},
        )
        return bound


async def _serve(
    app: AppWrapper,
    config: Config,
    listener: PeerCheckedListener,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # What hypercorn's trio worker (hypercorn.trio.run.worker_serve) does for a plain HTTP
    # socket, minus the lifespan protocol (the app has nothing to set up) and with our own
    # listener: worker_serve wraps the sockets it is given in listeners of its own, so it
    # has no place to check a peer before a connection is served.
    from hypercorn.trio.worker_context import WorkerContext

    from hearthlink_trio.control.http11 import Http11Server

    context = WorkerContext(None)

    async def handler(stream: GuardedStream) -> None:
        try:
            # hypercorn's annotation names a TLS stream; a plain one is served as plain HTTP.
            plain = cast("trio.SSLStream[trio.SocketStream]", stream)
            await Http11Server(app, config, context, {}, plain)
        except Exception as exc:
            # One connection's failure (a client hypercorn did not expect) ends that
            # connection only: uncaught, it would end the server and the supervisor.
            http_log.warning("control API: a connection ended in an error", exc_info=exc)
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, [listener])
        task_status.started()


class PeerCheckedListener(trio.abc.Listener["GuardedStream"]):
    """Accepts only connections whose peer runs as one of ``allowed_uids``; closes others."""

    def __init__(self, inner: trio.SocketListener, *, allowed_uids: frozenset[int]) -> None:
        self._inner = inner
        self._allowed = allowed_uids
        #: Every connection accepted and not yet closed.
        self.open: weakref.WeakSet[GuardedStream] = weakref.WeakSet()

    async def accept(self) -> GuardedStream:
        while True:
            stream = await self._inner.accept()
            pid, uid = peer_credentials(stream.socket)
            if uid in self._allowed:
                guarded = GuardedStream(stream)
                self.open.add(guarded)
                return guarded
            log.warning(
                "control API: refused a connection from pid %s running as uid %s "
                "(only uid %s and root may use it)",
                pid,
                uid,
                os.getuid(),
            )
            await trio.aclose_forcefully(stream)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def close_all(self) -> None:
        """Close every open connection now: a task blocked sending on one (a reader that
        stopped reading) is woken with an error instead of holding up the server's end."""
        for stream in list(self.open):
            stream.socket.close()


def peer_credentials(sock: trio.socket.SocketType) -> tuple[int, int]:
    """``(pid, uid)`` of the process at the other end of a Unix socket connection."""
    pid, uid, _gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return pid, uid


class GuardedStream(trio.abc.HalfCloseableStream):
    """A connection that is closed once its peer has taken nothing for
    :data:`SEND_STALL_TIMEOUT`, and that the server can close at once when it stops.

    hypercorn shields its writes from cancellation, so without this a peer that stops
    reading an endless response would hold the writing task, and the connection, forever.
    A peer that reads slowly but keeps reading is not cut here: its event stream drops it,
    with a last line, once it falls too far behind.
    """

    def __init__(self, inner: trio.SocketStream) -> None:
        self._inner = inner
        self.socket = inner.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            with trio.move_on_after(SEND_STALL_TIMEOUT):
                try:
                    sent = await self.socket.send(view[:SEND_PIECE_BYTES])
                except OSError as exc:
                    # As trio's own streams report it, which is what hypercorn catches: a
                    # peer gone (EPIPE) must end its connection, not the server.
                    raise trio.BrokenResourceError(f"the peer is gone: {exc}") from exc
                view = view[sent:]
                continue
            await trio.aclose_forcefully(self._inner)
            raise trio.BrokenResourceError(f"the peer took nothing for {SEND_STALL_TIMEOUT:g}s")

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def aclose(self) -> None:
        await self._inner.aclose()


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
        # A read-only folder keeps it: the next run replaces a stale socket anyway.
        with contextlib.suppress(OSError):
            _unlink(path)
