"""Config of held sockets, restart strategies and the notify probe."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearthlink_trio.config import Config, load_config
from hearthlink_trio.errors import ConfigError
from tests.stack import write_config


def _load(tmp_path: Path, services: dict[str, dict[str, object]]) -> Config:
    sections: dict[str, dict[str, object]] = {"supervisor": {"data_dir": str(tmp_path / "d")}}
    sections.update({f"services.{name}": table for name, table in services.items()})
    return load_config(write_config(tmp_path / "c.toml", sections), environ={})


def _problems(tmp_path: Path, services: dict[str, dict[str, object]]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, services)
    return caught.value.problems


def test_socket_strategy_and_notify_resolve(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        {
            "web": {"command": ["w", "{port}"], "port": 6000, "socket": True, "replicas": 3},
            "vault": {"command": ["v"], "port": 6001, "socket": True, "strategy": "recreate"},
            "db": {"command": ["d"], "probe": "notify", "watchdog": 2.5},
            "plain": {"command": ["p"], "port": 6002},
        },
    )
    # Replicas with a held socket share its one port (so 6001 is free for the vault).
    assert [s.port for s in config.group("web")] == [6000, 6000, 6000]
    assert config.service("web-2").argv == ("w", "6000")
    assert config.service("web-1").socket and config.service("web-1").strategy == "rolling"
    assert config.service("vault").strategy == "recreate"
    db = config.service("db")
    assert (db.probe.kind, db.watchdog, db.port) == ("notify", 2.5, None)
    plain = config.service("plain")
    assert (plain.socket, plain.strategy, plain.watchdog) == (False, "rolling", 0.0)


def test_a_shared_port_is_still_unique_across_services(tmp_path: Path) -> None:
    assert _problems(
        tmp_path,
        {
            "web": {"command": ["w"], "port": 6000, "socket": True, "replicas": 2},
            "api": {"command": ["a"], "port": 6000},
        },
    ) == ["c.toml: services.api.port: port 6000 is already used by service web-1"]


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"probe": "none", "socket": True}, "services.s.socket: needs a port"),
        ({"port": 6000, "strategy": "recreate"}, "services.s.strategy: goes with socket = true"),
        (
            {"port": 6000, "socket": True, "strategy": "blue-green"},
            "services.s.strategy: Input should be 'rolling' or 'recreate'",
        ),
        ({"port": 6000, "watchdog": 5}, 'services.s.watchdog: goes with probe = "notify" only'),
        (
            {"probe": "notify", "watchdog": -1},
            "services.s.watchdog: Input should be greater than or equal to 0",
        ),
        ({"probe": "notifyy"}, "services.s.probe: unknown probe 'notifyy'"),
    ],
)
def test_bad_socket_settings_name_the_key(
    tmp_path: Path, table: dict[str, object], problem: str
) -> None:
    (line,) = _problems(tmp_path, {"s": {"command": ["s"], **table}})
    assert line.startswith(f"c.toml: {problem}"), line
