"""Services started before the supervisor has loaded, to be handed over to it.

``hearthlink run`` spends about 0.2 s importing trio and the rest of the supervisor. The
services that wait for nothing need none of it to start: once the preflight has passed,
they are spawned at once (still from the main thread, with the parent-death signal, in
their cgroups), and they boot while the supervisor loads. The supervisor's first launch
of each of them then takes the process already running instead of starting one; it probes
and watches it like any other. Nothing here imports trio.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping

from hearthlink_trio.config import Config, Service
from hearthlink_trio.process.containment import Containment
from hearthlink_trio.process.spawn import Child, spawn
from hearthlink_trio.supervisor.environment import child_environment
from hearthlink_trio.supervisor.secrets import Secrets


class EarlyStart:
    """The launcher of a run: hands over the services started early (if :meth:`start` was
    called), and starts every other process in the run's containment (its mark, the
    service's cgroup)."""

    def __init__(self, containment: Containment | None) -> None:
        self._containment = containment
        self._early: dict[str, tuple[Child, dict[str, str]]] = {}

    def _spawn(self, service: Service, env: Mapping[str, str]) -> Child:
        lineage = self._containment.lineage(service.name) if self._containment else None
        return spawn(service.argv, env=env, cwd=service.cwd, user=service.user, lineage=lineage)

    def start(self, config: Config, secrets: Secrets) -> None:
        """Start every service that depends on nothing. One that cannot start is left to
        the supervisor, which tries again and reports why."""
        for service in config.services:
            if service.conditions:
                continue
            env = child_environment(config, service, secrets)
            with contextlib.suppress(Exception):
                self._early[service.name] = (self._spawn(service, env), env)

    def launch(self, service: Service, env: Mapping[str, str]) -> Child:
        early = self._early.pop(service.name, None)
        if early is not None:
            child, early_env = early
            if early_env == dict(env):
                return child
            _discard(child)  # started with another environment: start it anew
        return self._spawn(service, env)

    def close(self) -> None:
        """Stop what was started early but never handed over (the run ended first)."""
        for child, _ in self._early.values():
            _discard(child)
        self._early.clear()


def _discard(child: Child) -> None:
    """Kill a process started early (its whole group) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.reap()
    child.close_streams()
