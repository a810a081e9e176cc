"""``max_memory``: its forms, its errors (file and key named), its resolved bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearthlink_trio.config import load_config
from hearthlink_trio.config.model import parse_memory
from hearthlink_trio.errors import ConfigError
from hearthlink_trio.supervisor.memory import over_limit_reason
from tests.stack import write_config

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("512M", 512 * MIB),
        ("512m", 512 * MIB),
        (" 64 K ", 64 * 1024),
        ("1.5G", 1536 * MIB),
        ("2g", 2 * 1024 * MIB),
        ("1048576", MIB),
        (1048576, MIB),
        ("", None),
    ],
)
def test_sizes(value: object, expected: int | None) -> None:
    assert parse_memory(value) == expected


def _config(tmp_path: Path, value: object) -> Path:
    return write_config(
        tmp_path / "c.toml",
        {
            "supervisor": {"data_dir": str(tmp_path / "d")},
            "services.web": {"command": ["w"], "probe": "none", "max_memory": value},
            "services.other": {"command": ["o"], "probe": "none"},
        },
    )


def test_resolved_in_bytes_and_none_without_a_limit(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "512M"), environ={})
    assert config.service("web").max_memory == 512 * MIB
    assert config.service("other").max_memory is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("512X", "'512X' is not a size: give a number with K, M or G (\"512M\"), or bytes"),
        ("lots", "'lots' is not a size"),
        ("-1M", "'-1M' is not a size"),
        (0, "must be more than 0 bytes"),
        ("0M", "must be more than 0 bytes"),
        (True, 'give a size such as "512M" (K, M or G), or a number of bytes'),
        (1.5, 'give a size such as "512M"'),
    ],
)
def test_bad_sizes_name_file_and_key(tmp_path: Path, value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, value), environ={})
    assert len(caught.value.problems) == 1
    line = caught.value.problems[0]
    assert line.startswith("c.toml: services.web.max_memory: "), line
    assert problem in line


def test_the_reason_in_mib() -> None:
    assert over_limit_reason(530 * MIB, 512 * MIB) == "memory 530 MiB over max_memory 512 MiB"
    assert over_limit_reason(int(2.5 * MIB), 2 * MIB) == "memory 2.5 MiB over max_memory 2.0 MiB"
    assert over_limit_reason(3000, 1000) == "memory 2.9 KiB over max_memory 1000 B"


def test_the_limit_survives_the_config_cache(tmp_path: Path) -> None:
    from hearthlink_trio.config.cache import load_cached, load_config_cached

    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    path = _config(tmp_path, "1.5G")
    first = load_config_cached(path, environ)
    cached = load_cached(path, environ)
    assert cached == first
    assert cached is not None
    assert cached.service("web").max_memory == 1536 * MIB
