"""The environment a service process starts with.

Lowest first: the supervisor's own environment (less systemd's notify variables and every
declared secret), the ``[supervisor]`` env_file, the service's env_file, then what
hearthlink injects (``HEARTHLINK_DATA_DIR``,
``HEARTHLINK_SERVICE``, ``HEARTHLINK_API_TOKEN``, ``HEARTHLINK_<NAME>_URL`` for every
service, ``PYTHONPATH``) and the secrets this service declares, then the service's ``env``.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from pathlib import Path

import hearthlink_trio
from hearthlink_trio.config import Config, Service
from hearthlink_trio.supervisor.secrets import TOKEN_VARIABLE, Secrets
from hearthlink_trio.systemd.notify import clean_child_env


def resource_dir() -> Path:
    """The folder holding the ``hearthlink_trio`` package, put on the services' PYTHONPATH."""
    return Path(hearthlink_trio.__file__).resolve().parent.parent


def url_variable(name: str) -> str:
    """``HEARTHLINK_VAULT_URL`` for service ``vault``."""
    return f"HEARTHLINK_{name.upper().replace('-', '_')}_URL"


def child_environment(
    config: Config,
    service: Service,
    secrets: Secrets,
    inherited: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of ``service``'s process."""
    env = clean_child_env(dict(os.environ if inherited is None else inherited))
    # A declared secret reaches only the services that declare it, even when the
    # supervisor itself inherited the variable.
    for var in config.secret_variables():
        env.pop(var, None)
    env.update(service.file_env)
    env["HEARTHLINK_DATA_DIR"] = str(config.data_dir)
    env["HEARTHLINK_SERVICE"] = service.name
    env[TOKEN_VARIABLE] = secrets.token
    for other in config.services:
        if other.url is not None:
            env[url_variable(other.name)] = other.url
    paths = [str(resource_dir())]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONUNBUFFERED", "1")
    for var in service.secrets:
        env[var] = secrets.values[var]
    if service.user:
        account = pwd.getpwnam(service.user)
        env.update(HOME=account.pw_dir, USER=service.user, LOGNAME=service.user)
    env.update(service.env)
    return env


def command_environment(
    config: Config, secrets: Secrets, inherited: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of the command of ``hearthlink run -- CMD``: the caller's own, the
    ``[supervisor]`` env_file's values, ``HEARTHLINK_DATA_DIR``, ``HEARTHLINK_API_TOKEN`` and
    ``HEARTHLINK_<NAME>_URL`` of every service (no service's declared secret)."""
    env = clean_child_env(dict(os.environ if inherited is None else inherited))
    for var in config.secret_variables():
        env.pop(var, None)
    env.update(config.file_env)
    env["HEARTHLINK_DATA_DIR"] = str(config.data_dir)
    env[TOKEN_VARIABLE] = secrets.token
    for service in config.services:
        if service.url is not None:
            env[url_variable(service.name)] = service.url
    return env
