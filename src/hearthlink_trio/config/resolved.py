"""A configuration after loading: every path resolved, every service ready to run.

Plain frozen dataclasses: what the supervisor runs needs nothing of the file model (and so
not pydantic) once a config is loaded.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hearthlink_trio.config.graph import longest_chain

#: The API token's file in the data dir; a declared secret cannot use its name.
TOKEN_FILE = "api.token"

#: A long-running service, or a task that runs to completion.
Kind = Literal["service", "task"]
#: When a process that ended is started again.
RestartPolicy = Literal["always", "on-failure", "never"]
#: Where the stop signal goes: the whole process group, or the main process only.
KillMode = Literal["group", "mixed"]
#: How a service shows it is ready and well.
ProbeKind = Literal["http", "tcp", "exec", "log", "notify", "none"]
#: How a restart that is not a crash replaces a process of a service with a held socket.
Strategy = Literal["rolling", "recreate"]


@dataclass(frozen=True)
class Health:
    """The ``[health]`` table: when and how services are probed."""

    startup_interval: float = 5.0
    startup_period: float = 60.0
    steady_interval: float = 30.0
    timeout: float = 5.0
    failure_threshold: int = 3


@dataclass(frozen=True)
class Restart:
    """The ``[restart]`` table: the backoff and when a service is given up."""

    max_attempts: int = 5
    initial_backoff: float = 1.0
    max_backoff: float = 30.0
    stable_after: float = 10.0


@dataclass(frozen=True)
class Probe:
    """How a service shows it is ready and well: one of http, tcp, exec, log, notify, none."""

    kind: ProbeKind
    path: str = ""  # http: the path to GET
    status: int = 200  # http: the status that passes
    json: bool = True  # http: also require a JSON body whose "status" is "healthy"
    argv: tuple[str, ...] = ()  # exec: the program and its arguments
    pattern: str = ""  # log: a regular expression matched against each output line


@dataclass(frozen=True)
class Service:
    """One service (or task, or one replica of either), resolved and ready to run."""

    name: str
    argv: tuple[str, ...]
    port: int | None
    host: str
    #: The URL the http probe GETs (None for the other probes).
    health_url: str | None
    env: Mapping[str, str]
    cwd: Path
    #: Every dependency (replicas expanded), each with its condition.
    conditions: Mapping[str, str]
    stop_timeout: float
    stop_signal: signal.Signals
    critical: bool
    #: Environment variable -> secret file name in the data dir.
    secrets: Mapping[str, str]
    probe: Probe = field(default_factory=lambda: Probe("http", path="/health"))
    kind: Kind = "service"
    restart: RestartPolicy = "always"
    #: From the dotenv files (the supervisor's, then the service's own): below ``env``.
    file_env: Mapping[str, str] = field(default_factory=dict)
    user: str = ""
    kill_mode: KillMode = "group"
    #: The service's table name: ``web`` for the replicas ``web-1`` … ``web-N``.
    group: str = ""
    replica: int | None = None
    image: str = ""
    #: Globs (gitignore-style, relative to ``cwd``) whose changes restart the service.
    watch: tuple[str, ...] = ()
    #: Globs never watched, on top of the built-in ignores.
    watch_ignore: tuple[str, ...] = ()
    #: Dependencies (replicas expanded) whose every restart restarts this service too.
    restart_with: tuple[str, ...] = ()
    #: The supervisor holds the listening socket and passes it as fd 3 (LISTEN_FDS).
    socket: bool = False
    #: How a restart that is not a crash replaces a process: "rolling" or "recreate".
    strategy: Strategy = "rolling"
    #: With the notify probe: WATCHDOG=1 expected at least this often (0: not watched).
    watchdog: float = 0.0
    #: Started only when one of these profiles is selected, or it is named (or needed).
    profiles: tuple[str, ...] = ()
    #: A task's schedule ("" = none): a cron expression or "every N".
    schedule: str = ""
    #: Hooks (argv, placeholders filled; empty = none) and how long each may run.
    post_start: tuple[str, ...] = ()
    pre_stop: tuple[str, ...] = ()
    on_failure: tuple[str, ...] = ()
    hook_timeout: float = 10.0
    #: Restarted when its memory stays above this many bytes (None: no limit).
    max_memory: int | None = None

    @property
    def depends_on(self) -> tuple[str, ...]:
        return tuple(self.conditions)

    @property
    def is_task(self) -> bool:
        return self.kind == "task"

    @property
    def url(self) -> str | None:
        return None if self.port is None else service_url(self.host, self.port)

    @property
    def watch_folders(self) -> tuple[Path, ...]:
        """The folders under ``cwd`` that hold what ``watch`` can match (each glob's fixed
        leading folders), without repeats."""
        folders = [self.cwd / glob_folder(glob) for glob in self.watch if not glob.startswith("!")]
        return tuple(dict.fromkeys(folders))


@dataclass(frozen=True)
class Config:
    """A validated configuration with every path resolved."""

    path: Path
    data_dir: Path
    log_dir: Path
    run_dir: Path
    control_socket: Path
    python: str
    health: Health
    restart: Restart
    services: tuple[Service, ...]
    log_max_bytes: int
    log_backups: int
    #: The config files as given (the first is ``path``); the override file beside the
    #: first is found again at each load.
    sources: tuple[Path, ...] = ()
    #: The ``[supervisor]`` env_file's values (every service's ``file_env`` starts from them).
    file_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def files(self) -> tuple[Path, ...]:
        """The files given for this config (``path`` alone for a config built by hand)."""
        return self.sources or (self.path,)

    def group(self, name: str) -> tuple[Service, ...]:
        """The services of table ``name``: itself, or its replicas."""
        return tuple(svc for svc in self.services if svc.group == name)

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(svc.name for svc in self.services)

    def worst_case_stop_seconds(self) -> float:
        """The longest a graceful shutdown can take.

        Dependents stop before their dependencies, so the worst case is the longest
        ``depends_on`` chain's sum of ``stop_timeout``, plus one second per service in it for
        draining output.
        """
        return longest_chain(
            {svc.name: svc.depends_on for svc in self.services},
            {svc.name: svc.stop_timeout + 1.0 for svc in self.services},
        )

    def secret_variables(self) -> frozenset[str]:
        """Every environment variable that some service declares as a secret."""
        return frozenset(var for svc in self.services for var in svc.secrets)


def service_url(host: str, port: int) -> str:
    """``http://host:port``, with an IPv6 host in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


_GLOB_CHARS = frozenset("*?[\\")


def glob_folder(glob: str) -> str:
    """The fixed folder a gitignore-style glob is anchored in, relative to its base: the
    leading components without wildcards, before the last one. ``src/**/*.py`` -> ``src``;
    ``config/app.toml`` -> ``config``; a glob with no inner ``/`` matches at any depth -> ``""``.
    """
    body = glob.rstrip("/")
    if "/" not in body:
        return ""
    parts = body.lstrip("/").split("/")[:-1]
    fixed = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return "/".join(fixed)
