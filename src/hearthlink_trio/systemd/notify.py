"""sd_notify(3) for the supervisor: readiness, status text, stopping and the watchdog.

systemd (``Type=notify``) passes ``$NOTIFY_SOCKET``, an ``AF_UNIX`` datagram socket; each
message is one datagram of newline-separated ``KEY=value`` lines. Outside systemd the
variable is unset and every call here does nothing. A failed send is logged once and never
raised: the supervisor's job is its services, not its reports to systemd.

The children must not see these variables (a service that also spoke sd_notify would be
taken for the supervisor, or rejected with ``NotifyAccess=main``): :func:`clean_child_env`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trio

__all__ = ["Notifier", "clean_child_env"]

log = logging.getLogger("hearthlink.sdnotify")

#: Environment variables systemd sets for the supervisor alone: this one and ``WATCHDOG_*``.
NOTIFY_SOCKET_VAR = "NOTIFY_SOCKET"
WATCHDOG_PREFIX = "WATCHDOG_"
#: A send that cannot complete in this time (systemd not reading) is given up as failed.
SEND_TIMEOUT = 1.0
#: Ping the watchdog at this fraction of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3) advises.
WATCHDOG_FRACTION = 0.5

Sender = Callable[[bytes], Awaitable[None]]


class Notifier:
    """Sends sd_notify messages to ``address`` (None: a no-op notifier).

    Args:
        address: the ``$NOTIFY_SOCKET`` value; a leading ``@`` names an abstract socket.
        watchdog_interval: seconds between watchdog pings, or None when systemd set no
            watchdog for this process.
        sender: test seam replacing the datagram send (it receives the encoded message).
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_interval: float | None = None,
        sender: Sender | None = None,
    ) -> None:
        self.address = address or None
        self.watchdog_interval = watchdog_interval if self.address is not None else None
        # A leading "@" names a socket in the abstract namespace, whose name begins with NUL.
        self._sockaddr = f"\0{address[1:]}" if address and address[0] == "@" else address or ""
        self._send: Sender = sender if sender is not None else self._send_datagram
        self._failure_logged = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for ``environ`` (default ``os.environ``); a no-op one outside systemd."""
        env = os.environ if environ is None else environ
        return cls(env.get(NOTIFY_SOCKET_VAR), watchdog_interval=_watchdog_interval(env))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    async def notify(self, *lines: str) -> None:
        """Send ``lines`` as one datagram; does nothing when disabled, never raises OSError."""
        if self.address is None or not lines:
            return
        import trio  # here, not at the top: the services' environment is built before trio

        problem: str | None = None
        with trio.move_on_after(SEND_TIMEOUT) as scope:
            try:
                await self._send("\n".join(lines).encode())
            except OSError as exc:
                problem = str(exc)
        if scope.cancelled_caught:
            problem = f"no room to send within {SEND_TIMEOUT:g}s"
        if problem is not None and not self._failure_logged:
            self._failure_logged = True
            log.warning(
                "could not notify systemd through %s (%s); carrying on without it",
                self.address,
                problem,
            )

    async def ready(self, status: str | None = None) -> None:
        """``READY=1``: every service is up (and an optional status text with it)."""
        await self.notify("READY=1", *_status_lines(status))

    async def status(self, text: str) -> None:
        """``STATUS=text``, shown by ``systemctl status`` (made one line)."""
        await self.notify(*_status_lines(text))

    async def stopping(self, status: str | None = None) -> None:
        """``STOPPING=1``: the shutdown has begun."""
        await self.notify("STOPPING=1", *_status_lines(status))

    async def watchdog(self) -> None:
        """``WATCHDOG=1``: the supervisor is alive."""
        await self.notify("WATCHDOG=1")

    async def watchdog_loop(self) -> None:
        """Ping the watchdog every ``watchdog_interval`` seconds, forever.

        Returns at once when there is no watchdog. Run it in the nursery that lives as long
        as the supervision loop: a blocked trio loop then stops the pings, and systemd
        restarts the unit.
        """
        interval = self.watchdog_interval
        if interval is None:
            return
        import trio

        while True:
            await self.watchdog()
            await trio.sleep(interval)

    async def follow(
        self,
        *,
        status: Callable[[], str],
        started: Callable[[], bool],
        stopping: Callable[[], bool],
        next_change: Callable[[], trio.Event],
    ) -> None:
        """READY=1 once start-up is over, STATUS= on every change, STOPPING=1 at shutdown.

        Start-up is over when every service has passed its first probe (READY=1 with
        "N/N healthy"), or has passed or failed (READY=1 with the failed ones named), so
        that one failed service does not make systemd time the whole unit out.
        """
        ready = False
        last = ""
        while True:
            changed = next_change()  # taken first: a change while sending is not missed
            text = status()
            if stopping():
                await self.stopping(text)
                return
            if not ready and started():
                ready = True
                await self.ready(text)
            elif text != last:
                await self.status(text)
            last = text
            await changed.wait()

    async def _send_datagram(self, data: bytes) -> None:
        # A socket per message, as sd_notify(3) does: nothing to keep open or to close at
        # exit, and messages are rare (state changes and a watchdog ping every few seconds).
        import trio

        with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            await sock.sendto(data, self._sockaddr)


def _status_lines(text: str | None) -> list[str]:
    if text is None:
        return []
    return ["STATUS=" + " ".join(text.splitlines())]


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, if the watchdog is meant for this process."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    return usec / 1_000_000 * WATCHDOG_FRACTION


def clean_child_env(env: dict[str, str]) -> dict[str, str]:
    """A copy of ``env`` without ``NOTIFY_SOCKET`` and the ``WATCHDOG_*`` variables."""
    return {
        key: value
        for key, value in env.items()
        if key != NOTIFY_SOCKET_VAR and not key.startswith(WATCHDOG_PREFIX)
    }
