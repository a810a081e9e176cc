"""The supervisor's two seams to the world: the launcher that starts processes, the prober.

The supervisor is handed one of each. The real ones start service processes
(:class:`hearthlink_trio.supervisor.launcher.ServiceLauncher`) and probe them
(:class:`ServiceProber`); the tests' fakes script both on trio's virtual clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import trio

from hearthlink_trio.config import Service
from hearthlink_trio.probes.exec import probe_exec
from hearthlink_trio.probes.http import HttpProber
from hearthlink_trio.probes.owner import probe_owned
from hearthlink_trio.probes.tcp import probe_tcp
from hearthlink_trio.process.notify import NotifyReceiver
from hearthlink_trio.process.spawn import KillMode


class Process(Protocol):
    """A started service process, leader of its own process group."""

    @property
    def pid(self) -> int: ...

    @property
    def start_ticks(self) -> int | None: ...

    @property
    def stdout(self) -> trio.abc.ReceiveStream: ...

    @property
    def stderr(self) -> trio.abc.ReceiveStream: ...

    @property
    def notify(self) -> NotifyReceiver | None:
        """Its notify socket, with ``probe = "notify"``."""

    def share_service(self) -> None:
        """Count only its own group and descendants from now on (a successor shares the
        service's cgroup and marks): called before a rolling restart stops it."""

    async def wait_exited(self) -> None:
        """Return once the process has exited (it is reaped by :meth:`stop`)."""

    def peek_returncode(self) -> int:
        """The exit status of an exited process (``-N`` for signal N)."""

    async def stop(
        self,
        stop_signal: int,
        timeout: float,
        force: trio.Event,
        *,
        kill_mode: KillMode = "group",
        waiting: Callable[[float, int], None] | None = None,
    ) -> int:
        """Stop the whole group (signal, grace, SIGKILL), reap; returns the exit status.

        ``kill_mode="mixed"`` sends the stop signal to the main process only. ``waiting``
        is called once a second while the stop waits: (seconds since the signal, processes
        left)."""

    def close_streams(self) -> None: ...


class Launcher(Protocol):
    def take(self, service: Service, env: Mapping[str, str]) -> tuple[Process, bool] | None:
        """The process started for ``service`` before the supervisor loaded, if any, and
        whether it passed its probe already."""

    def launch(self, service: Service, env: Mapping[str, str]) -> Process:
        """Start ``service``'s process now.

        Raises:
            OSError: it could not be started (the program is missing, say).
        """


class Prober(Protocol):
    async def probe(self, service: Service, timeout: float, env: Mapping[str, str]) -> str | None:
        """None when ``service`` passes its probe within ``timeout``, else why not.

        ``env`` is the service's environment (an exec probe runs with it).
        """

    async def probe_process(
        self, service: Service, timeout: float, env: Mapping[str, str], pid: int
    ) -> str | None:
        """As :meth:`probe`, but passed only by process ``pid`` itself: an http/tcp probe
        counts only when that process accepted its connection (on a held socket, another
        process of the service may accept it)."""

    def forget(self, service: Service) -> None:
        """Drop what is kept for ``service`` (its process is gone)."""

    async def aclose(self) -> None: ...


class ServiceProber:
    """Runs the polled probes: HTTP, TCP or a program, as the service's config says (the
    other kinds are told apart in ``readiness.py``, which asks this prober for these)."""

    def __init__(self) -> None:
        self._http = HttpProber()

    async def probe(self, service: Service, timeout: float, env: Mapping[str, str]) -> str | None:
        probe = service.probe
        if probe.kind == "http" and service.health_url is not None:
            return await self._http.probe(
                service.health_url, timeout, status=probe.status, json_body=probe.json
            )
        if probe.kind == "tcp" and service.port is not None:
            return await probe_tcp(service.host, service.port, timeout)
        if probe.kind == "exec":
            return await probe_exec(probe.argv, env=env, cwd=service.cwd, timeout=timeout)
        return None

    async def probe_process(
        self, service: Service, timeout: float, env: Mapping[str, str], pid: int
    ) -> str | None:
        probe = service.probe
        if probe.kind in ("http", "tcp") and service.port is not None:
            return await probe_owned(
                service.host,
                service.port,
                pid,
                timeout,
                url=service.health_url if probe.kind == "http" else None,
                status=probe.status,
                json_body=probe.json,
            )
        return await self.probe(service, timeout, env)

    def forget(self, service: Service) -> None:
        if service.health_url is not None:
            self._http.forget(service.health_url)

    async def aclose(self) -> None:
        await self._http.aclose()
