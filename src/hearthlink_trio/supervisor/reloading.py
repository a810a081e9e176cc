"""Preparing a reload: read the config file again, plan against the running config, and
check what the plan needs of this machine (free ports, secrets) before anything stops."""

from __future__ import annotations

import logging

from hearthlink_trio.config import Config
from hearthlink_trio.errors import ConfigError
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.preflight import check_port
from hearthlink_trio.supervisor.reload import Plan, ReloadRefused, diff
from hearthlink_trio.supervisor.secrets import Secrets, load_secrets

KEEP_THEIR_CONFIG = "; the running services keep their config"


def prepare_reload(running: Config, log: logging.Logger) -> tuple[Plan, Secrets] | None:
    """The plan from ``running`` to the config file as it is now, with the secrets it
    needs (made now); None, logged, if the new config is refused whole."""
    # The file model (pydantic) is loaded only now: a run that never reloads never needs it.
    from hearthlink_trio.config.load import load_config

    try:
        new = load_config(running.path)
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
