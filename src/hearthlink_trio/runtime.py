"""``hearthlink run``: preflight, secrets, then the supervisor under ``trio.run``."""

from __future__ import annotations

import sys

import trio

from hearthlink_trio.config import Config
from hearthlink_trio.errors import FatalError
from hearthlink_trio.output import Console, setup_event_log
from hearthlink_trio.preflight import preflight
from hearthlink_trio.sdnotify import Notifier
from hearthlink_trio.secretfiles import api_token
from hearthlink_trio.supervisor import Supervisor


def _vault_key(config: Config) -> str | None:
    import os

    if not any(svc.name == "vault" for svc in config.services):
        return None
    if os.environ.get("HEARTHLINK_VAULT_KEY"):
        return os.environ["HEARTHLINK_VAULT_KEY"]
    from hearthlink_trio.services.vault_keys import load_or_create_key

    try:
        key: str = load_or_create_key(config.data_dir)
        return key
    except ValueError as exc:
        raise FatalError(f"vault key: {exc}") from None


def run_supervisor(config: Config, *, log_format: str) -> int:
    """Run the supervisor in the foreground; returns the exit code (SPEC §4)."""
    log = setup_event_log(log_format)
    lock = preflight(config, log, keep_lock=True)
    assert lock is not None
    console = Console(sys.stdout.buffer, colour=sys.stdout.isatty())
    try:
        supervisor = Supervisor(
            config,
            log,
            token=api_token(config.data_dir),
            vault_key=_vault_key(config),
            console=console,
            notifier=Notifier.from_environ(),
        )
        return trio.run(supervisor.run)
    finally:
        console.close()
        lock.release()
