#!/usr/bin/env python3
"""The hearthlink benchmark: SPEC §9's budgets, and how the supervisor's cost grows with N.

Runs the real ``hearthlink run`` as a subprocess on generated configs of N small stdlib HTTP
services (``bench/svc.py``) and measures it from outside, by polling the services' ports,
watching their pids (pidfds) and reading the supervisor's event lines (``--log-format
json`` on stderr) and the services' own timestamps (``ready``/``bye`` lines, CLOCK_MONOTONIC,
relayed through the supervisor's stdout)::

    python bench/run.py                       # N = 4, 32, 100 and the default config
    python bench/run.py --quick               # N = 4, short idle windows, 2 repeats
    python bench/run.py --out bench/results/latest.json --n 4,32

Prints a markdown table on stdout and writes every sample as JSON to ``--out``. Progress
goes to stderr. Every process it starts (the supervisors, and each service by pid and start
time) is gone when it ends, on Ctrl-C and on errors too.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import platform
import select
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SVC = HERE / "svc.py"
DEFAULT_CONFIG = REPO / "config" / "hearthlink.toml"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36
REQUEST = (
    b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: hearthlink-bench\r\n"
    b"Connection: close\r\n\r\n"
)
T0 = time.monotonic()
#: Probe periods of the generated configs. startup_interval is the default; steady_interval
#: is a third of the default 30 s, so that a 20 s idle window holds two probes of every
#: service whatever its phase (a 30 s period could fall entirely outside the window).
STARTUP_INTERVAL = 5.0
STEADY_INTERVAL = 10.0


class BenchError(Exception):
    """A measurement could not be taken (a timeout, a process that would not start…)."""


def progress(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# -- /proc ---------------------------------------------------------------------------------


def _stat(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the whole process (all its threads), in seconds."""
    fields = _stat(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / CLK_TCK


def start_ticks(pid: int) -> int | None:
    fields = _stat(pid)
    return None if fields is None else int(fields[19])


def alive(pid: int, ticks: int | None) -> bool:
    """True if ``pid`` is still the process that started at ``ticks`` and not a zombie."""
    fields = _stat(pid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return False
    return ticks is None or int(fields[19]) == ticks


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def group_rss_mib(pgid: int) -> float | None:
    """The RSS of every process in group ``pgid`` (a service and whatever it forked)."""
    total, found = 0.0, False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields is not None and int(fields[3]) == pgid:
            rss = rss_mib(int(entry))
            if rss is not None:
                total, found = total + rss, True
    return total if found else None


# -- everything we start, and its cleanup ---------------------------------------------------


class Reaper:
    """Every process the benchmark starts, by pid and start time, so that none outlives it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.supervisors: list[subprocess.Popen[bytes]] = []
        self.children: dict[int, int | None] = {}  # pid -> start ticks
        self.started = 0
        self.killed: list[int] = []
        with contextlib.suppress(OSError, AttributeError):
            # Orphans (there should be none) are re-parented to us, so we can reap them.
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def add_supervisor(self, proc: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.supervisors.append(proc)
            self.started += 1

    def add_child(self, pid: int, ticks: int | None) -> None:
        with self.lock:
            self.children[pid] = ticks
            self.started += 1

    def stop_supervisor(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.killed.append(proc.pid)
            proc.kill()
            proc.wait()

    def leftovers(self) -> list[int]:
        with self.lock:
            return [pid for pid, ticks in self.children.items() if alive(pid, ticks)]

    def cleanup(self) -> list[int]:
        """Stop every supervisor, kill every recorded service still alive; returns those."""
        for proc in list(self.supervisors):
            self.stop_supervisor(proc)
        left = self.leftovers()
        for pid in left:
            self.killed.append(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # services lead their own process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.05)
        # Reap whatever was re-parented to us (we are a child subreaper).
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        return left


# -- health polling from outside ------------------------------------------------------------


def _parse_health(raw: bytes) -> dict[str, Any] | None:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        return None
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("status") != "healthy":
        return None
    return obj


def poll_health(
    targets: dict[str, int],
    *,
    deadline: float,
    interval: float,
    path: str = "/health",
    eligible: Callable[[str], bool] | None = None,
    accept: Callable[[str, dict[str, Any]], bool] | None = None,
    supervisor: subprocess.Popen[bytes] | None = None,
) -> dict[str, tuple[float, dict[str, Any]]]:
    """Poll every port concurrently (one selector) until each answers a healthy /health.

    Each round opens a non-blocking connection to every port still pending (and
    ``eligible``: there is no point in polling a service its supervisor has not started),
    at most one in flight per port. Returns ``{name: (monotonic time of the answer, body)}``.
    """
    request = REQUEST % path.encode()
    sel = selectors.DefaultSelector()
    pending = dict(targets)
    inflight: dict[str, tuple[socket.socket, bytearray, float]] = {}
    done: dict[str, tuple[float, dict[str, Any]]] = {}

    def drop(name: str) -> None:
        sock = inflight.pop(name)[0]
        sel.unregister(sock)
        sock.close()

    next_round = 0.0
    try:
        while pending:
            now = time.monotonic()
            if now > deadline:
                raise BenchError(f"no healthy answer from {', '.join(sorted(pending)[:5])}")
            if supervisor is not None and supervisor.poll() is not None:
                raise BenchError(f"the supervisor exited with status {supervisor.returncode}")
            if now >= next_round:
                for name, port in pending.items():
                    if name in inflight or (eligible is not None and not eligible(name)):
                        continue
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    err = sock.connect_ex(("127.0.0.1", port))
                    if err in (0, errno.EINPROGRESS):
                        sel.register(sock, selectors.EVENT_WRITE, name)
                        inflight[name] = (sock, bytearray(), now)
                    else:
                        sock.close()
                next_round = now + interval
                for name in [n for n, v in inflight.items() if now - v[2] > 2.0]:
                    drop(name)
            timeout = max(0.0, next_round - time.monotonic())
            for key, mask in sel.select(timeout):
                name = key.data
                sock, buf, _started = inflight[name]
                if mask & selectors.EVENT_WRITE:
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        drop(name)
                        continue
                    try:
                        sock.send(request)
                    except OSError:
                        drop(name)
                        continue
                    sel.modify(sock, selectors.EVENT_READ, name)
                    continue
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    drop(name)
                    continue
                if chunk:
                    buf += chunk
                    continue
                when = time.monotonic()
                drop(name)
                body = _parse_health(bytes(buf))
                if body is not None and (accept is None or accept(name, body)):
                    done[name] = (when, body)
                    del pending[name]
    finally:
        for name in list(inflight):
            drop(name)
        sel.close()
    return done


def free_ports(count: int) -> list[int]:
    """``count`` free ports below the kernel's ephemeral range (so no outgoing connection
    of ours can be holding one), each checked by a bind as the services bind."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = min(low, 32768) - 1
    bottom = 20000 if top > 21000 + count else 10000
    ports: list[int] = []
    port = bottom + (os.getpid() * 7919 + int(time.time() * 1000)) % max(1, top - bottom - count)
    tried = 0
    while len(ports) < count:
        tried += 1
        if tried > (top - bottom):
            raise BenchError("not enough free ports")
        port = bottom if port >= top else port + 1
        if port in (8000, 8001, 8002, 8888):
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- one supervisor run ----------------------------------------------------------------------


@dataclass
class ChildInfo:
    name: str
    pid: int
    pidfd: int
    ticks: int | None
    started_seen: float


@dataclass
class SupervisorRun:
    """One ``hearthlink run`` subprocess, its event lines and its services' pids."""

    argv: list[str]
    env: dict[str, str]
    reaper: Reaper
    cond: threading.Condition = field(default_factory=threading.Condition)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    ready: dict[int, float] = field(default_factory=dict)  # service pid -> its "ready" time
    byes: dict[str, float] = field(default_factory=dict)
    children: dict[int, ChildInfo] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)  # service name -> latest pid
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))

    def __post_init__(self) -> None:
        self.t_launch = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            start_new_session=True,  # our Ctrl-C is ours to handle, not sent to it directly
        )
        self.reaper.add_supervisor(self.proc)
        self.pidfd = os.pidfd_open(self.proc.pid)
        self._threads = [
            threading.Thread(target=self._read_events, daemon=True),
            threading.Thread(target=self._read_output, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_events(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            when = time.monotonic()
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise ValueError
            except ValueError:
                event = {"event": "text", "message": line}
            if event.get("event") == "started" and isinstance(event.get("pid"), int):
                pid, name = event["pid"], str(event.get("service"))
                try:
                    pidfd = os.pidfd_open(pid)
                except OSError:
                    pidfd = -1
                ticks = start_ticks(pid)
                self.reaper.add_child(pid, ticks)
                with self.cond:
                    self.children[pid] = ChildInfo(name, pid, pidfd, ticks, when)
                    self.current[name] = pid
            with self.cond:
                self.tail.append(line)
                self.events.append((when, event))
                self.cond.notify_all()

    def _read_output(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            name, sep, text = line.partition(" | ")
            if not sep:
                continue
            words = text.split()
            with self.cond:
                if len(words) == 4 and words[0] == "ready" and words[2] == "pid":
                    self.ready[int(words[3])] = float(words[1])
                    self.cond.notify_all()
                elif len(words) == 2 and words[0] == "bye":
                    self.byes[name] = float(words[1])

    def describe_failure(self) -> str:
        with self.cond:
            return "\n".join(f"    {line}" for line in list(self.tail)[-15:])

    def wait_event(
        self, kind: str, *, service: str | None = None, after: float, timeout: float
    ) -> tuple[float, dict[str, Any]]:
        """The first event ``kind`` (for ``service``) seen at or after ``after``."""

        def find() -> tuple[float, dict[str, Any]] | None:
            for when, event in self.events:
                if (
                    when >= after
                    and event.get("event") == kind
                    and (service is None or event.get("service") == service)
                ):
                    return when, event
            return None

        with self.cond:
            found = self.cond.wait_for(
                lambda: find() or self.proc.poll() is not None, timeout=timeout
            )
            hit = find()
        if hit is None:
            why = "the supervisor exited" if found else f"{timeout:g}s passed"
            raise BenchError(
                f"no '{kind}' event for {service or 'any service'} ({why});"
                f" last lines:\n{self.describe_failure()}"
            )
        return hit

    def wait_all_healthy(
        self, names: list[str], *, after: float, timeout: float
    ) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        seen: dict[str, float] = {}
        for name in names:
            when, _ = self.wait_event(
                "healthy", service=name, after=after, timeout=max(0.0, deadline - time.monotonic())
            )
            seen[name] = when
        return seen

    def ready_time(self, name: str, timeout: float = 5.0) -> float | None:
        """The current process of ``name`` said it listens at this time (None if unknown)."""
        with self.cond:
            pid = self.current.get(name)
            if pid is None:
                return None
            self.cond.wait_for(lambda: pid in self.ready, timeout=timeout)
            return self.ready.get(pid)

    def started(self, name: str) -> bool:
        with self.cond:
            return name in self.current

    def live_children(self) -> list[ChildInfo]:
        with self.cond:
            infos = [self.children[pid] for pid in self.current.values()]
        return [info for info in infos if alive(info.pid, info.ticks)]

    def close(self) -> None:
        """Make sure the supervisor and its services are gone; close our fds."""
        self.reaper.stop_supervisor(self.proc)
        for thread in self._threads:
            thread.join(2)
        with self.cond:
            infos = list(self.children.values())
        for info in infos:
            if alive(info.pid, info.ticks):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(info.pid, signal.SIGKILL)
            if info.pidfd >= 0:
                os.close(info.pidfd)
                info.pidfd = -1
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


# -- the measures ------------------------------------------------------------------------------


def poll_interval(count: int) -> float:
    """5 ms per port for a few, 10 ms for many (so the polling does not crowd 2 cores)."""
    return 0.005 if count <= 8 else 0.010


def measure_startup(
    run: SupervisorRun, ports: dict[str, int], timeout: float, *, ready_lines: bool = True
) -> dict[str, Any]:
    """Launch → every service answering /health (outside), and → the supervisor saying so.

    ``ready_lines``: the services print ``ready <time>`` (bench/svc.py does, the Hearthlink
    services do not), which gives the lag from listening to the supervisor's notice.
    """
    cpu0 = time.process_time()
    answers = poll_health(
        ports,
        deadline=run.t_launch + timeout,
        interval=poll_interval(len(ports)),
        eligible=run.started,
        supervisor=run.proc,
    )
    poll_cpu = time.process_time() - cpu0
    noticed = run.wait_all_healthy(list(ports), after=run.t_launch, timeout=timeout)
    sup_cpu = cpu_seconds(run.pid)
    lags = []
    for name in ports if ready_lines else ():
        ready = run.ready_time(name)
        if ready is not None:
            lags.append((noticed[name] - ready) * 1000)
    return {
        "answering_s": max(t for t, _ in answers.values()) - run.t_launch,
        "noticed_s": max(noticed.values()) - run.t_launch,
        "notice_lag_ms": lags,
        "poller_cpu_s": poll_cpu,
        "supervisor_cpu_s": sup_cpu,
        "services": {
            name: {
                "started_s": run.wait_event("started", service=name, after=run.t_launch, timeout=1)[
                    0
                ]
                - run.t_launch,
                "answering_s": answers[name][0] - run.t_launch,
                "healthy_s": noticed[name] - run.t_launch,
            }
            for name in ports
        }
        if len(ports) <= 8
        else {},
    }


def measure_crash(run: SupervisorRun, name: str, port: int, timeout: float) -> dict[str, Any]:
    """SIGKILL one service; time until a new process answers /health (and the supervisor
    saw the exit, started the new one, and saw it healthy)."""
    with run.cond:
        old = run.current[name]
        info = run.children[old]
    t0 = time.monotonic()
    signal.pidfd_send_signal(info.pidfd, signal.SIGKILL)
    answers = poll_health(
        {name: port},
        deadline=t0 + timeout,
        interval=0.005,
        accept=lambda _n, body: body.get("pid") != old,
        supervisor=run.proc,
    )
    t_answer = answers[name][0]
    t_exit, _ = run.wait_event("exited", service=name, after=t0, timeout=timeout)
    t_start, _ = run.wait_event("started", service=name, after=t0, timeout=timeout)
    t_healthy, _ = run.wait_event("healthy", service=name, after=t0, timeout=timeout)
    ready = run.ready_time(name)
    return {
        "service": name,
        "answering_ms": (t_answer - t0) * 1000,
        "exit_seen_ms": (t_exit - t0) * 1000,
        "respawned_ms": (t_start - t0) * 1000,
        "noticed_ms": (t_healthy - t0) * 1000,
        "notice_lag_ms": None if ready is None else (t_healthy - ready) * 1000,
    }


def measure_stop(run: SupervisorRun, timeout: float) -> dict[str, Any]:
    """SIGINT → the supervisor has exited and every service process is gone."""
    children = [c for c in run.live_children() if c.pidfd >= 0]
    poller = select.poll()
    waiting: dict[int, str] = {run.pidfd: "supervisor"}
    poller.register(run.pidfd, select.POLLIN)
    for child in children:
        poller.register(child.pidfd, select.POLLIN)
        waiting[child.pidfd] = child.name
    exits: dict[str, float] = {}
    t0 = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    while waiting:
        left = t0 + timeout - time.monotonic()
        if left <= 0:
            names = ", ".join(list(waiting.values())[:5])
            raise BenchError(f"stop took over {timeout:g}s; still running: {names}")
        for fd, _mask in poller.poll(left * 1000):
            when = time.monotonic()
            poller.unregister(fd)
            exits[waiting.pop(fd)] = when
    code = run.proc.wait(5)
    leftovers = [c.pid for c in children if alive(c.pid, c.ticks)]
    sup_exit = exits.pop("supervisor")
    last_child = max(exits.values(), default=t0)
    with run.cond:
        byes = [t for name, t in run.byes.items() if name in exits]
    return {
        "total_ms": (max(sup_exit, last_child) - t0) * 1000,
        "last_service_exit_ms": (last_child - t0) * 1000,
        "supervisor_after_last_service_ms": (sup_exit - last_child) * 1000,
        # Services that honour SIGTERM say "bye" when it arrives: SIGINT → SIGTERM delivered.
        "last_sigterm_handled_ms": (max(byes) - t0) * 1000 if byes else None,
        "exit_code": code,
        "leftovers": leftovers,
    }


def idle_window(pid: int, seconds: float, *, services: int, interval: float) -> dict[str, Any]:
    """The supervisor's CPU seconds and RSS over ``seconds`` in which nothing happens but
    its probes (``services`` probed every ``interval``)."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    samples = []
    while (left := t0 + seconds - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        rss = rss_mib(pid)
        if rss is not None:
            samples.append(rss)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    if cpu0 is None or cpu1 is None or not samples:
        raise BenchError("the supervisor went away during an idle window")
    probes = services * (t1 - t0) / interval
    return {
        "seconds": t1 - t0,
        "cpu_s": cpu1 - cpu0,
        "cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100,
        "probes_expected": probes,
        "cpu_us_per_probe": (cpu1 - cpu0) / probes * 1e6,
        "rss_mib": samples[-1],
        "rss_mib_max": max(samples),
    }


# -- configs and launching -------------------------------------------------------------------


def supervisor_argv(opts: argparse.Namespace, config: Path) -> list[str]:
    if opts.supervisor_cmd:
        prefix = shlex.split(opts.supervisor_cmd)
    else:
        script = Path(sys.executable).with_name("hearthlink")
        prefix = [str(script)] if script.exists() else [sys.executable, "-m", "hearthlink_trio"]
    return [*prefix, "run", "--config", str(config), "--log-format", "json"]


#: Imports every module of the package (but its __main__), so that their bytecode is cached.
WARM_UP = """
import importlib, pkgutil, hearthlink_trio
for mod in pkgutil.walk_packages(hearthlink_trio.__path__, "hearthlink_trio."):
    if not mod.name.endswith("__main__"):
        try:
            importlib.import_module(mod.name)
        except Exception as exc:
            print(f"warm-up: {mod.name}: {exc}")
"""


def base_env() -> dict[str, str]:
    """Our environment, less what would change the supervisor's behaviour or cost.

    PYTHONDONTWRITEBYTECODE goes: with it set (as in some CI shells) every start compiles
    every module again (+0.7 s of CPU per supervisor start in a fresh venv), which is not
    what a user's second ``hearthlink run`` costs.
    """
    return {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "HEARTHLINK_CONFIG",
            "HEARTHLINK_VAULT_KEY",
            "NOTIFY_SOCKET",
            "PYTHONDONTWRITEBYTECODE",
        )
        and not k.startswith("WATCHDOG_")
    }


def warm_up() -> None:
    """Cache the bytecode of the supervisor and the services before measuring anything."""
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", WARM_UP],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    for line in (out.stdout + out.stderr).splitlines()[-5:]:
        progress(f"  {line}")
    progress(f"warm-up (bytecode cache) took {time.monotonic() - t0:.1f}s")


def bench_env(data_dir: Path) -> dict[str, str]:
    env = base_env()
    env["HEARTHLINK_DATA_DIR"] = str(data_dir)
    env["HEARTHLINK_API_TOKEN"] = "bench-" + os.urandom(12).hex()
    return env


def write_config(
    folder: Path,
    ports: list[int],
    *,
    ignore_term: bool,
    initial_backoff: float,
    startup_period: float,
    stop_timeout: float,
) -> tuple[Path, dict[str, int]]:
    names = {f"s{i:03d}": port for i, port in enumerate(ports)}
    lines = [
        "# generated by bench/run.py",
        "[supervisor]",
        f'data_dir = "{folder / "data"}"',
        f"stop_timeout = {stop_timeout}",
        "",
        "[health]",
        f"startup_interval = {STARTUP_INTERVAL}",
        f"startup_period = {startup_period}",
        f"steady_interval = {STEADY_INTERVAL}",
        "",
        "[restart]",
        f"initial_backoff = {initial_backoff}",
        "",
    ]
    for name, port in names.items():
        lines += [f"[services.{name}]", f'script = "{SVC}"', f"port = {port}"]
        if ignore_term:
            lines.append('env = { BENCHSVC_IGNORE_TERM = "1" }')
        lines.append("")
    path = folder / "bench.toml"
    path.write_text("\n".join(lines))
    return path, names


@contextlib.contextmanager
def supervised(
    opts: argparse.Namespace, reaper: Reaper, config: Path, data_dir: Path
) -> Iterator[SupervisorRun]:
    run = SupervisorRun(supervisor_argv(opts, config), bench_env(data_dir), reaper)
    try:
        yield run
    except BenchError as exc:
        run.close()  # first, so that its last lines have been read
        raise BenchError(f"{exc}\n  supervisor's last lines:\n{run.describe_failure()}") from None
    finally:
        run.close()


def startup_timeout(n: int) -> float:
    return 20.0 + n * 0.3


def bench_n(n: int, opts: argparse.Namespace, reaper: Reaper) -> dict[str, Any]:
    """Every measure for N generated services."""
    res: dict[str, Any] = {
        "n": n,
        "startup": [],
        "crash_backoff_0": [],
        "crash_backoff_1": [],
        "stop_honour": [],
        "stop_ignore": [],
        "idle": {},
    }
    victims = [f"s{i % n:03d}" for i in range(opts.repeats)]

    def record_startup(run: SupervisorRun, ports: dict[str, int]) -> dict[str, Any]:
        s = measure_startup(run, ports, startup_timeout(n))
        s["rss_mib"] = rss_mib(run.pid)
        res["startup"].append(s)
        progress(
            f"  N={n}: all answering after {s['answering_s']:.2f}s, "
            f"seen healthy after {s['noticed_s']:.2f}s"
        )
        return s

    def crash(run: SupervisorRun, name: str, ports: dict[str, int], key: str) -> None:
        time.sleep(0.3)
        c = measure_crash(run, name, ports[name], timeout=15)
        res[key].append(c)
        progress(
            f"  N={n}: {key}: killed {name}, new process answering after {c['answering_ms']:.0f} ms"
        )

    def stop(run: SupervisorRun, key: str, timeout: float) -> None:
        s = measure_stop(run, timeout)
        res[key].append(s)
        progress(
            f"  N={n}: {key}: SIGINT to all gone {s['total_ms']:.0f} ms (exit {s['exit_code']})"
        )
        if s["leftovers"]:
            raise BenchError(f"processes left after the stop: {s['leftovers']}")

    # Run 1: the idle windows (startup phase, then steady phase), crashes with the default
    # 1 s backoff, and a stop. startup_period is sized so that the startup window fits.
    startup_period = opts.idle + 2 + min(6.0, 0.5 + n * 0.04)
    with tempfile.TemporaryDirectory(prefix="hlbench-") as tmp:
        cfg, ports = write_config(
            Path(tmp),
            free_ports(n),
            ignore_term=False,
            initial_backoff=1.0,
            startup_period=startup_period,
            stop_timeout=10.0,
        )
        progress(f"N={n}: run 1 (idle windows, startup_period {startup_period:g}s, backoff 1s)")
        with supervised(opts, reaper, cfg, Path(tmp) / "data") as run:
            record_startup(run, ports)
            time.sleep(0.5)
            window = min(opts.idle, run.t_launch + startup_period - 1.0 - time.monotonic())
            if window < 2:
                raise BenchError("the startup took too long to fit the startup-phase window")
            if window < opts.idle:
                progress(f"  startup-phase window shortened to {window:.1f}s")
            res["idle"]["startup"] = idle_window(
                run.pid, window, services=n, interval=STARTUP_INTERVAL
            )
            progress(
                f"  idle, startup phase: {res['idle']['startup']['cpu_pct']:.2f}% CPU, "
                f"{res['idle']['startup']['rss_mib']:.1f} MiB"
            )
            t_switch, _ = run.wait_event(
                "steady_state", after=run.t_launch, timeout=startup_period + 10
            )
            # From the switch on, each service's next probe (still scheduled at the startup
            # interval) and then one every steady interval: a window of 2 steady intervals
            # holds 2 probes of each service, as any later one would.
            time.sleep(max(0.0, t_switch + 0.5 - time.monotonic()))
            res["idle"]["steady"] = idle_window(
                run.pid, opts.idle, services=n, interval=STEADY_INTERVAL
            )
            progress(
                f"  idle, steady phase: {res['idle']['steady']['cpu_pct']:.2f}% CPU, "
                f"{res['idle']['steady']['rss_mib']:.1f} MiB"
            )
            for name in victims:
                crash(run, name, ports, "crash_backoff_1")
            stop(run, "stop_honour", timeout=30)

    # Runs 2..repeats: zero backoff crashes and stops of services that honour SIGTERM.
    for r in range(2, opts.repeats + 1):
        with tempfile.TemporaryDirectory(prefix="hlbench-") as tmp:
            cfg, ports = write_config(
                Path(tmp),
                free_ports(n),
                ignore_term=False,
                initial_backoff=0.0,
                startup_period=60.0,
                stop_timeout=10.0,
            )
            progress(f"N={n}: run {r} (backoff 0)")
            with supervised(opts, reaper, cfg, Path(tmp) / "data") as run:
                record_startup(run, ports)
                for name in victims:
                    crash(run, name, ports, "crash_backoff_0")
                time.sleep(0.3)
                stop(run, "stop_honour", timeout=30)

    # Services that ignore SIGTERM: the stop waits stop_timeout (1 s), then SIGKILLs.
    for r in range(1, opts.repeats + 1):
        with tempfile.TemporaryDirectory(prefix="hlbench-") as tmp:
            cfg, ports = write_config(
                Path(tmp),
                free_ports(n),
                ignore_term=True,
                initial_backoff=1.0,
                startup_period=60.0,
                stop_timeout=1.0,
            )
            progress(f"N={n}: ignore-SIGTERM run {r}")
            with supervised(opts, reaper, cfg, Path(tmp) / "data") as run:
                record_startup(run, ports)
                time.sleep(0.3)
                stop(run, "stop_ignore", timeout=30)
    return res


def bench_default(opts: argparse.Namespace, reaper: Reaper) -> dict[str, Any]:
    """The four Hearthlink services on the default config."""
    if not DEFAULT_CONFIG.exists():
        return {"skipped": f"{DEFAULT_CONFIG.relative_to(REPO)} does not exist yet"}
    try:
        services = tomllib.loads(DEFAULT_CONFIG.read_text()).get("services", {})
        ports = {name: int(svc["port"]) for name, svc in services.items()}
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        return {"skipped": f"cannot read the ports of {DEFAULT_CONFIG}: {exc}"}
    busy = [f"{name} ({port})" for name, port in ports.items() if not port_free(port)]
    if busy:
        return {"skipped": f"ports in use: {', '.join(busy)}"}
    res: dict[str, Any] = {"services": ports, "startup": [], "stop": [], "rss": []}
    for r in range(1, opts.repeats + 1):
        with tempfile.TemporaryDirectory(prefix="hlbench-default-") as tmp:
            progress(f"default config: run {r}")
            with supervised(opts, reaper, DEFAULT_CONFIG, Path(tmp)) as run:
                s = measure_startup(run, ports, timeout=60, ready_lines=False)
                res["startup"].append(s)
                time.sleep(1.0)
                rss = {name: group_rss_mib(run.current[name]) for name in ports}
                rss["supervisor"] = rss_mib(run.pid)
                res["rss"].append(rss)
                progress(
                    f"  all answering after {s['answering_s']:.2f}s; RSS "
                    + ", ".join(f"{k} {v:.1f}" for k, v in rss.items() if v is not None)
                    + " MiB"
                )
                stop = measure_stop(run, timeout=60)
                res["stop"].append(stop)
                progress(
                    f"  SIGINT to all gone {stop['total_ms']:.0f} ms (exit {stop['exit_code']})"
                )
                if stop["leftovers"]:
                    raise BenchError(f"processes left after the stop: {stop['leftovers']}")
    return res


# -- the report ----------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "count": len(values),
    }


def fmt(stats: dict[str, float] | None, unit: str, digits: int = 0) -> str:
    if stats is None:
        return "—"
    med, lo, hi = stats["median"], stats["min"], stats["max"]
    if stats["count"] == 1 or lo == hi:
        return f"{med:.{digits}f} {unit}"
    return f"{med:.{digits}f} {unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def mark(stats: dict[str, float] | None, budget: float | None) -> str:
    """✓ every sample within budget, ≈ the median within it but not every sample, ✗ not."""
    if stats is None or budget is None:
        return ""
    if stats["max"] <= budget:
        return " ✓"
    return " ≈" if stats["median"] <= budget else " ✗"


def build_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    per_n = results["generated"]
    ns = [r["n"] for r in per_n]
    rows: list[list[str]] = []

    def row(
        label: str,
        budget_text: str,
        pick: Callable[[dict[str, Any]], list[float]],
        unit: str,
        digits: int = 0,
        budget: float | Callable[[int], float | None] | None = None,
    ) -> None:
        cells = [label, budget_text]
        for r in per_n:
            stats = summary(pick(r))
            b = budget(r["n"]) if callable(budget) else budget
            cells.append(fmt(stats, unit, digits) + mark(stats, b))
        rows.append(cells)

    row(
        "launch → every service answering /health",
        "—",
        lambda r: [s["answering_s"] for s in r["startup"]],
        "s",
        2,
    )
    row(
        "launch → supervisor logged every service healthy",
        "—",
        lambda r: [s["noticed_s"] for s in r["startup"]],
        "s",
        2,
    )
    row(
        "supervisor CPU time, launch → all healthy",
        "—",
        lambda r: [s["supervisor_cpu_s"] for s in r["startup"]],
        "s",
        2,
    )
    row(
        "service listening → supervisor logs it healthy, at startup (every service)",
        "≈ 50 ms",
        lambda r: [x for s in r["startup"] for x in s["notice_lag_ms"]],
        "ms",
        0,
        50,
    )
    row(
        "service listening → supervisor logs it healthy, after a restart",
        "≈ 50 ms",
        lambda r: [c["notice_lag_ms"] for c in r["crash_backoff_0"] + r["crash_backoff_1"]],
        "ms",
        0,
        50,
    )
    row(
        "SIGKILL → new process answering, initial_backoff 0",
        "≤ 100 ms",
        lambda r: [c["answering_ms"] for c in r["crash_backoff_0"]],
        "ms",
        0,
        100,
    )
    row(
        "SIGKILL → supervisor logs it healthy, initial_backoff 0",
        "≤ 1 s",
        lambda r: [c["noticed_ms"] for c in r["crash_backoff_0"]],
        "ms",
        0,
        1000,
    )
    row(
        "SIGKILL → new process answering, initial_backoff 1 s",
        "≤ 2 s",
        lambda r: [c["answering_ms"] for c in r["crash_backoff_1"]],
        "ms",
        0,
        2000,
    )
    row(
        "SIGKILL → supervisor logs the exit",
        "—",
        lambda r: [c["exit_seen_ms"] for c in r["crash_backoff_0"] + r["crash_backoff_1"]],
        "ms",
        1,
    )
    row(
        "SIGINT → supervisor exited, every service gone (services honour SIGTERM)",
        "≤ 1 s",
        lambda r: [s["total_ms"] for s in r["stop_honour"]],
        "ms",
        0,
        1000,
    )
    row(
        "last service exit → supervisor exit (honour SIGTERM)",
        "≤ 50 ms",
        lambda r: [s["supervisor_after_last_service_ms"] for s in r["stop_honour"]],
        "ms",
        0,
        50,
    )
    row(
        "SIGINT → all gone, services ignore SIGTERM (stop_timeout 1 s)",
        "—",
        lambda r: [s["total_ms"] for s in r["stop_ignore"]],
        "ms",
        0,
    )
    row(
        "last service killed → supervisor exit (ignore SIGTERM)",
        "≤ 50 ms",
        lambda r: [s["supervisor_after_last_service_ms"] for s in r["stop_ignore"]],
        "ms",
        0,
        50,
    )
    row(
        f"supervisor CPU, idle, startup phase (probes every {STARTUP_INTERVAL:g} s)",
        "≤ 2 %",
        lambda r: [r["idle"]["startup"]["cpu_pct"]] if "startup" in r["idle"] else [],
        "%",
        2,
        2.0,
    )
    row(
        f"supervisor CPU, idle, steady phase (probes every {STEADY_INTERVAL:g} s)",
        "≤ 2 %",
        lambda r: [r["idle"]["steady"]["cpu_pct"]] if "steady" in r["idle"] else [],
        "%",
        2,
        2.0,
    )
    row(
        f"supervisor CPU per probe (both idle windows; CPU ticks are {1000 / CLK_TCK:g} ms)",
        "flat in N",
        lambda r: [w["cpu_us_per_probe"] for w in r["idle"].values()],
        "µs",
        0,
    )
    row(
        "supervisor RSS, steady phase",
        "≤ 60 MiB (4 services)",
        lambda r: [r["idle"]["steady"]["rss_mib"]] if "steady" in r["idle"] else [],
        "MiB",
        1,
        lambda n: 60.0 if n <= 4 else None,
    )
    header = ["measure", "budget", *[f"N = {n}" for n in ns]]
    return header, rows


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    parts = [
        f"hearthlink benchmark, {results['date']}: {m['cores']} cores "
        f"({m['cpu_model']}), Python {m['python']}, commit {results['commit']}; "
        f"{results['repeats']} repeats, {results['idle_window_s']:g} s idle windows; "
        f"took {results['elapsed_s']:.0f} s. Median (min–max).",
        "",
    ]
    if results["generated"]:
        header, rows = build_rows(results)
        parts.append(table(header, rows))
        per_n = [r for r in results["generated"] if "steady" in r["idle"]]
        if len(per_n) >= 2:
            a, b = per_n[0], per_n[-1]
            slope = (b["idle"]["steady"]["rss_mib"] - a["idle"]["steady"]["rss_mib"]) / (
                b["n"] - a["n"]
            )
            results["rss_per_service_mib"] = slope
            parts.append(
                f"\nSupervisor RSS growth: {slope * 1024:.0f} KiB per service "
                f"(N = {a['n']} → {b['n']}, steady phase; budget well under 1 MiB)"
                + (" ✓" if slope < 0.5 else " ✗")
            )
    d = results.get("default")
    if d is not None:
        parts.append("\nDefault config (the four Hearthlink services):\n")
        if "skipped" in d:
            parts.append(f"skipped: {d['skipped']}")
        else:
            rows = []
            st = summary([s["answering_s"] for s in d["startup"]])
            rows.append(
                ["launch → all four answering /health", "≤ 2 s", fmt(st, "s", 2) + mark(st, 2.0)]
            )
            st = summary([s["noticed_s"] for s in d["startup"]])
            rows.append(["launch → supervisor logged all four healthy", "—", fmt(st, "s", 2)])
            st = summary([s["total_ms"] for s in d["stop"]])
            rows.append(["SIGINT → all gone", "≤ 1 s", fmt(st, "ms", 0) + mark(st, 1000)])
            st = summary([s["supervisor_after_last_service_ms"] for s in d["stop"]])
            rows.append(
                ["last service exit → supervisor exit", "≤ 50 ms", fmt(st, "ms", 0) + mark(st, 50)]
            )
            st = summary([r["supervisor"] for r in d["rss"]])
            rows.append(["supervisor RSS", "≤ 60 MiB", fmt(st, "MiB", 1) + mark(st, 60)])
            for name in d["services"]:
                st = summary([r[name] for r in d["rss"]])
                rows.append([f"{name} RSS", "≤ 50 MiB", fmt(st, "MiB", 1) + mark(st, 50)])
            parts.append(table(["measure", "budget", "value"], rows))
            spans = []
            for name in d["services"]:
                runs = [s["services"][name] for s in d["startup"] if name in s.get("services", {})]
                if runs:
                    started = statistics.median(r["started_s"] for r in runs)
                    healthy = statistics.median(r["healthy_s"] for r in runs)
                    spans.append(f"{name} started {started:.2f} s, healthy {healthy:.2f} s")
            if spans:
                parts.append("\nAfter launch (median): " + "; ".join(spans) + ".")
    parts.append(
        "\n✓ within budget in every run, ≈ median within budget, ✗ over budget. "
        "Reproduce: `nox -s bench` (or `python bench/run.py`)."
    )
    return "\n".join(parts)


def machine() -> dict[str, Any]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
        "clk_tck": CLK_TCK,
    }


def commit() -> str:
    if not shutil.which("git"):
        return "?"
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+dirty src" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="N = 4 only, 2 repeats, 5 s idle windows (a smoke run)"
    )
    parser.add_argument("--n", default=None, help="comma-separated service counts (4,32,100)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per measure (3)")
    parser.add_argument("--idle", type=float, default=None, help="idle window seconds (20)")
    parser.add_argument("--skip-default", action="store_true", help="skip the default-config part")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument(
        "--supervisor-cmd",
        default="",
        help="command that runs hearthlink (for profiling), e.g. "
        "'python -m pyinstrument -o prof.html -r html -m hearthlink_trio'",
    )
    opts = parser.parse_args(argv)
    ns = [int(x) for x in (opts.n or ("4" if opts.quick else "4,32,100")).split(",")]
    opts.repeats = opts.repeats or (2 if opts.quick else 3)
    opts.idle = opts.idle or (5.0 if opts.quick else 20.0)
    if opts.repeats < 1 or any(n < 1 for n in ns):
        parser.error("--repeats and --n must be positive")

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C even when started from a shell that had SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    reaper = Reaper()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": commit(),
        "machine": machine(),
        "repeats": opts.repeats,
        "idle_window_s": opts.idle,
        "health": (
            f"startup_interval {STARTUP_INTERVAL:g} s (default), steady_interval "
            f"{STEADY_INTERVAL:g} s (default 30 s), timeout 5 s, failure_threshold 3"
        ),
        "generated": [],
    }
    code = 0
    try:
        warm_up()
        for n in ns:
            results["generated"].append(bench_n(n, opts, reaper))
        if not opts.skip_default:
            results["default"] = bench_default(opts, reaper)
            if "skipped" in results["default"]:
                progress(f"default config part skipped: {results['default']['skipped']}")
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("benchmark interrupted", file=sys.stderr)
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        left = reaper.cleanup()
        results["processes_started"] = reaper.started
        results["leftovers_killed_at_end"] = left
        if left:
            print(f"killed {len(left)} leftover process(es): {left}", file=sys.stderr)
        still = reaper.leftovers()
        if still:
            print(f"processes still alive after cleanup: {still}", file=sys.stderr)
            code = code or 1
    if code:
        return code
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["elapsed_s"] = time.monotonic() - T0
    text = render(results)
    print(text)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(results, indent=2) + "\n")
    progress(f"{reaper.started} processes started, none left; results in {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
