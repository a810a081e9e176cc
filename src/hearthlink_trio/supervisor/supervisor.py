"""The supervisor: a root nursery, one runner per service, cancellation to stop.

Shape, top-down (the composition root, ``run.py``, holds the signal watcher, the control
API and sd_notify beside it, in a nursery that outlives the shutdown)::

    Supervisor.run
      └─ services scope            cancelled on the first SIGINT/SIGTERM, `hearthlink stop`
           │                       or a fatal error (a critical service gave up)
           └─ root nursery
                ├─ Runner.run      one per service (runner.py): dependencies, then one
                │                  incarnation after another (incarnation.py): process,
                │                  stdout pump, stderr pump, health loop
                ├─ steady-phase announcement
                └─ reloads         (SIGHUP) retire removed/changed runners, start new ones

What happens on SIGTERM: the watcher of ``run.py`` calls :meth:`Supervisor.on_signal`, and
so :meth:`shutdown`, which cancels the services scope (a signal that came before the watcher
existed, even before the first spawn, was kept and is handed over first). Each running
incarnation leaves its ``running`` block through its shielded stop: wait until its
dependents' processes are gone, send ``stop_signal`` to its process group, wait up to
``stop_timeout``, SIGKILL the group, reap, drain the output. A second signal sets
``force``: every stop that is waiting SIGKILLs at once. Processes started before the
supervisor loaded are taken over by :meth:`take_over` before anything else, so
they are announced and stopped like every other, whenever the stop comes; once the stop has
begun nothing new is started.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import trio

from hearthlink_trio.config import Config
from hearthlink_trio.config.selection import Selection, dependency_closure
from hearthlink_trio.control.hub import EventHub, EventLogHandler
from hearthlink_trio.errors import ExitCode
from hearthlink_trio.process.containment import Containment
from hearthlink_trio.process.groups import GroupRecord
from hearthlink_trio.process.memory import MemoryMeter
from hearthlink_trio.process.sockets import HeldSockets
from hearthlink_trio.process.usage import UsageSampler
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.cascade import Answer, Cascade
from hearthlink_trio.supervisor.command import ForegroundCommand
from hearthlink_trio.supervisor.context import Context
from hearthlink_trio.supervisor.launcher import ServiceLauncher
from hearthlink_trio.supervisor.output import Console
from hearthlink_trio.supervisor.reload import Plan, prepare_reload
from hearthlink_trio.supervisor.rolling import roll_changed, stop_successors, with_services
from hearthlink_trio.supervisor.runner import Runner
from hearthlink_trio.supervisor.seams import Launcher, Prober, Process, ServiceProber
from hearthlink_trio.supervisor.secrets import Secrets
from hearthlink_trio.supervisor.status import overall_status, service_status, systemd_status


class Supervisor:
    """Supervises every service of ``config`` until a signal, a stop request or a fatal error."""

    def __init__(
        self,
        config: Config,
        log: logging.Logger,
        *,
        secrets: Secrets,
        console: Console,
        launcher: Launcher | None = None,
        prober: Prober | None = None,
        containment: Containment | None = None,
        watch: bool = True,
        selection: Selection | None = None,
        foreground: ForegroundCommand | None = None,
    ) -> None:
        self.exit_code = ExitCode.OK
        #: Restart services whose watched files change (``--no-watch``: False).
        self._watch = watch
        self._watching: trio.CancelScope | None = None
        self._containment = containment
        #: ``hearthlink run -- CMD``: run once the services are ready; its end ends the run.
        self.foreground = foreground
        self.ctx = Context(
            config=config,
            log=log,
            launcher=launcher or ServiceLauncher(containment),
            prober=prober or ServiceProber(),
            console=console,
            secrets=secrets,
            groups=GroupRecord(
                config.run_dir, mirror=containment.sentinel if containment else None
            ),
            fatal=self.fatal,
            memory=MemoryMeter(containment.cgroup if containment else None),
        )
        #: The event stream's fan-out: every state change, probe result and output line.
        self.events = EventHub(on_drop=self._reader_dropped)
        self.ctx.publish = self.events.publish
        self.ctx.publish_lines = self.events.publish_lines
        self._usage = UsageSampler()
        #: What the run was asked to start (None: everything); a reload applies it again.
        self.selection = selection
        self.runners: dict[str, Runner] = {}
        picked = self._picked()
        for service in config.services:
            self._add_runner(service.name, selected=service.name in picked)
        self._services_scope = trio.CancelScope()
        self._root: trio.Nursery | None = None
        self._reload_lock = trio.Lock()
        self.stopped = trio.Event()

    def _picked(self) -> frozenset[str]:
        """The services of the current config that the run's selection starts."""
        if self.selection is None:
            return frozenset(self.config.names)
        return self.selection.pick(self.config)

    def _add_runner(self, name: str, *, selected: bool = True) -> Runner:
        config = self.ctx.config
        runner = Runner(
            self.ctx, config.service(name), index=config.names.index(name), selected=selected
        )
        self.runners[name] = runner
        self.ctx.records[name] = runner.record
        return runner

    @property
    def config(self) -> Config:
        return self.ctx.config

    @property
    def shutting_down(self) -> bool:
        return self.ctx.shutting_down

    # -- what clients see ---------------------------------------------------------------

    def overall_status(self) -> str:
        depends = {svc.name: svc.depends_on for svc in self.config.services}
        return overall_status(self.ctx.records, depends, shutting_down=self.shutting_down)

    def health(self) -> dict[str, Any]:
        """The object of ``GET /v1/health`` (and of the event stream's snapshot)."""
        usage = self._containment.usage if self._containment else lambda name: {}
        services = []
        for name, runner in self.runners.items():
            status = service_status(runner.record, runner.service, usage(name))
            status["selected"] = runner.selected
            if status["memory_bytes"] is None and runner.record.pid is not None:
                # No memory controller: the summed RSS of its processes.
                status["memory_bytes"] = self.ctx.memory.read(name, runner.record.pid)
            status["cpu_percent"], status["rss_bytes"] = self._usage.usage(runner.record.pid)
            services.append(status)
        self._usage.forget_others({r.record.pid for r in self.runners.values() if r.record.pid})
        return {"status": self.overall_status(), "pid": os.getpid(), "services": services}

    def _reader_dropped(self, reason: str) -> None:
        log_lines.emit(self.ctx.log, log_lines.stream_reader_dropped(reason))

    # -- requests -------------------------------------------------------------------------

    def _targets(self, name: str) -> list[Runner]:
        """The runner of service ``name``, or of every replica of table ``name``.

        Raises:
            KeyError: no such service.
        """
        if name in self.runners:
            return [self.runners[name]]
        replicas = [r for r in self.runners.values() if r.service.group == name]
        if not replicas:
            raise KeyError(name)
        return replicas

    def _ask(
        self,
        name: str,
        act: Callable[[Runner], str],
        said: Callable[[str, str], log_lines.Event],
    ) -> str:
        """``act`` on service ``name`` (on each replica of table ``name``), each answer
        logged with ``said``; returns the answers."""
        answers = []
        for runner in self._targets(name):
            what = act(runner)
            log_lines.emit(self.ctx.log, said(runner.name, what))
            answers.append(what if runner.name == name else f"{runner.name}: {what}")
        return "; ".join(answers)

    def restart(self, name: str) -> str:
        """Manual restart of service ``name`` (every replica of a table ``name``); returns
        what will happen. KeyError if unknown. One the run left out starts, with the
        dependencies it left out too."""
        self._start_left_out_dependencies(name)
        return self._ask(name, Runner.request_restart, log_lines.restart_requested)

    def stop_service(self, name: str) -> str:
        """Stop service ``name`` by hand and keep it stopped. KeyError if unknown."""
        return self._ask(name, Runner.hold, log_lines.stop_requested)

    def start_service(self, name: str) -> str:
        """Start a service stopped by hand again, or one the run left out (with the
        dependencies it left out too). KeyError if unknown."""
        self._start_left_out_dependencies(name)
        return self._ask(name, Runner.release, log_lines.start_requested)

    def _follow(self, name: str, reason: str) -> Answer:
        """Restart ``name`` as part of a dependency's restart (a cascade)."""
        runner = self.runners.get(name)
        if runner is None:
            return Answer(False, "removed")
        what = runner.request_restart(reason, cascade=True)
        return Answer(runner.restart_asked, what)

    def restart_on_change(self, name: str, reason: str) -> Answer | None:
        """Restart ``name`` because its watched files changed; None (nothing to say) for a
        service the run left out or a reload removed."""
        runner = self.runners.get(name)
        if runner is None or not runner.selected:
            return None
        what = runner.request_restart(reason)
        return Answer(runner.restart_asked, what)

    def _start_watching(self) -> None:
        """Watch the files of the services that ask for it (again, after a reload)."""
        if self._watching is not None:
            self._watching.cancel()
            self._watching = None
        services = [svc for svc in self.config.services if svc.watch]
        if not self._watch or not services or self._root is None:
            return
        # Loaded only here: a run that watches nothing does not pay for watchfiles.
        from hearthlink_trio.supervisor.watch import watch_files

        scope = self._watching = trio.CancelScope()

        async def watching() -> None:
            with scope:
                await watch_files(self.ctx, services, self.restart_on_change)

        self._root.start_soon(watching)

    def _start_left_out_dependencies(self, name: str) -> None:
        """Start what service ``name`` needs that the run left out (not selected)."""
        targets = [runner.name for runner in self._targets(name)]
        for dep in dependency_closure(self.config, targets):
            runner = self.runners[dep]
            if dep not in targets and not runner.selected:
                log_lines.emit(self.ctx.log, log_lines.start_requested(dep, runner.release()))

    def shutdown(self, reason: str = "Shutdown requested") -> None:
        """Begin a graceful stop of every service (idempotent)."""
        if not self.ctx.shutting_down:
            log_lines.emit(self.ctx.log, log_lines.shutdown(reason))
            self.ctx.shutting_down = True
            self.ctx.changed()
        self._services_scope.cancel()

    def fatal(self, reason: str) -> None:
        self.exit_code = ExitCode.FATAL
        self.shutdown(f"Fatal: {reason}")

    def force(self) -> None:
        """Skip every stop's grace: SIGKILL now (the second signal)."""
        self.exit_code = ExitCode.FORCED
        self.ctx.force.set()

    # -- the run --------------------------------------------------------------------------

    def take_over(self) -> None:
        """Take over the processes the launcher started before the supervisor loaded (each
        is announced now). Synchronous, and called before any signal is handled: from here
        on every process of the run is a runner's, and is stopped as any other."""
        for runner in self.runners.values():
            runner.take_over()

    async def run(self) -> int:
        """Supervise until stopped; returns the exit code."""
        ctx = self.ctx
        ctx.started = trio.current_time()
        feed = EventLogHandler(self.events)
        ctx.log.addHandler(feed)
        self.take_over()
        try:
            with self._services_scope:
                async with trio.open_nursery() as root:
                    self._root = root
                    ctx.restarted = Cascade(ctx, root, self._follow).restarted
                    self._start_watching()
                    for runner in self.runners.values():
                        root.start_soon(runner.run)
                    root.start_soon(self._announce_steady_phase)
                    if self.foreground is not None:
                        root.start_soon(self.foreground.run, self)
                    await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await ctx.prober.aclose()
            if isinstance(ctx.groups, GroupRecord):
                ctx.groups.clear()
            ctx.log.removeHandler(feed)
            # Every reader of the event stream gets its last line now, if it has room for
            # it, and its stream ends: none of them holds up the exit.
            self.events.close(f"the supervisor has stopped (exit code {self.result()})")
            self.stopped.set()
        return self.result()

    def result(self) -> int:
        """The run's exit code: a foreground command's when it ended the run normally."""
        if self.foreground is not None and self.exit_code is ExitCode.OK:
            return self.foreground.result
        return int(self.exit_code)

    def on_signal(self, signum: int) -> None:
        """SIGHUP reloads; the first SIGINT/SIGTERM stops gracefully, the second by force."""
        name = signal.Signals(signum).name
        if self.foreground is not None and self.foreground.takes_signal(signum):
            # The command acts first; the services stop once it has ended.
            log_lines.emit(
                self.ctx.log, log_lines.signal_left_to_command(name, signum == signal.SIGTERM)
            )
            return
        if signum == signal.SIGHUP:
            if not self.shutting_down:
                self.reload()
        elif not self.shutting_down:
            self.shutdown(f"Received {name}")
        elif not self.ctx.force.is_set():
            log_lines.emit(self.ctx.log, log_lines.forced(name))
            self.force()

    async def _announce_steady_phase(self) -> None:
        health = self.config.health
        await trio.sleep_until(self.ctx.started + health.startup_period)
        log_lines.emit(self.ctx.log, log_lines.steady_state(self.config.health.steady_interval))

    def systemd_status(self) -> str:
        """One line for systemd's STATUS=."""
        return systemd_status(self.ctx.records, shutting_down=self.shutting_down)

    # -- reload (SIGHUP) ------------------------------------------------------------------

    def reload(self) -> str:
        """Re-read the config file and apply the difference, in the background; returns
        what will happen."""
        if self.shutting_down:
            return "ignored: the supervisor is stopping"
        if self._root is None:
            log_lines.emit(self.ctx.log, log_lines.reload_ignored())
            return "ignored: the supervisor is still starting; ask again"
        self._root.start_soon(self._reload)
        if self._reload_lock.locked():
            return f"reloading {self.config.path} once the reload under way is done"
        return f"reloading {self.config.path}"

    async def _reload(self) -> None:
        # One reload at a time, each against the config the running services have: a second
        # SIGHUP while the first is still stopping services waits, then diffs against it.
        async with self._reload_lock:
            prepared = prepare_reload(self.config, self.ctx.log)
            if prepared is not None:
                plan, self.ctx.secrets = prepared
                self.ctx.config = plan.config
                await self._apply(plan)

    async def _replace(
        self,
        stop: list[str],
        start: list[str],
        successors: dict[str, Process],
    ) -> None:
        """Retire the runners of ``stop``, make those of ``start`` (adopting successors)."""
        retiring = [self.runners[name] for name in stop]
        # A service the reload replaces stays started if it was (selected, or started by
        # hand); any other starts if the run's selection picks it in the new config (a
        # new dependency of a selected service, say).
        was_selected = {runner.name: runner.selected for runner in retiring}
        picked = self._picked()
        for runner in retiring:
            runner.retire()
        for runner in retiring:
            await runner.done.wait()
        for name in stop:
            del self.runners[name]
            del self.ctx.records[name]
        for name in start:
            self._add_runner(name, selected=was_selected.get(name, False) or name in picked)
            if name in successors:
                self.runners[name].adopt(successors[name])

    async def _apply(self, plan: Plan) -> None:
        # Changed services with a held socket are replaced the rolling way first: each old
        # process serves until its successor (new config) is ready, and one whose successor
        # fails keeps running with its previous config.
        successors, kept = await roll_changed(self.runners, plan, self.ctx)
        if kept:
            self.ctx.config = with_services(self.config, [self.runners[n].service for n in kept])
        stop = [name for name in plan.stop if name not in kept]
        start = [name for name in plan.start if name not in kept]
        try:
            await self._replace(stop, start, successors)
        except BaseException:
            adopted = {n for n in successors if n in self.runners and self.runners[n].adopted}
            left = {n: p for n, p in successors.items() if n not in adopted}
            await stop_successors(left, plan.config, self.ctx)
            raise
        # The held sockets follow the new config: an unchanged address keeps its socket.
        sockets = getattr(self.ctx.launcher, "sockets", None)
        if isinstance(sockets, HeldSockets):
            for line in sockets.bind(self.config):
                log_lines.emit(self.ctx.log, log_lines.port_unavailable(line))
        order = self.config.names
        self.runners = {name: self.runners[name] for name in order}
        self.ctx.records = {name: self.ctx.records[name] for name in order}
        assert self._root is not None
        for name in start:
            self._root.start_soon(self.runners[name].run)
        if plan.stop or plan.start:
            self._start_watching()
        self.ctx.changed()
