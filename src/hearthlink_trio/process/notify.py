"""The notify probe: readiness, status and watchdog pings from the service itself, by the
sd_notify protocol (what systemd's ``Type=notify`` services send).

Each process of a service with ``probe = "notify"`` gets its own ``NOTIFY_SOCKET``: an
abstract datagram socket of the supervisor, made just before the process is started.
Abstract sockets have no file permissions, so every message is checked: SO_PASSCRED makes
the kernel attach the sender's pid, and a message counts only when that pid is the
process itself, a process of its group, or one of its descendants. Anything else is
ignored, with a note saying so.

Understood: ``READY=1``, ``STATUS=…``, ``WATCHDOG=1``, ``STOPPING=1``, ``RELOADING=1``,
``EXTEND_TIMEOUT_USEC=…``. ``MAINPID=`` is refused (the supervisor watches the process it
started, whose exit it learns through a pidfd; another main process could not be watched
the same way): the note says so. Nothing here imports trio until a wait.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
from dataclasses import dataclass, field

from hearthlink_trio.process.procfs import proc_stat

#: SCM_CREDENTIALS carries ``struct ucred``: pid, uid, gid.
_UCRED = struct.Struct("iII")
_CMSG_SPACE = socket.CMSG_SPACE(_UCRED.size)
#: A notify message is a few lines; systemd itself reads at most a page or so more.
MAX_MESSAGE_BYTES = 4096
_counter = itertools.count(1)


@dataclass
class NotifyState:
    """What one process has said so far."""

    ready: bool = False
    status: str | None = None
    #: When the last ``WATCHDOG=1`` came (the caller's clock), None before any.
    last_ping: float | None = None
    stopping: bool = False
    reloading: bool = False
    #: ``EXTEND_TIMEOUT_USEC``: the start-up grace lasts at least until then (caller's clock).
    extend_until: float | None = None
    #: Lines worth logging (ignored senders, refused fields), taken by the caller.
    notes: list[str] = field(default_factory=list)


class NotifyReceiver:
    """The notify socket of one process (``NOTIFY_SOCKET=@…``) and what it has said."""

    def __init__(self, service: str) -> None:
        name = f"hearthlink/{os.getpid()}/{service}/{next(_counter)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.bind("\0" + name)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.service = service
        #: The value of ``NOTIFY_SOCKET`` (``@`` for the abstract namespace, as sd_notify reads it).
        self.address = "@" + name
        #: The process whose messages count (set once it is started).
        self.pid: int | None = None
        self.state = NotifyState()

    def drain(self, now: float) -> bool:
        """Read every message waiting; returns whether any counted."""
        counted = False
        while True:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(MAX_MESSAGE_BYTES, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return counted
            except OSError:
                return counted  # closed
            sender = _sender(ancdata)
            if sender is None or not self._ours(sender):
                who = f"pid {sender}" if sender is not None else "an unknown sender"
                self.state.notes.append(
                    f"notify message from {who} ignored: not a process of {self.service}"
                )
                continue
            self._apply(data.decode("utf-8", "replace"), now)
            counted = True

    def _ours(self, sender: int) -> bool:
        """Is ``sender`` the process, one of its group, or one of its descendants?"""
        if self.pid is None:
            return False
        if sender == self.pid:
            return True
        pid, seen = sender, 0
        while pid > 1 and seen < 64:  # up the parents: a descendant that left the group
            stat = proc_stat(pid)
            if stat is None:
                return False
            if stat.pgid == self.pid or stat.ppid == self.pid:
                return True
            pid, seen = stat.ppid, seen + 1
        return False

    def _apply(self, text: str, now: float) -> None:
        state = self.state
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if not sep:
                continue
            if key == "READY" and value == "1":
                state.ready = True
                state.reloading = False
            elif key == "STATUS":
                state.status = value
            elif key == "WATCHDOG" and value == "1":
                state.last_ping = now
            elif key == "STOPPING" and value == "1":
                state.stopping = True
            elif key == "RELOADING" and value == "1":
                state.reloading = True
            elif key == "EXTEND_TIMEOUT_USEC" and value.isdigit():
                state.extend_until = now + int(value) / 1e6
            elif key == "MAINPID":
                state.notes.append(
                    f"MAINPID={value} from {self.service} refused: the supervisor keeps "
                    "watching the process it started"
                )

    async def wait(self) -> None:
        """Return once a message is waiting."""
        import trio

        await trio.lowlevel.wait_readable(self.sock)

    def close(self) -> None:
        self.sock.close()


def _sender(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid, _, _ = _UCRED.unpack(data[: _UCRED.size])
            return int(pid)
    return None
