"""The supervisor (SPEC §5): a root nursery, one nursery per service, cancellation to stop.

Shape, top-down::

    Supervisor.run                       outer nursery, outlives the shutdown: signals,
      │                                  the control API, sd_notify and its watchdog
      └─ services scope                  cancelled on the first SIGINT/SIGTERM, `hearthlink
           │                             stop` or a fatal error (a critical service gave up)
           └─ root nursery
                ├─ ServiceRunner.run     one per service: wait for dependencies, then
                │    └─ incarnation      nursery: process, stdout pump, stderr pump, health
                │                        loop (and the exit and manual-restart watchers)
                ├─ phase-switch logger
                └─ reloads (SIGHUP)      retire removed/changed runners, start new ones

What happens on SIGTERM: :meth:`Supervisor._watch_signals` cancels the services scope. Every
runner's current incarnation runs its shielded ``finally``: wait until its dependents' processes
are gone, send ``stop_signal`` to its process group, wait up to ``stop_timeout``, SIGKILL the
group, reap, and drain the pumps (at most :data:`PUMP_DRAIN_SECONDS`). A second signal sets
``force``: every stop that is waiting SIGKILLs at once.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

import hearthlink_trio
from hearthlink_trio.config import Config, Service, load_config
from hearthlink_trio.control import ControlSocketError, serve_control
from hearthlink_trio.errors import EXIT_FATAL, EXIT_FORCED, EXIT_OK, EXIT_PREFLIGHT, ConfigError
from hearthlink_trio.health import Prober
from hearthlink_trio.output import Console, ServiceLog, ServiceOutput, pump
from hearthlink_trio.policy import ProbeTracker, Verdict, backoff_delay
from hearthlink_trio.preflight import GroupRecord, check_port
from hearthlink_trio.process import Child, describe_exit, spawn
from hearthlink_trio.sdnotify import Notifier, clean_child_env

#: How long the pumps may keep reading after their process exited.
PUMP_DRAIN_SECONDS = 1.0
#: Exit status by which a service says "my configuration is wrong; do not restart me".
EX_CONFIG = 78


class State(enum.Enum):
    """A service's state. ``status`` (SPEC §5.6) is the coarser word shown to clients."""

    WAITING = "waiting"  # for its dependencies to be healthy
    STARTING = "starting"  # process started, not yet passed a probe
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # running, failing probes, not yet past the threshold
    BACKOFF = "backoff"  # stopped, waiting to be restarted
    FAILED = "failed"  # given up
    STOPPING = "stopping"
    STOPPED = "stopped"

    @property
    def status(self) -> str:
        return _STATUS[self]


_STATUS = {
    State.WAITING: "starting",
    State.STARTING: "starting",
    State.HEALTHY: "running",
    State.UNHEALTHY: "running",
    State.BACKOFF: "stopped",
    State.FAILED: "error",
    State.STOPPING: "stopped",
    State.STOPPED: "stopped",
}


class End(enum.Enum):
    """Why a process incarnation ended."""

    EXITED = "exited"
    UNHEALTHY = "unhealthy"
    MANUAL = "manual"
    CONFIG = "config"  # exited with EX_CONFIG: give up at once
    SPAWN_FAILED = "spawn_failed"


def _g(seconds: float) -> str:
    return f"{seconds:g}s"


def resource_dir() -> Path:
    """The folder holding the ``hearthlink_trio`` package (the seed's resource dir)."""
    return Path(hearthlink_trio.__file__).resolve().parent.parent


def child_environment(
    config: Config,
    service: Service,
    *,
    token: str,
    vault_key: str | None,
) -> dict[str, str]:
    """The environment of one service process (SPEC §3)."""
    env = clean_child_env(dict(os.environ))
    env.pop("HEARTHLINK_VAULT_KEY", None)
    env["HEARTHLINK_DATA_DIR"] = str(config.data_dir)
    env["HEARTHLINK_SERVICE"] = service.name
    env["HEARTHLINK_API_TOKEN"] = token
    for other in config.services:
        env[f"HEARTHLINK_{other.name.upper().replace('-', '_')}_URL"] = other.url
    paths = [str(resource_dir())]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if service.name == "vault" and vault_key is not None:
        env["HEARTHLINK_VAULT_KEY"] = vault_key
    env.update(service.env)
    return env


@dataclass
class Outcome:
    end: End
    detail: str = ""


class ServiceRunner:
    """Runs one service for the supervisor's life: start, watch, restart, give up, stop."""

    def __init__(self, sup: Supervisor, service: Service, index: int, env: dict[str, str]) -> None:
        self.sup = sup
        self.service = service
        self.name = service.name
        self.env = env
        self.state = State.WAITING
        self.child: Child | None = None
        self.started_at: float | None = None
        self.last_health_check: float | None = None
        self.error_message: str | None = None
        self.restart_count = 0
        self.last_restart: float | None = None
        self.restart_backoff = backoff_delay(1, sup.config.restart)
        #: Has passed a probe at least once since the supervisor started.
        self.ever_healthy = False
        self.out = ServiceOutput(
            service.name,
            index,
            sup.console,
            ServiceLog(
                sup.config.log_dir / f"{service.name}.log",
                max_bytes=sup.config.log_max_bytes,
                backups=sup.config.log_backups,
            ),
        )
        self._restart_requested = trio.Event()
        #: Set while this service has no live process; dependencies wait on it at shutdown.
        self.gone = trio.Event()
        self.gone.set()
        #: Cancelled to retire this runner alone (its service removed or changed by a reload).
        self.scope = trio.CancelScope()
        self.retiring = False
        #: Set once :meth:`run` has returned and its process is gone.
        self.done = trio.Event()

    # -- state ------------------------------------------------------------------------

    def _set(self, state: State, error: str | None = None) -> None:
        self.state = state
        if error is not None:
            self.error_message = error
        self.sup.changed()

    def snapshot(self) -> dict[str, Any]:
        """The seed's ServiceStatus fields, plus ``state`` (the finer state)."""
        return {
            "name": self.name,
            "status": self.state.status,
            "state": self.state.value,
            "port": self.service.port,
            "pid": self.child.pid if self.child is not None else None,
            "started_at": self.started_at,
            "health_check_url": self.service.health_url,
            "last_health_check": self.last_health_check,
            "error_message": self.error_message,
            "restart_count": self.restart_count,
            "last_restart": self.last_restart,
            "restart_backoff": self.restart_backoff,
            "critical": self.service.critical,
        }

    def request_restart(self) -> str:
        """Manual restart (SPEC §5.3); returns what will happen, for the caller to show."""
        if self.state is State.BACKOFF:
            return "in backoff; it restarts when its wait is over"
        if self.state is State.FAILED:
            self.restart_count = 0
        self._restart_requested.set()
        return "restarting"

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            with self.scope:
                await self._supervise()
        finally:
            self.state = State.STOPPED
            self.out.log.close()
            self.done.set()
            self.sup.changed()

    def retire(self) -> None:
        """Stop this service for good (a reload removed or changed it)."""
        self.retiring = True
        self.scope.cancel()

    async def _supervise(self) -> None:
        log = self.sup.log
        await self._wait_for_dependencies()
        attempt = 0
        while True:
            outcome = await self._incarnation(attempt)
            attempt = 0
            if outcome.end is End.MANUAL:
                continue
            if outcome.end is End.CONFIG:
                self._give_up(
                    f"{self.name} service exited with status {EX_CONFIG} (configuration "
                    "error), not restarting",
                    self.out.last_line or "configuration error (exit status 78)",
                )
                await self._wait_for_manual_restart()
                continue
            if self.restart_count >= self.sup.config.restart.max_attempts:
                self._give_up(
                    f"Service {self.name} has failed {self.restart_count} times, not restarting",
                    outcome.detail,
                )
                await self._wait_for_manual_restart()
                continue
            self.restart_count += 1
            attempt = self.restart_count
            delay = backoff_delay(attempt, self.sup.config.restart)
            self.restart_backoff = delay
            self._set(State.BACKOFF, outcome.detail)
            log.info(
                "Restarting %s service with exponential backoff",
                self.name,
                extra={"event": "restarting", "service": self.name, "backoff": delay},
            )
            await trio.sleep(delay)

    def _give_up(self, line: str, error: str) -> None:
        self.sup.log.error(
            line, extra={"event": "gave_up", "service": self.name, "attempt": self.restart_count}
        )
        # The error may be the service's own last output line: it is shown by `status` and
        # logged, so the secrets the supervisor handed out are masked in it (SPEC §8).
        error = self.sup.redact(error)
        self._set(State.FAILED, error)
        if self.service.critical:
            self.sup.fatal(f"critical service {self.name} gave up: {error}")

    async def _wait_for_manual_restart(self) -> None:
        self._restart_requested = trio.Event()
        await self._restart_requested.wait()
        self.sup.log.info(
            "Manual restart of %s service",
            self.name,
            extra={"event": "manual_restart", "service": self.name},
        )

    async def _wait_for_dependencies(self) -> None:
        deps = [self.sup.runners[name] for name in self.service.depends_on]
        while not all(dep.state is State.HEALTHY for dep in deps):
            waiting = ", ".join(d.name for d in deps if d.state is not State.HEALTHY)
            self.error_message = f"waiting for {waiting} to be healthy"
            await self.sup.wait_changed()
        self.error_message = None

    async def _incarnation(self, attempt: int) -> Outcome:
        """Start the process once and watch it until it exits, fails health or is restarted."""
        sup = self.sup
        self._restart_requested = trio.Event()
        try:
            # One spawn per scheduler batch: a spawn blocks the loop for a few ms (fork and
            # exec), and N of them back to back kept every probe waiting at start-up.
            async with sup.spawn_lock:
                child = spawn(self.service.argv, env=self.env, cwd=self.service.cwd)
        except OSError as exc:
            reason = f"could not start: {exc.strerror or exc}"
            sup.log.error(
                "%s service %s",
                self.name,
                reason,
                extra={"event": "spawn_failed", "service": self.name},
            )
            return Outcome(End.SPAWN_FAILED, reason)
        self.child = child
        self.gone = trio.Event()
        now_wall = time.time()
        self.started_at = now_wall
        if attempt:
            self.last_restart = now_wall
        sup.groups.add(self.name, child.pid, child.start_ticks)
        self._set(State.STARTING)
        sup.log.info(
            "Started %s service on port %d with PID %d",
            self.name,
            self.service.port,
            child.pid,
            extra={
                "event": "started",
                "service": self.name,
                "pid": child.pid,
                "port": self.service.port,
            },
        )
        if attempt:
            self.restart_backoff = backoff_delay(attempt + 1, sup.config.restart)
            sup.log.info(
                "Service %s restarted (attempt %d), next backoff: %s",
                self.name,
                attempt,
                _g(self.restart_backoff),
                extra={
                    "event": "restarted",
                    "service": self.name,
                    "attempt": attempt,
                    "backoff": self.restart_backoff,
                },
            )
        outcome = Outcome(End.EXITED)
        pumps_done = trio.Event()
        pump_scopes: list[trio.CancelScope] = []
        try:
            async with trio.open_nursery() as nursery:
                remaining = [2]

                async def run_pump(stream: trio.lowlevel.FdStream) -> None:
                    # Shielded: the pumps keep draining while the process shuts down, so it can
                    # log its last words; they are ended below once it has exited.
                    with trio.CancelScope(shield=True) as scope:
                        pump_scopes.append(scope)
                        await pump(stream, self.out)
                    remaining[0] -= 1
                    if not remaining[0]:
                        pumps_done.set()

                nursery.start_soon(run_pump, child.stdout)
                nursery.start_soon(run_pump, child.stderr)
                try:
                    async with trio.open_nursery() as watch:

                        async def on_exit() -> None:
                            await child.wait_exited()
                            code = child.peek_returncode()
                            if code == EX_CONFIG:
                                outcome.end, outcome.detail = End.CONFIG, "configuration error"
                            else:
                                detail = describe_exit(code)
                                outcome.end, outcome.detail = End.EXITED, f"exited ({detail})"
                                if not sup.shutting_down:
                                    sup.log.warning(
                                        "%s service exited (%s), scheduling restart",
                                        self.name,
                                        detail,
                                        extra={
                                            "event": "exited",
                                            "service": self.name,
                                            "exit_code": code,
                                        },
                                    )
                            watch.cancel_scope.cancel()

                        async def on_manual() -> None:
                            await self._restart_requested.wait()
                            outcome.end, outcome.detail = End.MANUAL, "manual restart"
                            sup.log.info(
                                "Manual restart of %s service",
                                self.name,
                                extra={"event": "manual_restart", "service": self.name},
                            )
                            watch.cancel_scope.cancel()

                        async def on_health() -> None:
                            reason = await self._health_loop()
                            outcome.end, outcome.detail = End.UNHEALTHY, reason
                            watch.cancel_scope.cancel()

                        watch.start_soon(on_exit)
                        watch.start_soon(on_manual)
                        watch.start_soon(on_health)
                finally:
                    with trio.CancelScope(shield=True):
                        if sup.shutting_down:
                            for dependent in sup.dependents[self.name]:
                                await dependent.gone.wait()
                            self.state = State.STOPPING
                            sup.changed()
                        code = await child.stop(
                            self.service.stop_signal, self.service.stop_timeout, sup.force
                        )
                        sup.groups.remove(self.name)
                        with trio.move_on_after(PUMP_DRAIN_SECONDS):
                            await pumps_done.wait()
                        for scope in pump_scopes:
                            scope.cancel()
                        self.child = None
                        self.gone.set()
                        if sup.shutting_down or self.retiring:
                            sup.log.info(
                                "Stopped %s service (%s)",
                                self.name,
                                describe_exit(code),
                                extra={"event": "stopped", "service": self.name, "exit_code": code},
                            )
        finally:
            child.close_streams()
            sup.prober.forget(self.service.health_url)
        return outcome

    async def _health_loop(self) -> str:
        """Probe until the service is unhealthy; returns the last failure's reason."""
        sup = self.sup
        health = sup.config.health
        tracker = ProbeTracker(health, sup.started, process_start=trio.current_time())
        healthy_since: float | None = None
        reason = ""
        while True:
            now = trio.current_time()
            delay = tracker.next_delay(now)
            if healthy_since is not None and self.restart_count:
                # Wake up in time to reset the count once stable (SPEC §5.3).
                delay = min(delay, max(0.0, healthy_since + sup.config.restart.stable_after - now))
            await trio.sleep(delay)
            result = await sup.prober.probe(self.service.health_url)
            now = trio.current_time()
            verdict = tracker.observe(result is None, now)
            if result is None:
                self.last_health_check = time.time()
            else:
                reason = result
            if verdict is Verdict.FIRST_PASS:
                healthy_since = now
                self.ever_healthy = True
                self.error_message = None
                self._set(State.HEALTHY)
                sup.log.info(
                    "%s service is healthy",
                    self.name,
                    extra={"event": "healthy", "service": self.name},
                )
            elif verdict is Verdict.PASSED:
                if self.state is State.UNHEALTHY:
                    healthy_since = now
                    self.error_message = None
                    self._set(State.HEALTHY)
                    sup.log.info(
                        "%s service is healthy again",
                        self.name,
                        extra={"event": "healthy", "service": self.name},
                    )
                if (
                    self.restart_count
                    and healthy_since is not None
                    and now - healthy_since >= sup.config.restart.stable_after
                ):
                    self.restart_count = 0
                    self.restart_backoff = backoff_delay(1, sup.config.restart)
                    sup.changed()
            elif verdict is Verdict.FAILED:
                healthy_since = None
                self._set(State.UNHEALTHY, error=reason)
            elif verdict is Verdict.UNHEALTHY:
                self.sup.log.warning(
                    "%s service unhealthy (%s), scheduling restart",
                    self.name,
                    reason,
                    extra={"event": "unhealthy", "service": self.name},
                )
                return f"unhealthy ({reason})"


class Supervisor:
    """Supervises every service of ``config`` until a signal, a stop request or a fatal error."""

    def __init__(
        self,
        config: Config,
        log: logging.Logger,
        *,
        token: str,
        vault_key: str | None,
        console: Console,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.notifier = notifier or Notifier(None)
        self.log = log
        self.console = console
        self.groups = GroupRecord(config.run_dir)
        self.force = trio.Event()
        self.shutting_down = False
        self.exit_code = EXIT_OK
        self.started = 0.0
        self._changed = trio.Event()
        #: Serializes spawns, each in its own scheduler batch (see ServiceRunner._incarnation).
        self.spawn_lock = trio.Lock()
        self._services_scope = trio.CancelScope()
        self.prober: Prober
        self._token = token
        self._vault_key = vault_key
        self._secrets = [secret for secret in (token, vault_key) if secret]
        self._root: trio.Nursery | None = None
        self._reload_lock = trio.Lock()
        self.runners: dict[str, ServiceRunner] = {}
        self.dependents: dict[str, list[ServiceRunner]] = {}
        for service in config.services:
            self.runners[service.name] = self._runner(service)
        self._link_dependents()

    def _runner(self, service: Service) -> ServiceRunner:
        env = child_environment(self.config, service, token=self._token, vault_key=self._vault_key)
        return ServiceRunner(self, service, self.config.names.index(service.name), env)

    def _link_dependents(self) -> None:
        self.dependents = {name: [] for name in self.runners}
        for runner in self.runners.values():
            for dep in runner.service.depends_on:
                self.dependents[dep].append(runner)

    # -- state changes ---------------------------------------------------------------

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def overall_status(self) -> str:
        if self.shutting_down:
            return "stopping"
        runners = self.runners.values()
        # SPEC §5.6: starting until every service has passed its first probe or failed (or
        # waits on a dependency that failed: it will not start by itself either).
        if any(not r.ever_healthy and not self._stuck(r) for r in runners):
            return "starting"
        if all(r.state is State.HEALTHY for r in runners):
            return "healthy"
        return "degraded"

    def redact(self, text: str) -> str:
        """``text`` with the API token and the Vault key replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _stuck(self, runner: ServiceRunner) -> bool:
        """Failed, or waiting on a dependency that is (directly or further down)."""
        if runner.state is State.FAILED:
            return True
        return runner.state is State.WAITING and any(
            self._stuck(self.runners[dep])
            for dep in runner.service.depends_on
            if dep in self.runners
        )

    def health(self) -> dict[str, Any]:
        """The object of ``GET /v1/health`` (SPEC §6)."""
        return {
            "status": self.overall_status(),
            "pid": os.getpid(),
            "services": [runner.snapshot() for runner in self.runners.values()],
        }

    # -- requests ----------------------------------------------------------------------

    def restart(self, name: str) -> None:
        """Manual restart of service ``name`` (control API). KeyError for an unknown name."""
        what = self.runners[name].request_restart()
        self.log.info(
            "Restart of %s service requested: %s",
            name,
            what,
            extra={"event": "restart_requested", "service": name},
        )

    def shutdown(self, reason: str = "Shutdown requested") -> None:
        """Begin a graceful stop of every service (idempotent)."""
        if not self.shutting_down:
            self.log.info("%s, stopping all services", reason, extra={"event": "shutdown"})
            self.shutting_down = True
            self.changed()
        self._services_scope.cancel()

    def fatal(self, reason: str) -> None:
        self.exit_code = EXIT_FATAL
        self.shutdown(f"Fatal: {reason}")

    # -- the run ----------------------------------------------------------------------

    async def run(self) -> int:
        """Supervise until stopped; returns the exit code (SPEC §4)."""
        self.started = trio.current_time()
        async with trio.open_nursery() as outer:
            await outer.start(self._watch_signals)
            try:
                await outer.start(serve_control, self.config.control_socket, self)
            except (ControlSocketError, OSError) as exc:
                self.log.error(
                    "Control socket %s: %s",
                    self.config.control_socket,
                    exc,
                    extra={"event": "control_error"},
                )
                outer.cancel_scope.cancel()
                return EXIT_PREFLIGHT
            if self.notifier.enabled:
                outer.start_soon(self.notifier.watchdog_loop)
                outer.start_soon(self._notify_systemd)
            async with Prober(timeout=self.config.health.timeout) as prober:
                self.prober = prober
                with self._services_scope:
                    async with trio.open_nursery() as root:
                        self._root = root
                        for runner in self.runners.values():
                            root.start_soon(runner.run)
                        root.start_soon(self._announce_steady_phase)
                        await trio.sleep_forever()
            self.groups.clear()
            outer.cancel_scope.cancel()
        return self.exit_code

    async def _watch_signals(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    if not self.shutting_down:
                        self.reload()
                elif not self.shutting_down:
                    self.shutdown(f"Received {name}")
                elif not self.force.is_set():
                    self.log.warning(
                        "Received %s again, killing all services now",
                        name,
                        extra={"event": "forced"},
                    )
                    self.exit_code = EXIT_FORCED
                    self.force.set()

    # -- systemd -----------------------------------------------------------------------

    def status_text(self) -> str:
        """One line for systemd's STATUS=: ``4/4 healthy``, ``vault restarting (attempt 2)``."""
        if self.shutting_down:
            return "stopping"
        runners = list(self.runners.values())
        for runner in runners:
            if runner.state is State.BACKOFF:
                return f"{runner.name} restarting (attempt {runner.restart_count})"
        healthy = sum(runner.state is State.HEALTHY for runner in runners)
        text = f"{healthy}/{len(runners)} healthy"
        failed = [runner.name for runner in runners if runner.state is State.FAILED]
        return f"{text}, {', '.join(failed)} failed" if failed else text

    async def _notify_systemd(self) -> None:
        """READY=1 once start-up is over, STATUS= on every change, STOPPING=1 at shutdown.

        Start-up is over when every service has passed its first probe (READY=1 with
        "N/N healthy"), or has passed or failed (READY=1 with the failed ones named), so
        that one failed service does not make systemd time the whole unit out.
        """
        ready = False
        last = ""
        while True:
            changed = self._changed  # taken first: a change while sending is not missed
            text = self.status_text()
            if self.shutting_down:
                await self.notifier.stopping(text)
                return
            if not ready and self.overall_status() != "starting":
                ready = True
                await self.notifier.ready(text)
            elif text != last:
                await self.notifier.status(text)
            last = text
            await changed.wait()

    # -- reload (SIGHUP) ------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read the config file and apply the difference (see :meth:`_reload`)."""
        if self._root is None:
            self.log.warning(
                "Config reload ignored: the supervisor is still starting; send SIGHUP again",
                extra={"event": "reload_refused"},
            )
            return
        self._root.start_soon(self._reload)

    async def _reload(self) -> None:
        # One reload at a time, each against the config the running services have: a second
        # SIGHUP while the first is still stopping services waits, then diffs against it.
        async with self._reload_lock:
            plan = self._plan_reload()
            if plan is not None:
                await self._swap_runners(*plan)

    def _plan_reload(self) -> tuple[list[str], list[str]] | None:
        """Load the new config and adopt it; the services to stop and to start, or None.

        Added services start, removed ones stop, changed ones (any setting of their own
        table) are stopped and started with the new settings; the rest are left alone. The
        [restart] section applies at once; [health] from each service's next start. A new
        config that is invalid, moves the data dir, or wants a busy port is refused whole.
        """
        log = self.log
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            for line in exc.problems:
                log.error(line, extra={"event": "config_error"})
            log.error(
                "Config reload refused; the running services keep their config",
                extra={"event": "reload_refused"},
            )
            return None
        old = self.config
        if (new.data_dir, new.log_dir, new.control_socket) != (
            old.data_dir,
            old.log_dir,
            old.control_socket,
        ):
            log.error(
                "Config reload refused: data_dir, log_dir and control_socket cannot change "
                "while running; restart hearthlink to move them",
                extra={"event": "reload_refused"},
            )
            return None
        before = {svc.name: svc for svc in old.services}
        after = {svc.name: svc for svc in new.services}
        removed = [name for name in before if name not in after]
        added = [name for name in after if name not in before]
        changed = [name for name in after if name in before and after[name] != before[name]]
        busy = []
        for name in added + changed:
            if name in before and before[name].port == after[name].port:
                continue
            reason = check_port(after[name])
            if reason is not None:
                busy.append(f"Port {after[name].port} unavailable for {name} service: {reason}")
        if busy:
            for line in busy:
                log.error(line, extra={"event": "port_unavailable"})
            log.error(
                "Config reload refused; the running services keep their config",
                extra={"event": "reload_refused"},
            )
            return None
        self.config = new
        summary = "; ".join(
            f"{what} {', '.join(names)}"
            for what, names in (("added", added), ("removed", removed), ("changed", changed))
            if names
        )
        log.info(
            "Config reloaded: %s", summary or "no service changed", extra={"event": "reloaded"}
        )
        return removed + changed, added + changed

    async def _swap_runners(self, stop: list[str], start: list[str]) -> None:
        retiring = [self.runners[name] for name in stop]
        for runner in retiring:
            runner.retire()
        for runner in retiring:
            await runner.done.wait()
        for name in stop:
            del self.runners[name]
        order = self.config.names
        for name in start:
            self.runners[name] = self._runner(self.config.service(name))
        self.runners = {name: self.runners[name] for name in order}
        self._link_dependents()
        assert self._root is not None
        for name in start:
            self._root.start_soon(self.runners[name].run)
        self.changed()

    async def _announce_steady_phase(self) -> None:
        health = self.config.health
        await trio.sleep_until(self.started + health.startup_period)
        self.log.info(
            "Health monitoring: Switching to steady-state mode (%s intervals)",
            _g(health.steady_interval),
            extra={"event": "steady_state"},
        )
