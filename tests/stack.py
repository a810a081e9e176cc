"""Harness for tests that run the real ``hearthlink`` command on a generated config."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearthlink_trio.process.procfs import proc_stat
from tests.helpers import free_port, free_ports, pid_alive, wait_for

TESTSVC = Path(__file__).parent / "fixtures" / "testsvc.py"

FAST_HEALTH = {
    "startup_interval": 0.2,
    "startup_period": 30.0,
    "steady_interval": 0.5,
    "timeout": 1.0,
    "failure_threshold": 3,
}
FAST_RESTART = {"max_attempts": 3, "initial_backoff": 0.1, "max_backoff": 0.4, "stable_after": 5.0}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + "}"
    raise TypeError(value)


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@dataclass
class Stack:
    """A config of test services in ``root``, with its data dir and ports."""

    root: Path
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=lambda: dict(FAST_HEALTH))
    restart: dict[str, Any] = field(default_factory=lambda: dict(FAST_RESTART))
    supervisor: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = self.root / "data"
        self.piddir = self.root / "pids"
        self.piddir.mkdir(exist_ok=True)
        self.events = self.root / "events.txt"
        self.supervisor.setdefault("data_dir", str(self.data_dir))
        self.supervisor.setdefault("stop_timeout", 2.0)

    def add(self, name: str, *, port: int | None = None, **options: Any) -> dict[str, Any]:
        env = {
            "TESTSVC_PIDDIR": str(self.piddir),
            "TESTSVC_EVENTS": str(self.events),
            **options.pop("env", {}),
        }
        replicas = 1 if options.get("socket") else int(options.get("replicas", 1))
        if port is None:
            # Never one a service of this stack has already: free_port() may hand out the
            # same port twice in a row.
            taken = {
                int(svc["port"]) + i
                for svc in self.services.values()
                if isinstance(svc.get("port"), int)
                for i in range(int(svc.get("replicas", 1)))
            }
            while True:
                port = free_ports(replicas) if replicas > 1 else free_port()
                if not taken & set(range(port, port + replicas)):
                    break
        service = {"script": str(TESTSVC), "port": port, "env": env, **options}
        self.services[name] = service
        return service

    def port(self, name: str) -> int:
        return int(self.services[name]["port"])

    def write(self, name: str = "hearthlink.toml") -> Path:
        sections: dict[str, Mapping[str, Any]] = {
            "supervisor": self.supervisor,
            "health": self.health,
            "restart": self.restart,
        }
        for svc, values in self.services.items():
            sections[f"services.{svc}"] = values
        return write_config(self.root / name, sections)

    def pids(self, prefix: str = "") -> list[int]:
        return [
            int(p.name.rsplit(".", 1)[1])
            for p in self.piddir.iterdir()
            if p.name.startswith(prefix + ".") or (not prefix and "." in p.name)
        ]

    def event_lines(self) -> list[tuple[str, str]]:
        if not self.events.exists():
            return []
        return [tuple(line.split()[:2]) for line in self.events.read_text().splitlines()]  # type: ignore[misc]


class Running:
    """A ``hearthlink`` process started by a test; output goes to files."""

    def __init__(self, args: list[str], cwd: Path, env: Mapping[str, str] | None = None) -> None:
        self.out_path = cwd / f"stdout-{time.monotonic_ns()}.txt"
        self.err_path = cwd / f"stderr-{time.monotonic_ns()}.txt"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}
        full_env.update(env or {})
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hearthlink_trio", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=full_env,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_line(self, pattern: str, *, timeout: float = 15.0, count: int = 1) -> list[str]:
        regex = re.compile(pattern)

        def found() -> list[str] | None:
            lines = [line for line in self.stderr().splitlines() if regex.search(line)]
            if len(lines) >= count:
                return lines
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"hearthlink exited ({self.proc.returncode}) before {pattern!r}:\n"
                    f"{self.stderr()[-4000:]}"
                )
            return None

        result: list[str] = wait_for(found, timeout=timeout, what=f"line {pattern!r}")
        return result

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"hearthlink did not exit:\n{self.stderr()[-4000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@contextlib.contextmanager
def running(
    config: Path, *args: str, env: Mapping[str, str] | None = None, command: str = "run"
) -> Iterator[Running]:
    """``hearthlink run --config config``; killed by pid (with its group) if still running."""
    proc = Running([command, "--config", str(config), *args], config.parent, env)
    try:
        yield proc
    finally:
        if proc.proc.poll() is None:
            proc.signal(signal.SIGINT)
            try:
                proc.proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def run_command(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "hearthlink_trio", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def run_parsed(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``hearthlink ARGS`` through the argument parser's own entry, whatever the form of the
    command line (the console script runs plain forms of ``run`` and ``status`` without it)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}
    full_env.update(env or {})
    code = "import sys\nfrom hearthlink_trio.cli.app import main\nraise SystemExit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def all_gone(pids: list[int], timeout: float = 5.0) -> None:
    wait_for(
        lambda: not any(pid_alive(p) for p in pids),
        timeout=timeout,
        what=f"processes {pids} to be gone",
    )


def children(parent: int) -> dict[int, str]:
    """``{pid: state}`` of the children of ``parent`` (zombies included)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := proc_stat(int(entry))) and stat.ppid == parent:
            found[int(entry)] = stat.state
    return found


def sentinel_of(sup: Running) -> int:
    """The sentinel: the supervisor's child running ``hearthlink_trio.process.sentinel_main``."""

    def cmdline(pid: int) -> bytes:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read()
        except OSError:
            return b""

    found = [pid for pid in children(sup.pid) if b"sentinel_main" in cmdline(pid)]
    assert len(found) == 1, found
    return found[0]
