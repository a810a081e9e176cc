"""A configuration after loading: every path resolved, every service ready to run."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hearthlink_trio.config.graph import longest_chain
from hearthlink_trio.config.model import HealthSection, RestartSection


@dataclass(frozen=True)
class Service:
    """One service, resolved and ready to run."""

    name: str
    argv: tuple[str, ...]
    port: int
    host: str
    health_url: str
    env: Mapping[str, str]
    cwd: Path
    depends_on: tuple[str, ...]
    stop_timeout: float
    stop_signal: signal.Signals
    critical: bool
    #: Environment variable -> secret file name in the data dir.
    secrets: Mapping[str, str]

    @property
    def url(self) -> str:
        return service_url(self.host, self.port)


@dataclass(frozen=True)
class Config:
    """A validated configuration with every path resolved."""

    path: Path
    data_dir: Path
    log_dir: Path
    run_dir: Path
    control_socket: Path
    python: str
    health: HealthSection
    restart: RestartSection
    services: tuple[Service, ...]
    log_max_bytes: int
    log_backups: int

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
