"""How one process of a service shows that it is ready and well: the one place in the
supervisor that tells the probe kinds apart.

* ``http``, ``tcp`` and ``exec`` are polled, through the prober (the supervisor's seam to
  the network and to programs, which knows how to run each);
* ``log`` reads the process's own output lines, as the pumps pass them;
* ``none`` passes at once;
* ``notify`` is the process's own ``READY=1`` (and watchdog) on the notify socket the
  launcher made for it, followed by :mod:`~hearthlink_trio.supervisor.notifying`.

The incarnation follows a process with :meth:`Readiness.until_unhealthy`; a rolling
restart waits for its new process with :meth:`Readiness.wait_ready`, which counts only the
new process's own signal.
"""

from __future__ import annotations

from collections.abc import Mapping

import trio

from hearthlink_trio.config import Service
from hearthlink_trio.probes.log import LogWatch
from hearthlink_trio.supervisor.context import Context
from hearthlink_trio.supervisor.health import watch_health
from hearthlink_trio.supervisor.notifying import watch_notify
from hearthlink_trio.supervisor.seams import Process
from hearthlink_trio.supervisor.state import ServiceState

#: How often a new process beside an old one is probed while it starts (an http/tcp probe
#: that must be its own walks /proc).
SUCCESSOR_PROBE_INTERVAL = 0.05


class Readiness:
    """The probe of one process of ``service``.

    Args:
        own: only this very process may pass it (a rolling restart's new process, beside
            the old one on a shared socket): an http/tcp probe counts only when this process
            accepted its connection.
    """

    def __init__(
        self,
        ctx: Context,
        service: Service,
        env: Mapping[str, str],
        process: Process,
        *,
        own: bool = False,
    ) -> None:
        self._ctx = ctx
        self._service = service
        self._env = env
        self._process = process
        self._own = own
        kind = service.probe.kind
        #: A ``log`` probe's watch on the process's output lines (fed by :meth:`feed`).
        self.log_watch = LogWatch(service.probe.pattern) if kind == "log" else None
        self._at_once = kind == "none"
        self._notify = kind == "notify"

    def feed(self, stream: str, lines: list[str]) -> None:
        """Lines the process wrote (a ``log`` probe looks for its pattern in them)."""
        if self.log_watch is not None:
            self.log_watch.feed(stream, lines)

    async def check(self) -> str | None:
        """Probe once now: None if the process passes, else why not."""
        if self._at_once:
            return None
        if self.log_watch is not None:
            return self.log_watch.result()
        if self._notify:
            notify = self._process.notify
            if notify is None or notify.state.ready:
                return None
            return "no READY=1 yet"
        timeout = self._ctx.config.health.timeout
        if self._own:
            return await self._ctx.prober.probe_process(
                self._service, timeout, self._env, self._process.pid
            )
        return await self._ctx.prober.probe(self._service, timeout, self._env)

    async def until_unhealthy(self, record: ServiceState, *, ready: bool = False) -> str:
        """Follow the process, moving ``record`` between healthy and unhealthy, until it
        must be restarted; returns why. ``ready``: it has passed already (a rolling
        restart's new process, now the service's)."""
        if self._notify:
            return await watch_notify(
                self._ctx, self._service, record, self._process.notify, ready=ready
            )
        return await watch_health(
            self._ctx,
            self._service,
            record,
            self.check,
            passes_at_once=self._at_once,
            ready=ready,
        )

    async def wait_ready(self, within: trio.CancelScope) -> None:
        """Return once the process is ready by its own signal. A notify process's
        ``EXTEND_TIMEOUT_USEC`` pushes ``within``'s deadline meanwhile."""
        notify = self._process.notify if self._notify else None
        if notify is not None:
            while True:
                notify.drain(trio.current_time())
                if notify.state.ready:
                    return
                if notify.state.extend_until is not None:
                    within.deadline = max(within.deadline, notify.state.extend_until)
                await notify.wait()
        while True:
            if await self.check() is None:
                return
            await trio.sleep(SUCCESSOR_PROBE_INTERVAL)
