"""``hearthlink run``: preflight, secrets, then the supervisor under ``trio.run``."""

from __future__ import annotations

import os
import sys

import trio

from hearthlink_trio.config import Config
from hearthlink_trio.errors import PreflightError
from hearthlink_trio.output import Console, setup_event_log
from hearthlink_trio.preflight import preflight
from hearthlink_trio.sdnotify import Notifier
from hearthlink_trio.secretfiles import api_token
from hearthlink_trio.supervisor import Supervisor


def _secrets(config: Config) -> tuple[str, str | None]:
    """The API token, and the Vault key if the config has a service named ``vault``.

    Raises:
        PreflightError: a secret file is unreadable or malformed (nothing is overwritten).
    """
    try:
        token = api_token(config.data_dir)
        if not any(svc.name == "vault" for svc in config.services):
            return token, None
        if os.environ.get("HEARTHLINK_VAULT_KEY"):
            return token, os.environ["HEARTHLINK_VAULT_KEY"]
        from hearthlink_trio.services.vault.keys import load_or_create_key

        return token, load_or_create_key(config.data_dir)
    except (OSError, ValueError) as exc:
        raise PreflightError([f"Secrets in {config.data_dir}: {exc}"]) from None


def run_supervisor(config: Config, *, log_format: str) -> int:
    """Run the supervisor in the foreground; returns the exit code (SPEC §4)."""
    log = setup_event_log(log_format)
    lock = preflight(config, log, keep_lock=True)
    assert lock is not None
    console = Console(sys.stdout.buffer, colour=sys.stdout.isatty())
    try:
        token, vault_key = _secrets(config)
        try:
            supervisor = Supervisor(
                config,
                log,
                token=token,
                vault_key=vault_key,
                console=console,
                notifier=Notifier.from_environ(),
            )
        except OSError as exc:  # the log dir cannot be created or a log file opened
            raise PreflightError([f"Log dir {config.log_dir}: {exc.strerror or exc}"]) from None
        return trio.run(supervisor.run)
    finally:
        console.close()
        lock.release()
