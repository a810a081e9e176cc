"""One running session: a manager (or bare) and its N services, their pids, its log, and
the cleanup that leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from managers import Bare, Manager, Service
from net import poll_health
from procs import (
    BenchError,
    Reaper,
    alive,
    base_env,
    descendants,
    kill_group_and_pid,
    parents,
    start_ticks,
)

# -- one session --------------------------------------------------------------------------------


class Session:
    """One manager (or bare) running N services: launch, their pids, and the cleanup."""

    def __init__(
        self, manager: Manager, services: list[Service], tmp: Path, reaper: Reaper
    ) -> None:
        self.manager = manager
        self.services = services
        self.ports = {s.name: s.port for s in services}
        self.tmp = tmp
        self.reaper = reaper
        self.proc: subprocess.Popen[bytes] | None = None
        self.bare: dict[str, subprocess.Popen[bytes]] = {}
        self.bodies: dict[str, dict[str, Any]] = {}  # name -> last /health body
        self.cond = threading.Condition()
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.tail: deque[str] = deque(maxlen=30)
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self.t_launch = 0.0
        self.argv: list[str] = []
        self.env: dict[str, str] = {}

    def launch(self) -> None:
        self.t_launch = time.monotonic()
        if isinstance(self.manager, Bare):
            # A chain's later links are started by measures.launch, each the moment the
            # one before it answers.
            for svc in self.services:
                if not svc.after:
                    self.spawn_bare(svc)
            return
        argv, env = self.manager.prepare(self.tmp, self.services)
        self.argv, self.env = argv, env
        # Files, not pipes: a service's children may inherit them and outlive the manager.
        out = open(self.tmp / "manager.out", "wb")  # noqa: SIM115
        err = open(self.tmp / "manager.err", "wb")  # noqa: SIM115
        self.t_launch = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # our Ctrl-C is ours to handle, not sent to it directly
            cwd=self.tmp,
        )
        out.close()
        err.close()
        self.reaper.add_manager(self.proc)
        thread = threading.Thread(target=self._read_stderr, daemon=True)
        thread.start()
        self._threads.append(thread)

    def spawn_bare(self, svc: Service) -> None:
        """Start one service without a manager (a session of its own, as supervisors do)."""
        proc = subprocess.Popen(
            svc.argv(),
            env={**base_env(), **svc.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.bare[svc.name] = proc
        self.reaper.add_manager(proc)

    def supervisor_side(self) -> list[int]:
        """The manager and every process below it that is not a service or one of a
        service's own (hearthlink's sentinel, honcho's helpers…); empty for bare."""
        if self.proc is None:
            return []
        tree = parents()
        below = descendants(self.proc.pid, tree)
        services = set(self.service_pids())
        for pid in list(services):
            services.update(descendants(pid, tree))
        return [self.proc.pid, *(p for p in below if p not in services)]

    def _read_stderr(self) -> None:
        """Follow the manager's stderr file (2 ms polls): its lines, timestamped as read."""
        buf = b""
        with open(self.tmp / "manager.err", "rb") as f:
            while True:
                chunk = f.read(65536)
                if not chunk:
                    if self._closing.is_set():
                        return
                    time.sleep(0.002)
                    continue
                buf += chunk
                *lines, buf = buf.split(b"\n")
                when = time.monotonic()
                for raw in lines:
                    self._event(when, raw)

    def _event(self, when: float, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        try:
            event = json.loads(line)
            if not isinstance(event, dict):
                raise ValueError
        except ValueError:
            event = {"event": "text", "message": line}
        with self.cond:
            self.tail.append(line)
            self.events.append((when, event))
            self.cond.notify_all()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def describe(self) -> str:
        with self.cond:
            lines = list(self.tail)[-12:]
        with contextlib.suppress(OSError):
            lines += (self.tmp / "manager.out").read_text(errors="replace").splitlines()[-8:]
        return "\n".join(f"    {line}" for line in lines)

    def wait_answering(
        self, timeout: float, *, names: list[str] | None = None, interval: float | None = None
    ) -> dict[str, tuple[float, dict[str, Any]]]:
        """Poll until every service (or ``names``) answers /health; records their pids."""
        targets = {n: self.ports[n] for n in (names or self.ports)}
        if interval is None:
            interval = 0.005 if len(targets) <= 8 else 0.010
        answers = poll_health(
            targets, deadline=time.monotonic() + timeout, interval=interval, supervisor=self.proc
        )
        for name, (_t, body) in answers.items():
            self.record(name, body)
        return answers

    def record(self, name: str, body: dict[str, Any]) -> None:
        self.bodies[name] = body
        for key in ("pid", "child"):
            if isinstance(body.get(key), int):
                self.reaper.add_pid(body[key])

    def service_pids(self) -> list[int]:
        return [b["pid"] for b in self.bodies.values() if isinstance(b.get("pid"), int)]

    def child_pids(self) -> list[int]:
        return [b["child"] for b in self.bodies.values() if isinstance(b.get("child"), int)]

    def wait_event(self, kind: str, service: str, after: float, timeout: float) -> float | None:
        """When the manager's JSON event ``kind`` for ``service`` was read (hearthlink)."""

        def find() -> float | None:
            for when, event in self.events:
                if when >= after and event.get("event") == kind and event.get("service") == service:
                    return when
            return None

        with self.cond:
            self.cond.wait_for(find, timeout=timeout)
            return find()

    def close(self) -> None:
        """The manager and every service it ran (and their children) gone."""
        if self.proc is not None:
            self.reaper.stop_manager(self.proc, grace=10)
        for proc in self.bare.values():
            self.reaper.stop_manager(proc, grace=5)
        self._closing.set()
        for thread in self._threads:
            thread.join(2)
        tracked = self.service_pids() + self.child_pids()
        for pid in tracked:
            ticks = self.reaper.pids.get(pid)
            if alive(pid, ticks if ticks is not None else start_ticks(pid)):
                kill_group_and_pid(pid)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            self.reaper.reap()
            if not any(alive(pid, self.reaper.pids.get(pid)) for pid in tracked):
                return
            time.sleep(0.02)
        raise BenchError(f"{self.manager.name}: processes would not die: {tracked}")


@contextlib.contextmanager
def session(
    manager: Manager, services: list[Service], tmp: Path, reaper: Reaper
) -> Iterator[Session]:
    run = Session(manager, services, tmp, reaper)
    try:
        run.launch()
        yield run
    except BenchError as exc:
        run.close()
        raise BenchError(f"{manager.name}: {exc}\n  its last lines:\n{run.describe()}") from None
    finally:
        run.close()
