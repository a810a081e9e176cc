"""Watching files: a change to a watched file restarts its service.

One watcher (watchfiles: inotify through Rust's notify, in a worker thread) covers the
folders of every watched service. Each change is matched against each service's globs
(gitignore-style, relative to its cwd); what a service wants is gathered for
:data:`BATCH_SECONDS` from the first change, then the service is restarted with the changed
files as the reason. A service whose own writes keep restarting it is caught by a
:class:`StormGuard`. ``watchfiles`` is imported only when some service watches.
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pathspec
import trio

from hearthlink_trio.config import Service
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.cascade import Answer, healthy_again
from hearthlink_trio.supervisor.context import Context
from hearthlink_trio.supervisor.state import State

#: Changes are gathered this long from the first one, then the service restarts once.
BATCH_SECONDS = 0.2
#: How often the watcher thread looks for changes. It hands a change over one to two steps
#: after it happened (measured: 10 ms -> 20 ms median; 20 ms -> 37 ms), and costs about
#: 0.4 % of a core while idle at 10 ms (0.2 % at 20 ms), alone in a process.
WATCH_STEP_MS = 10
#: The batch counted from a change's arrival: the step it took to arrive is part of it.
BATCH_FROM_ARRIVAL = BATCH_SECONDS - WATCH_STEP_MS / 1000
#: A storm: this many restarts in a row, within STORM_SECONDS, each caused by changes that
#: arrived while the service was starting, stopping or being restarted (or within
#: STORM_GRACE of its processes passing their probe).
STORM_RESTARTS = 5
STORM_SECONDS = 10.0
#: Writes a service makes right after it passed its probe still count as its own (a change
#: takes some tens of milliseconds to be seen, and the probe may pass meanwhile).
STORM_GRACE = 0.5
#: Never watched: version control, caches, dependencies, editors' swap and backup files.
BUILTIN_IGNORES = (
    ".git/",
    ".hg/",
    "__pycache__/",
    "*.pyc",
    "node_modules/",
    ".venv/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    ".#*",
    "4913",
)
_BUILTIN = pathspec.GitIgnoreSpec.from_lines(BUILTIN_IGNORES)

#: Restart a service with a reason: (name, reason) -> its answer (None: the service is not
#: one to restart or speak of, as one the run left out).
Request = Callable[[str, str], Answer | None]


@dataclass(frozen=True)
class Matcher:
    """Which changed paths concern one service: under its cwd, matching ``watch``, not
    ignored (built in, ``watch_ignore``, the data dir, the log dir)."""

    cwd: Path
    watch: pathspec.GitIgnoreSpec
    ignore: pathspec.GitIgnoreSpec
    skip: tuple[Path, ...] = ()

    @classmethod
    def of(cls, service: Service, skip: Iterable[Path] = ()) -> Matcher:
        return cls(
            cwd=service.cwd,
            watch=pathspec.GitIgnoreSpec.from_lines(service.watch),
            ignore=pathspec.GitIgnoreSpec.from_lines(service.watch_ignore),
            skip=tuple(skip),
        )

    def wants(self, path: Path) -> str | None:
        """``path`` relative to the cwd if a change to it restarts the service, else None."""
        if any(path == folder or path.is_relative_to(folder) for folder in self.skip):
            return None
        if not path.is_relative_to(self.cwd):
            return None
        relative = path.relative_to(self.cwd).as_posix()
        if _BUILTIN.match_file(relative) or self.ignore.match_file(relative):
            return None
        return relative if self.watch.match_file(relative) else None


def watch_roots(folders: Iterable[Path]) -> list[Path]:
    """The folders to watch recursively: each once, none inside another."""
    roots: list[Path] = []
    for folder in sorted({Path(f) for f in folders}, key=lambda f: len(f.parts)):
        if not any(folder.is_relative_to(root) for root in roots):
            roots.append(folder)
    return roots


@dataclass(frozen=True)
class Change:
    """One changed file, as a service sees it."""

    path: str  # relative to the service's cwd
    own: bool  # arrived while its process was starting or stopping: maybe its own write


async def batches(
    receive: trio.MemoryReceiveChannel[Change], window: float = BATCH_SECONDS
) -> AsyncIterator[list[Change]]:
    """The changes from ``receive``, gathered from each batch's first change for ``window``
    seconds (trio's clock), each path once."""
    async for first in receive:
        batch = {first.path: first}
        with trio.move_on_after(window):
            async for change in receive:
                seen = batch.get(change.path)
                batch[change.path] = Change(change.path, change.own and (seen is None or seen.own))
        yield list(batch.values())


class Decision(enum.Enum):
    RESTART = "restart"
    IGNORE = "ignore"  # only files of a storm changed
    STORM = "storm"  # a storm begins: say so once, do not restart


@dataclass
class StormGuard:
    """Tells a service that keeps restarting itself by writing its own watched files.

    A restart counts toward a storm when every change that caused it arrived while the
    service was starting or stopping (or within :data:`STORM_GRACE` of its first pass).
    After ``restarts`` such restarts in a row within ``seconds``, the next one is a storm:
    not restarted, and said once. From then on, a batch made only of such changes to the
    files of the storm is ignored; any other change (another file, or one of these changed
    while the service was running) restarts it as usual.
    """

    restarts: int = STORM_RESTARTS
    seconds: float = STORM_SECONDS
    files: set[str] = field(default_factory=set)
    _recent: deque[tuple[float, frozenset[str]]] = field(default_factory=deque)

    @property
    def active(self) -> bool:
        return bool(self.files)

    def decide(self, batch: Sequence[Change], now: float) -> Decision:
        paths = frozenset(change.path for change in batch)
        if self.files:
            if all(change.own and change.path in self.files for change in batch):
                return Decision.IGNORE
            return Decision.RESTART  # another file, or one of them changed while it ran
        if not all(change.own for change in batch):
            self._recent.clear()
            return Decision.RESTART
        while self._recent and self._recent[0][0] <= now - self.seconds:
            self._recent.popleft()
        if len(self._recent) >= self.restarts:
            self.files = set(paths).union(*(files for _, files in self._recent))
            self._recent.clear()
            return Decision.STORM
        self._recent.append((now, paths))
        return Decision.RESTART


class ServiceWatch:
    """The changes of one service table (all its replicas): their batches, its storm guard,
    its restarts. Replicas restart one at a time, each once the one before is healthy
    again, so a replicated service keeps answering through a change. The changes that come
    while a restart is under way make the next batch, once it is over."""

    def __init__(self, ctx: Context, replicas: Sequence[Service], request: Request) -> None:
        self.ctx = ctx
        self.name = replicas[0].group or replicas[0].name
        self.replicas = [svc.name for svc in replicas]
        # How long a restart may take before the next batch goes ahead anyway (one that
        # never ends: a rolling successor that failed leaves the old process serving).
        self._patience = ctx.config.health.startup_period + replicas[0].stop_timeout + 1.0
        self.matcher = Matcher.of(replicas[0], skip=(ctx.config.data_dir, ctx.config.log_dir))
        self.guard = StormGuard()
        self._send, self._receive = trio.open_memory_channel[Change](10_000)
        self._request = request
        #: A process of it is starting or stopping: what changes now may be its own writes.
        self._busy = False
        #: A restart it asked is under way. With a held socket the old process stays healthy
        #: while its successor starts, so the states alone do not tell.
        self._restarting = False
        #: When its processes last passed their probe (None: not since the last start).
        self._settled_at: float | None = None

    def offer(self, path: Path) -> None:
        """A file changed; keep it if it concerns this service."""
        relative = self.matcher.wants(path)
        if relative is None:
            return
        settled = self._settled_at
        own = (
            self._busy
            or self._restarting
            or (settled is not None and trio.current_time() - settled < STORM_GRACE)
        )
        # A batch already full of changes restarts the service anyway: drop the rest.
        with contextlib.suppress(trio.WouldBlock):
            self._send.send_nowait(Change(relative, own))

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_state)
            async for batch in batches(self._receive, BATCH_FROM_ARRIVAL):
                await self._act(batch)

    async def _act(self, batch: list[Change]) -> None:
        decision = self.guard.decide(batch, trio.current_time())
        files = [change.path for change in batch]
        if decision is Decision.STORM:
            log_lines.emit(
                self.ctx.log,
                log_lines.watch_storm(self.name, self.guard.restarts, self.guard.seconds, files),
            )
        elif decision is Decision.RESTART:
            await self._restart(files)

    async def _restart(self, files: list[str]) -> None:
        reason = log_lines.describe_changes(files)
        self._restarting = True
        try:
            for name in self.replicas:
                record = self.ctx.records.get(name)
                before = record.started_at if record is not None else None
                answer = self._request(name, reason)
                if answer is None:
                    continue
                accepted, what = answer
                line = log_lines.files_changed(name, files, restarted=accepted, why=what)
                log_lines.emit(self.ctx.log, line)
                if accepted:
                    # Until its new process is healthy, or has crashed: a developer's next
                    # fix must not wait for the backoffs of a crash loop.
                    with trio.move_on_after(self._patience):
                        if await healthy_again(self.ctx, name, before, crash_ends=True):
                            self._settled_at = trio.current_time()
        finally:
            self._restarting = False

    async def _follow_state(self) -> None:
        # Whether a process of the service is starting or stopping, and when they passed
        # their probe: for telling its own writes from the developer's. A service in backoff
        # or failed has no process, so what changes then is not its doing.
        while True:
            changed = self.ctx.next_change()
            states = [
                record.state if (record := self.ctx.records.get(name)) else State.STOPPED
                for name in self.replicas
            ]
            self._busy = any(state in (State.STARTING, State.STOPPING) for state in states)
            settled = any(
                state in (State.HEALTHY, State.UNHEALTHY, State.COMPLETED) for state in states
            )
            if settled and not self._busy:
                if self._settled_at is None:
                    self._settled_at = trio.current_time()
            else:
                self._settled_at = None
            await changed.wait()


async def watch_files(ctx: Context, services: Sequence[Service], request: Request) -> None:
    """Watch the files of ``services`` and restart each on its changes, until cancelled.

    A failure of the watcher itself (a watched folder removed, the inotify limit reached)
    is logged once; the services keep running, unwatched.
    """
    import watchfiles

    tables: dict[str, list[Service]] = {}
    for svc in services:
        tables.setdefault(svc.group or svc.name, []).append(svc)
    watches = [ServiceWatch(ctx, replicas, request) for replicas in tables.values()]
    roots = watch_roots(folder for svc in services for folder in svc.watch_folders)
    # The config's check found them, but one may have gone since (a reload of a cached
    # config, a folder removed); the watcher would skip it without a word.
    missing = [str(root) for root in roots if not root.is_dir()]
    if missing:
        log_lines.emit(ctx.log, log_lines.watch_failed(f"no such folder: {', '.join(missing)}"))
        return
    # Set when this task is cancelled: the watcher thread sees it within a step and returns
    # (a cancellation alone cannot stop a thread).
    stop = threading.Event()

    def dispatch(changes: set[tuple[watchfiles.Change, str]]) -> None:
        for _, path in changes:
            for watch in watches:
                watch.offer(Path(path))

    def watch_in_thread() -> None:
        # All of the watcher in a worker thread, its start too: watching a folder walks all
        # of it (0.15-0.2 s for a virtualenv of 28,000 files here, warm; 0.9 s once under
        # load), which the supervisor's own thread must not wait for.
        for changes in watchfiles.watch(
            *roots,
            watch_filter=None,
            step=WATCH_STEP_MS,
            stop_event=stop,
            # A folder it may not read (another user's data under the cwd) is skipped,
            # rather than ending all watching.
            ignore_permission_denied=True,
            raise_interrupt=False,
        ):
            trio.from_thread.run_sync(dispatch, changes)

    async def stop_on_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_cancel)
        for watch in watches:
            nursery.start_soon(watch.run)
        try:
            await trio.to_thread.run_sync(watch_in_thread)
        except Exception as exc:
            # Whatever the watcher raises (the inotify limit, an error of its own), the
            # services keep running: only their watching ends, and says so.
            log_lines.emit(ctx.log, log_lines.watch_failed(f"{type(exc).__name__}: {exc}"))
        finally:
            stop.set()
        nursery.cancel_scope.cancel()
