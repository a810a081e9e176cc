"""The launcher of a run: starts every service process, the first ones before trio loads.

``hearthlink run`` spends about 0.1 s importing trio and the rest of the supervisor. The
services that wait for nothing need none of it to start: once the preflight has passed,
:meth:`ServiceLauncher.start` spawns them at once (from the main thread, with the
parent-death signal, in their cgroups), and they boot while the supervisor loads.
Meanwhile a thread checks the http or tcp probes of those that others depend on, and
starts each dependent whose dependencies all pass (and so on down a chain), until the
supervisor takes over. The supervisor then takes each process over
(:meth:`ServiceLauncher.take`), in dependency order, before it handles any signal: it
announces it, says it healthy at once if it was found passing (so the log reads as if the
supervisor had started them: a dependency healthy before its dependent starts), and stops
it like any other process whenever the run ends. Nothing here imports trio.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping

from hearthlink_trio.config import Config, Service
from hearthlink_trio.process.containment import Containment
from hearthlink_trio.process.joiner import CgroupJoiner
from hearthlink_trio.process.notify import NotifyReceiver
from hearthlink_trio.process.sockets import HeldSockets
from hearthlink_trio.process.spawn import Child, spawn
from hearthlink_trio.supervisor.environment import child_environment
from hearthlink_trio.supervisor.secrets import Secrets

#: How often the thread checks the probes of the early services that others depend on
#: (a refused connection costs some microseconds).
FOLLOW_POLL_SECONDS = 0.001
#: How often the interpreter passes from thread to thread meanwhile.
FOLLOW_SWITCH_SECONDS = 0.001
#: The longest it waits on one check (an answer to a connection accepted).
FOLLOW_CHECK_TIMEOUT = 1.0
#: It gives up after this long (the supervisor takes over well before).
FOLLOW_SECONDS = 10.0


class ServiceLauncher:
    """Starts service processes in the run's containment (its mark, the service's cgroup),
    and keeps those started before the supervisor loaded until it takes them over."""

    def __init__(self, containment: Containment | None, sockets: HeldSockets | None = None) -> None:
        self._containment = containment
        self._joiner: CgroupJoiner | None = None
        #: Started but not yet given to the joiner (while :meth:`start` starts a batch).
        self._to_join: list[Child] | None = None
        self._early: dict[str, tuple[Child, dict[str, str]]] = {}
        #: The early services found to pass their probe (or whose probe is ``none``).
        self._passed: set[str] = set()
        #: Held while the thread starts a dependent; set ``_closed`` to end its starts.
        self._lock = threading.Lock()
        self._closed = False
        self._switch_interval: float | None = None
        #: Set once the run is over. Until then the thread that started dependents stays:
        #: the kernel sends a child its parent-death signal when the *thread* that started
        #: it ends, not only the process.
        self._run_over = threading.Event()
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
        dependents = [
            service
            for service in config.services
            if service.conditions and _startable(service, selected)
        ]
        if dependents and self._early and not stop_asked():
            # The thread's checks wait for the interpreter while the supervisor loads: hand
            # it over every millisecond meanwhile (5 ms by default), until the take-over.
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(FOLLOW_SWITCH_SECONDS)
            threading.Thread(
                target=self._follow,
                args=(config, secrets, stop_asked, dependents),
                name="hearthlink-early-dependents",
                daemon=True,
            ).start()

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
            if service.conditions or not _startable(service, selected):
                continue
            self._start_early(config, service, secrets)

    def _start_early(self, config: Config, service: Service, secrets: Secrets) -> None:
        env = child_environment(config, service, secrets)
        with contextlib.suppress(Exception):  # the supervisor's own launch reports it
            self._early[service.name] = (self.launch(service, env), env)
            if service.probe.kind == "none" and not service.is_task:
                self._passed.add(service.name)

    def _follow(
        self,
        config: Config,
        secrets: Secrets,
        stop_asked: Callable[[], bool],
        dependents: list[Service],
    ) -> None:
        """Until the supervisor takes over: start each of ``dependents`` once every service
        it depends on was started here and holds (started, or passing its probe). Then
        stay until the run is over (see ``_run_over``)."""
        try:
            self._start_dependents(config, secrets, stop_asked, dependents)
        finally:
            self._run_over.wait()

    def _start_dependents(
        self,
        config: Config,
        secrets: Secrets,
        stop_asked: Callable[[], bool],
        dependents: list[Service],
    ) -> None:
        # Loaded here, in this thread, once the first services have started.
        from hearthlink_trio.probes.early import CHECKED_KINDS, passes_now

        by_name = {service.name: service for service in config.services}
        timeout = min(config.health.timeout, FOLLOW_CHECK_TIMEOUT)
        deadline = time.monotonic() + FOLLOW_SECONDS
        waiting = list(dependents)
        while waiting and not self._closed and time.monotonic() < deadline:
            awaited = {dep for service in waiting for dep in service.conditions}
            for name in list(self._early):
                service = by_name[name]
                if (
                    name in awaited
                    and name not in self._passed
                    and not service.is_task
                    and service.probe.kind in CHECKED_KINDS
                    and passes_now(service, timeout)
                ):
                    self._passed.add(name)
            for service in list(waiting):
                if any(not self._holds(dep, how) for dep, how in service.conditions.items()):
                    continue
                waiting.remove(service)
                with self._lock:
                    if self._closed or stop_asked():
                        return
                    self._start_early(config, service, secrets)
            time.sleep(FOLLOW_POLL_SECONDS)

    def _holds(self, dependency: str, condition: str) -> bool:
        if dependency not in self._early:
            return False
        return condition == "started" or (condition == "healthy" and dependency in self._passed)

    def early(self) -> list[tuple[str, Child]]:
        """The processes started before the supervisor, not yet taken over."""
        return [(name, child) for name, (child, _) in self._early.items()]

    def take(self, service: Service, env: Mapping[str, str]) -> tuple[Child, bool] | None:
        """The process started early for ``service`` and whether it passed its probe
        already (None if there is none). One started with another environment than ``env``
        (a secret file replaced meanwhile) is killed: the service starts anew. The first
        call ends the early starts."""
        self._end_early_starts()
        early = self._early.pop(service.name, None)
        if early is None:
            return None
        child, early_env = early
        if early_env == dict(env):
            return child, service.name in self._passed
        _discard(child)
        return None

    def _end_early_starts(self) -> None:
        with self._lock:  # waits for a start under way
            self._closed = True
            if self._switch_interval is not None:
                sys.setswitchinterval(self._switch_interval)
                self._switch_interval = None

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
        self._end_early_starts()
        for child, _ in self._early.values():
            _discard(child)
        self._early.clear()
        self._run_over.set()
        if self._joiner is not None:
            self._joiner.close()
        self.sockets.close()


def _startable(service: Service, selected: frozenset[str] | None) -> bool:
    """Started with the run (a scheduled task waits for its time)."""
    return not service.schedule and (selected is None or service.name in selected)


def _discard(child: Child) -> None:
    """Kill a process started early (its whole group) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.reap()
    child.close_streams()
