"""The supervisor in-process, with a scripted launcher and prober, on trio's virtual clock.

A test writes a config, says how each service's processes behave (a :class:`Script`: when
it exits and how, when it starts passing its probe, whether it honours the stop signal),
runs the real :class:`Supervisor` with :class:`FakeLauncher` and :class:`FakeProber`, and
reads the story back from the recorded events, launches and states. No process, socket or
real second is involved: each scenario runs in milliseconds.
"""

from __future__ import annotations

import io
import itertools
import logging
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from hearthlink_trio._util import ensure_private_dir
from hearthlink_trio.config import Config, Service, load_config
from hearthlink_trio.supervisor.output import Console
from hearthlink_trio.supervisor.secrets import load_secrets
from hearthlink_trio.supervisor.state import State
from hearthlink_trio.supervisor.supervisor import Supervisor
from tests.stack import write_config

TOKEN = "sim-token-0123456789"


@dataclass
class Script:
    """How one process of a service behaves, in seconds after its launch."""

    exit_after: float | None = None  # None: runs until stopped
    exit_code: int = 1
    ready_after: float = 0.0  # probes pass from then on...
    unhealthy_after: float | None = None  # ...and fail again from then on
    honours_stop: bool = True
    stop_takes: float = 0.0
    output: tuple[str, ...] = ()
    start_error: bool = False  # launching it raises OSError (program missing)
    start_raises: Exception | None = None  # launching it raises this instead


class FakeStream(trio.abc.ReceiveStream):
    def __init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel[bytes](1000)

    def write(self, data: bytes) -> None:
        self._send.send_nowait(data)

    def close_write(self) -> None:
        self._send.close()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return b""

    async def aclose(self) -> None:
        self._recv.close()


_pids = itertools.count(1001)


class FakeProcess:
    def __init__(self, name: str, script: Script, env: Mapping[str, str]) -> None:
        self.name = name
        self.script = script
        self.env = dict(env)
        self.pid = next(_pids)
        self.start_ticks: int | None = self.pid
        self.launched = trio.current_time()
        self.stdout = FakeStream()
        self.stderr = FakeStream()
        self.returncode: int | None = None
        self.notify = None
        self.signals: list[int] = []
        self._exited = trio.Event()
        for line in script.output:
            self.stdout.write(line.encode() + b"\n")

    @property
    def alive(self) -> bool:
        return self.returncode is None

    def exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self.stdout.close_write()
            self.stderr.close_write()
            self._exited.set()

    async def live(self) -> None:
        if self.script.exit_after is not None:
            await trio.sleep(self.script.exit_after)
            self.exit(self.script.exit_code)

    def share_service(self) -> None:
        self.shared = True

    async def wait_exited(self) -> None:
        await self._exited.wait()

    def peek_returncode(self) -> int:
        assert self.returncode is not None
        return self.returncode

    async def stop(
        self,
        stop_signal: int,
        timeout: float,
        force: trio.Event,
        *,
        kill_mode: str = "group",
        waiting: Callable[[float, int], None] | None = None,
    ) -> int:
        self.kill_mode = kill_mode
        with trio.CancelScope(shield=True):
            if self.alive:
                self.signals.append(stop_signal)
                began = trio.current_time()
                with trio.move_on_after(timeout):
                    async with trio.open_nursery() as nursery:
                        if waiting is not None:
                            nursery.start_soon(self._report_waiting, waiting, began)
                        if self.script.honours_stop and not force.is_set():
                            with trio.move_on_after(self.script.stop_takes):
                                await force.wait()
                            self.exit(-stop_signal)
                        else:
                            await force.wait()
                        nursery.cancel_scope.cancel()
                if self.alive:
                    self.signals.append(signal.SIGKILL)
                    self.exit(-signal.SIGKILL)
        assert self.returncode is not None
        return self.returncode

    async def _report_waiting(self, waiting: Callable[[float, int], None], began: float) -> None:
        while True:
            await trio.sleep(1.0)
            waiting(trio.current_time() - began, 1)

    def close_streams(self) -> None:
        pass

    def passes_probe(self, now: float) -> bool:
        if not self.alive or now < self.launched + self.script.ready_after:
            return False
        after = self.script.unhealthy_after
        return after is None or now < self.launched + after


@dataclass
class Launch:
    time: float
    name: str
    process: FakeProcess


class FakeLauncher:
    """Starts :class:`FakeProcess` es; ``scripts[name]`` gives the Nth process's script."""

    def __init__(
        self,
        nursery: trio.Nursery,
        scripts: Mapping[str, Any],
        early: Mapping[str, bool] | None = None,
    ) -> None:
        self._nursery = nursery
        self.scripts = dict(scripts)
        #: The services started "before the supervisor loaded": name -> passed its probe.
        self.early = dict(early or {})
        self.launches: list[Launch] = []
        self.current: dict[str, FakeProcess] = {}
        self.t0 = trio.current_time()

    def script_for(self, name: str) -> Script:
        entry = self.scripts.get(name, Script())
        if isinstance(entry, Script):
            return entry
        nth = sum(1 for launch in self.launches if launch.name == name)
        scripts: list[Script] = list(entry)
        return scripts[min(nth, len(scripts) - 1)]

    def take(self, service: Service, env: Mapping[str, str]) -> tuple[FakeProcess, bool] | None:
        """A process of an ``early`` service, started now (the supervisor takes it over
        before anything else happens, as it does a process started before it loaded)."""
        if service.name not in self.early:
            return None
        passed = self.early.pop(service.name)
        return self.launch(service, env), passed

    def launch(self, service: Service, env: Mapping[str, str]) -> FakeProcess:
        script = self.script_for(service.name)
        if script.start_error or script.start_raises is not None:
            self.launches.append(Launch(trio.current_time(), service.name, None))  # type: ignore[arg-type]
            raise script.start_raises or FileNotFoundError(2, "No such file or directory")
        process = FakeProcess(service.name, script, env)
        self.launches.append(Launch(trio.current_time(), service.name, process))
        self.current[service.name] = process
        self._nursery.start_soon(process.live)
        return process

    def alive(self, name: str, *, dead: bool = False) -> list[FakeProcess]:
        """The processes of service ``name`` still running (all of them with ``dead``)."""
        return [
            launch.process
            for launch in self.launches
            if launch.name == name and launch.process is not None and (dead or launch.process.alive)
        ]

    def times(self, name: str) -> list[float]:
        return [round(launch.time - self.t0, 3) for launch in self.launches if launch.name == name]


class FakeProber:
    """Passes a probe when the service's current process says so; records every probe."""

    def __init__(self, launcher: FakeLauncher) -> None:
        self.launcher = launcher
        self.probes: list[tuple[float, str, float]] = []  # (time, service, timeout)

    async def probe(self, service: Service, timeout: float, env: Mapping[str, str]) -> str | None:
        now = trio.current_time()
        self.probes.append((now, service.name, timeout))
        await trio.sleep(0.001)
        process = self.launcher.current.get(service.name)
        if process is not None and process.passes_probe(now):
            return None
        # On a held socket, an older process still running (a rolling restart) answers too.
        if any(p.passes_probe(now) for p in self.launcher.alive(service.name)):
            return None
        return "Connection refused" if process is None or not process.alive else "HTTP 503"

    async def probe_process(
        self, service: Service, timeout: float, env: Mapping[str, str], pid: int
    ) -> str | None:
        now = trio.current_time()
        self.probes.append((now, service.name, timeout))
        await trio.sleep(0.001)
        process = next(p for p in self.launcher.alive(service.name, dead=True) if p.pid == pid)
        return None if process.passes_probe(now) else "HTTP 503"

    def forget(self, service: Service) -> None:
        pass

    async def aclose(self) -> None:
        pass


class EventRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[float, str, str, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            now = trio.current_time()
        except RuntimeError:
            now = -1.0
        fields = dict(getattr(record, "fields", {}) or {})
        self.records.append((now, getattr(record, "event", ""), record.getMessage(), fields))


@dataclass
class Sim:
    supervisor: Supervisor
    launcher: FakeLauncher
    prober: FakeProber
    events: EventRecorder
    t0: float
    config_path: Path
    result: list[int] = field(default_factory=list)

    def messages(self, event: str | None = None) -> list[str]:
        return [m for _, e, m, _ in self.events.records if event is None or e == event]

    def lines(self) -> list[str]:
        return [m for _, _, m, _ in self.events.records]

    def when(self, message: str) -> float:
        for t, _, m, _ in self.events.records:
            if m == message:
                return round(t - self.t0, 3)
        raise AssertionError(f"no line {message!r} in {self.lines()}")

    def state(self, name: str) -> State:
        return self.supervisor.ctx.records[name].state

    def status(self, name: str) -> dict[str, Any]:
        services = self.supervisor.health()["services"]
        return next(s for s in services if s["name"] == name)

    async def until(self, predicate: Callable[[], bool], *, limit: float = 3600) -> None:
        """Wait (virtual time) until ``predicate()`` holds; fail past ``limit`` seconds."""
        with trio.fail_after(limit):
            await self.supervisor.ctx.wait_until(predicate)

    async def until_state(self, name: str, state: State, *, limit: float = 3600) -> None:
        await self.until(
            lambda: name in self.supervisor.ctx.records and self.state(name) is state,
            limit=limit,
        )

    def rewrite(self, sections: Mapping[str, Any]) -> None:
        """Write the config file anew (for a reload), keeping the data dir."""
        write_config(self.config_path, _with_data_dir(self.config_path.parent, sections))


def _with_data_dir(tmp_path: Path, sections: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {"supervisor": {"data_dir": str(tmp_path / "data")}}
    merged.update(sections)
    return merged


def sim_config(tmp_path: Path, sections: Mapping[str, Any]) -> Config:
    path = write_config(tmp_path / "hearthlink.toml", _with_data_dir(tmp_path, sections))
    return load_config(path, environ={})


@asynccontextmanager
async def simulate(
    tmp_path: Path,
    sections: Mapping[str, Any],
    scripts: Mapping[str, Any] | None = None,
    *,
    early: Mapping[str, bool] | None = None,
) -> AsyncIterator[Sim]:
    """Run the supervisor on ``sections`` (config tables) with scripted processes.
    ``early``: the services whose processes the launcher started before the supervisor
    loaded (name -> whether it found them passing their probe).

    Leaving the block shuts the supervisor down (as a signal would) and waits for its end.
    """
    config = sim_config(tmp_path, sections)
    ensure_private_dir(config.run_dir)
    log = logging.getLogger(f"sim.{id(tmp_path)}")
    log.propagate = False
    log.setLevel(logging.INFO)
    recorder = EventRecorder()
    log.handlers = [recorder]
    console = Console(io.BytesIO(), colour=False)  # type: ignore[arg-type]
    try:
        async with trio.open_nursery() as nursery:
            launcher = FakeLauncher(nursery, scripts or {}, early)
            prober = FakeProber(launcher)
            supervisor = Supervisor(
                config,
                log,
                secrets=load_secrets(config, {"HEARTHLINK_API_TOKEN": TOKEN}, create=True),
                console=console,
                launcher=launcher,
                prober=prober,
            )
            sim = Sim(supervisor, launcher, prober, recorder, trio.current_time(), config.path)

            async def run() -> None:
                sim.result.append(await supervisor.run())

            nursery.start_soon(run)
            yield sim
            if not supervisor.stopped.is_set():
                supervisor.shutdown("Test over")
            with trio.fail_after(3600):
                await supervisor.stopped.wait()
    finally:
        console.close()


def no_process_left(sim: Sim) -> bool:
    return all(
        launch.process is None or not launch.process.alive for launch in sim.launcher.launches
    )
