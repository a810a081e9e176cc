"""The ``hearthlink`` command line (SPEC §4).

``run`` is a plain (sync) command that calls ``trio.run`` itself, so the exit code and the
signal handling are ours, not the argument parser's. Every :class:`HearthlinkError` is
reported here and mapped to its exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

from cyclopts import App, Parameter

from hearthlink_trio import __version__
from hearthlink_trio.config import Config, config_path, load_config
from hearthlink_trio.errors import HearthlinkError

app = App(
    name="hearthlink",
    version=__version__,
    help="A structured-concurrency process supervisor for the Hearthlink services.",
)

ConfigOption = Annotated[
    Path | None,
    Parameter(
        name="--config",
        help="Config file (default: $HEARTHLINK_CONFIG, else the bundled four-service config).",
    ),
]


def _report(exc: HearthlinkError) -> int:
    problems = getattr(exc, "problems", None) or [exc.message]
    for line in problems:
        print(line, file=sys.stderr)
    return exc.exit_code


def _load(config: Path | None) -> Config:
    return load_config(config_path(config))


@app.command
def run(
    *,
    config: ConfigOption = None,
    log_format: Annotated[
        Literal["human", "json"],
        Parameter(help="Supervisor events on stderr as text or JSON lines."),
    ] = "human",
) -> int:
    """Start every service of the config and supervise them until Ctrl-C or SIGTERM."""
    from hearthlink_trio.runtime import run_supervisor

    try:
        return run_supervisor(_load(config), log_format=log_format)
    except HearthlinkError as exc:
        return _report(exc)


@app.command
def check(*, config: ConfigOption = None) -> int:
    """Validate the config and run the preflight checks; start nothing."""
    from hearthlink_trio.output import setup_event_log
    from hearthlink_trio.preflight import preflight

    try:
        cfg = _load(config)
        preflight(cfg, setup_event_log("human"), keep_lock=False)
    except HearthlinkError as exc:
        return _report(exc)
    print(f"{cfg.path}: OK, {len(cfg.services)} service(s) ready to start")
    return 0


vault_app = App(name="vault", help="Vault maintenance.")
app.command(vault_app)


@vault_app.command(name="rotate-key")
def rotate_key(*, config: ConfigOption = None) -> int:
    """Re-encrypt every Vault record under a new key (stop the supervisor first)."""
    import os

    from hearthlink_trio.preflight import acquire_lock
    from hearthlink_trio.services.vault_keys import rotate_key as rotate

    try:
        cfg = _load(config)
        lock = acquire_lock(cfg.run_dir)
    except HearthlinkError as exc:
        return _report(exc)
    try:
        env_key = os.environ.get("HEARTHLINK_VAULT_KEY") or None
        new_key = rotate(cfg.data_dir, current_key=env_key)
    except ValueError as exc:
        print(f"vault rotate-key: {exc}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    if env_key:
        print("Vault re-encrypted. Set this new key in HEARTHLINK_VAULT_KEY before the next start:")
        print(new_key)
    else:
        print(f"Vault re-encrypted; the new key is in {cfg.data_dir / 'vault.key'}")
    return 0


def main() -> int:
    app()
    return 0
