"""The launcher of a run: starts every service process, the first ones before trio loads.

``hearthlink run`` spends about 0.2 s importing trio and the rest of the supervisor. The
services that wait for nothing need none of it to start: once the preflight has passed,
:meth:`ServiceLauncher.start` spawns them at once (from the main thread, with the
parent-death signal, in their cgroups), and they boot while the supervisor loads. The
supervisor then takes each of them over (:meth:`ServiceLauncher.take`) before it handles
any signal, so a stop at any moment finds them announced and owned by their runner, and
stops them like any other process. Nothing here imports trio.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Mapping

from hearthlink_trio.config import Config, Service
from hearthlink_trio.process.containment import Containment
from hearthlink_trio.process.joiner import CgroupJoiner
from hearthlink_trio.process.notify import NotifyReceiver
from hearthlink_trio.process.sockets import HeldSockets
from hearthlink_trio.process.spawn import Child, spawn
from hearthlink_trio.supervisor.environment import child_environment
from hearthlink_trio.supervisor.secrets import Secrets


class ServiceLauncher:
    """Starts service processes in the run's containment (its mark, the service's cgroup),
    and keeps those started before the supervisor loaded until it takes them over."""

    def __init__(self, containment: Containment | None, sockets: HeldSockets | None = None) -> None:
        self._containment = containment
        self._joiner: CgroupJoiner | None = None
        #: Started but not yet given to the joiner (while :meth:`start` starts a batch).
        self._to_join: list[Child] | None = None
        self._early: dict[str, tuple[Child, dict[str, str]]] = {}
        #: The listening sockets held for the services with ``socket = true``.
        self.sockets = sockets if sockets is not None else HeldSockets()

    def start(
        self,
        config: Config,
        secrets: Secrets,
        *,
        stop_asked: Callable[[], bool],
        selected: frozenset[str] | None = None,
    ) -> None:
        """Start every service that depends on nothing (of the ``selected`` ones, default
        all; a scheduled task waits for its time), until ``stop_asked()`` (a signal came
        meanwhile: nothing more is started). One that cannot start is left to the
        supervisor, which tries again and reports why."""
        if self._containment is not None:
            # Every service's cgroup first: making one waits for any move into a cgroup
            # under way (the kernel holds one lock for both).
            for service in config.services:
                with contextlib.suppress(OSError):  # the service's start reports it
                    self._containment.lineage(service.name)
        self._to_join = []
        try:
            self._start(config, secrets, stop_asked, selected)
        finally:
            # Moved into their cgroups together once all have started: the moves share one
            # wait for the kernel, and none competes with the starts for the interpreter.
            batch, self._to_join = self._to_join, None
            for child in batch:
                self._join(child)

    def _start(
        self,
        config: Config,
        secrets: Secrets,
        stop_asked: Callable[[], bool],
        selected: frozenset[str] | None,
    ) -> None:
        for service in config.services:
            if stop_asked():
                break
            if (
                service.conditions
                or service.schedule
                or (selected is not None and service.name not in selected)
            ):
                continue
            env = child_environment(config, service, secrets)
            with contextlib.suppress(Exception):  # the supervisor's own launch reports it
                self._early[service.name] = (self.launch(service, env), env)

    def early(self) -> list[tuple[str, Child]]:
        """The processes started before the supervisor, not yet taken over."""
        return [(name, child) for name, (child, _) in self._early.items()]

    def take(self, service: Service, env: Mapping[str, str]) -> Child | None:
        """The process started early for ``service`` (None if there is none). One started
        with another environment than ``env`` (a secret file replaced meanwhile) is killed:
        the service starts anew."""
        early = self._early.pop(service.name, None)
        if early is None:
            return None
        child, early_env = early
        if early_env == dict(env):
            return child
        _discard(child)
        return None

    def launch(self, service: Service, env: Mapping[str, str]) -> Child:
        """Start ``service``'s process in its containment.

        Raises:
            OSError: it could not be started or could not join its cgroup.
        """
        lineage = self._containment.lineage(service.name) if self._containment else None
        fd = self.sockets.fd_for(service)
        receiver = None
        if service.probe.kind == "notify":
            # Its own socket, made before it starts: its messages are told from others'
            # (what they say is read by the readiness of the process, readiness.py).
            receiver = NotifyReceiver(service.name)
            env = {**env, "NOTIFY_SOCKET": receiver.address}
            if service.watchdog:
                env["WATCHDOG_USEC"] = str(round(service.watchdog * 1_000_000))
        try:
            child = spawn(
                service.argv,
                env=env,
                cwd=service.cwd,
                user=service.user,
                lineage=lineage,
                listen=None if fd is None else (fd, service.group or service.name),
            )
        except BaseException:
            if receiver is not None:
                receiver.close()
            raise
        if receiver is not None:
            receiver.pid = child.pid
            child.notify = receiver
        if not child.contained.is_set():
            if self._to_join is not None:
                self._to_join.append(child)
            else:
                self._join(child)
        return child

    def _join(self, child: Child) -> None:
        lineage = child.lineage
        assert lineage is not None and lineage.cgroup is not None
        if self._joiner is None:
            self._joiner = CgroupJoiner(lineage.cgroup.parent)
        self._joiner.add(child)

    def close(self) -> None:
        """Kill what was started early and never taken over (the run failed before the
        supervisor began: nothing else can stop them)."""
        for child, _ in self._early.values():
            _discard(child)
        self._early.clear()
        if self._joiner is not None:
            self._joiner.close()
        self.sockets.close()


def _discard(child: Child) -> None:
    """Kill a process started early (its whole group) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.reap()
    child.close_streams()
