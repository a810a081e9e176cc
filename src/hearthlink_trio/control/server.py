"""The control API's server: hypercorn's trio worker on a Unix socket hearthlink binds itself.

Access is controlled by the file system: the socket's folder is 0700 and the socket 0600,
so only the user who runs the supervisor can connect. A stale socket (no supervisor behind
it) is replaced; one a live supervisor answers on is refused.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import stat
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from hearthlink_trio.control.api import ControlApp, Controller
from hearthlink_trio.control.errors import ControlSocketError

if TYPE_CHECKING:
    from hypercorn.config import Config

#: Mode of the socket's folder and of the socket itself .
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
    config = _hypercorn_config()
    app = wrap_app(ControlApp(controller), config.wsgi_max_body_size, "asgi")
    while True:
        try:
            sockets = Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])
            async with trio.open_nursery() as nursery:
                # hypercorn.trio.serve() binds its own sockets: for a "unix:" bind it unlinks
                # whatever socket file is in the way (a live supervisor's too), marks the fd
                # inheritable and never closes it. worker_serve(), the trio worker serve()
                # wraps, serves sockets we bound ourselves and leaves closing them to us.
                await nursery.start(partial(worker_serve, app, config, sockets=sockets))
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED
                await _until_deleted(socket_path)
                nursery.cancel_scope.cancel()
        finally:
            sock.close()
            _remove_if_ours(socket_path, identity)
        sock, identity = await _bind_again(socket_path)


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
