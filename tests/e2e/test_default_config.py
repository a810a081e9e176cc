"""The default config (config/hearthlink.toml) and its bundled copy."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

from hearthlink_trio.config import config_path, default_config_path, load_config

ROOT = Path(__file__).resolve().parents[2]
REPO_COPY = ROOT / "config" / "hearthlink.toml"

SEED_PORTS = {"alden": 8888, "vault": 8001, "core": 8000, "synapse": 8002}


def test_the_bundled_copy_is_byte_identical_to_the_repository_one() -> None:
    bundled = default_config_path()
    assert bundled.is_file()
    assert bundled.read_bytes() == REPO_COPY.read_bytes()


def test_it_is_the_config_used_when_none_is_given() -> None:
    assert config_path(None, environ={}) == default_config_path()


def test_four_services_on_the_seed_ports_in_the_seed_order() -> None:
    raw = tomllib.loads(REPO_COPY.read_text(encoding="utf-8"))
    assert list(raw["services"]) == ["alden", "vault", "core", "synapse"]
    assert {name: svc["port"] for name, svc in raw["services"].items()} == SEED_PORTS


def test_it_validates_and_runs_each_service_module_with_the_running_python() -> None:
    for path in (REPO_COPY, default_config_path()):
        config = load_config(path, environ={})
        assert config.data_dir == Path("~/.local/share/hearthlink").expanduser()
        # Dependencies first: the Vault starts before Alden.
        assert set(config.names) == {"alden", "vault", "core", "synapse"}
        for name, port in SEED_PORTS.items():
            service = config.service(name)
            module = f"hearthlink_trio.services.{name}"
            assert service.argv == (
                sys.executable,
                "-m",
                module,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            )
            assert service.health_url == f"http://127.0.0.1:{port}/health"
            # Alden starts beside the Vault: its memory-only mode covers a late Vault.
            assert service.depends_on == ()
            assert service.critical is False
            assert importlib.util.find_spec(module) is not None


def test_the_seed_health_and_restart_timings() -> None:
    config = load_config(REPO_COPY, environ={})
    health = config.health
    assert (
        health.startup_interval,
        health.startup_period,
        health.steady_interval,
        health.timeout,
        health.failure_threshold,
    ) == (5, 60, 30, 5, 3)
    restart = config.restart
    assert (restart.max_attempts, restart.initial_backoff, restart.max_backoff) == (5, 1, 30)


def test_the_data_dir_follows_the_environment() -> None:
    config = load_config(REPO_COPY, environ={"HEARTHLINK_DATA_DIR": "/tmp/hl-elsewhere"})
    assert config.data_dir == Path("/tmp/hl-elsewhere")


def test_it_holds_every_socket_and_the_vault_is_recreated() -> None:
    config = load_config(REPO_COPY, environ={})
    assert all(svc.socket for svc in config.services)
    strategies = {svc.name: svc.strategy for svc in config.services}
    assert strategies == {
        "alden": "rolling",
        "vault": "recreate",
        "core": "rolling",
        "synapse": "rolling",
    }
