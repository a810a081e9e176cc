"""Reloading the config of a running supervisor: the plan (what applying a new config to a
running one means; pure, no I/O) and its preparation (read the file again, plan, and check
what the plan needs of this machine before anything stops).

A service is *added* or *removed* by its table's presence, and *changed* when anything in
its own table changed; the rest are left alone and keep the environment they were started
with. ``[health]`` and ``[restart]`` apply at once to every service. The data dir, the log
dir and the control socket cannot move while running.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hearthlink_trio.config import Config
from hearthlink_trio.errors import ConfigError
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.preflight import check_port
from hearthlink_trio.supervisor.secrets import Secrets, load_secrets


class ReloadRefused(Exception):
    """The new config cannot be applied to the running one (the message says why)."""


@dataclass(frozen=True)
class Plan:
    """The difference between the running config and the new one."""

    config: Config
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]

    @property
    def stop(self) -> tuple[str, ...]:
        """Services whose runner ends: removed, or changed (and started again)."""
        return self.removed + self.changed

    @property
    def start(self) -> tuple[str, ...]:
        """Services that get a new runner, in the new config's dependency order."""
        wanted = set(self.added + self.changed)
        return tuple(name for name in self.config.names if name in wanted)

    def new_ports(self, old: Config) -> tuple[str, ...]:
        """Started services whose port is not already theirs (to be checked as free)."""
        before = {svc.name: svc.port for svc in old.services}
        return tuple(
            name for name in self.start if before.get(name) != self.config.service(name).port
        )

    def summary(self) -> str:
        """``added web; changed vault`` or ``no service changed``."""
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("changed", self.changed),
            )
            if names
        ]
        return "; ".join(parts) or "no service changed"


def diff(old: Config, new: Config) -> Plan:
    """The plan that takes the running ``old`` config to ``new``.

    Raises:
        ReloadRefused: ``new`` moves the data dir, the log dir or the control socket.
    """
    if (new.data_dir, new.log_dir, new.control_socket) != (
        old.data_dir,
        old.log_dir,
        old.control_socket,
    ):
        raise ReloadRefused(
            ": data_dir, log_dir and control_socket cannot change while running; "
            "restart hearthlink to move them"
        )
    before = {svc.name: svc for svc in old.services}
    after = {svc.name: svc for svc in new.services}
    return Plan(
        config=new,
        added=tuple(name for name in after if name not in before),
        removed=tuple(name for name in before if name not in after),
        changed=tuple(name for name in after if name in before and after[name] != before[name]),
    )


KEEP_THEIR_CONFIG = "; the running services keep their config"


def prepare_reload(running: Config, log: logging.Logger) -> tuple[Plan, Secrets] | None:
    """The plan from ``running`` to its config files as they are now, with the secrets it
    needs (made now); None, logged, if the new config is refused whole."""
    # The file model (pydantic) is loaded only now: a run that never reloads never needs it.
    from hearthlink_trio.config.load import load_config

    try:
        new = load_config(running.files)
        plan = diff(running, new)
    except ConfigError as exc:
        for line in exc.problems:
            log_lines.emit(log, log_lines.config_problem(line))
        log_lines.emit(log, log_lines.reload_refused(KEEP_THEIR_CONFIG))
        return None
    except ReloadRefused as exc:
        log_lines.emit(log, log_lines.reload_refused(str(exc)))
        return None
    busy = []
    for name in plan.new_ports(running):
        service = new.service(name)
        reason = check_port(service)
        if reason is not None:
            busy.append(f"Port {service.port} unavailable for {name} service: {reason}")
    secrets: Secrets | None = None
    try:
        # Secrets declared by added or changed services are made now, before any stop.
        secrets = load_secrets(new, create=True)
    except (OSError, ValueError) as exc:
        busy.append(f"Secrets in {new.data_dir}: {exc}")
    if busy or secrets is None:
        for line in busy:
            log_lines.emit(log, log_lines.port_unavailable(line))
        log_lines.emit(log, log_lines.reload_refused(KEEP_THEIR_CONFIG))
        return None
    log_lines.emit(log, log_lines.reloaded(plan.summary()))
    return plan, secrets
