"""Schedules and hooks in the config: parsing, next times, resolution, and the errors."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from hearthlink_trio.config import load_config
from hearthlink_trio.config.schedule import parse_schedule
from hearthlink_trio.errors import ConfigError
from tests.stack import write_config


def local(*parts: int) -> float:
    return datetime(*parts).timestamp()  # type: ignore[arg-type]


def test_cron_next_times_are_local_and_strictly_after() -> None:
    five = parse_schedule("*/5 * * * *")
    assert five.next_after(local(2026, 3, 1, 0, 0)) == local(2026, 3, 1, 0, 5)
    assert five.next_after(local(2026, 3, 1, 0, 4, 59)) == local(2026, 3, 1, 0, 5)
    daily = parse_schedule("30 2 * * *")
    assert daily.next_after(local(2026, 3, 1, 2, 31)) == local(2026, 3, 2, 2, 30)


def test_every_counts_whole_multiples_from_the_epoch() -> None:
    every = parse_schedule("every 300")
    assert every.every == 300
    assert every.next_after(1_000_000_000.0) == 1_000_000_200.0
    assert every.next_after(1_000_000_200.0) == 1_000_000_500.0
    assert parse_schedule("every 0.5").next_after(10.2) == 10.5


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("every 0", "above 0"),
        ("every -3", "above 0"),
        ("every soon", "number of seconds"),
        ("every", "every N"),
        ("61 * * * *", "invalid cron expression"),
        ("* * * *", "not a 5-field cron expression"),
        ("0 0 * * * *", "not a 5-field cron expression"),
        ("@hourly", "not a 5-field cron expression"),
    ],
)
def test_bad_schedules_say_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_schedule(text)


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    return info.value.problems


def task(**more: object) -> dict[str, object]:
    return {"command": ["true"], "kind": "task", **more}


def test_schedules_and_hooks_resolve_with_placeholders(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.toml",
        {
            "supervisor": {"data_dir": "state", "hook_timeout": 3},
            "services.backup": task(schedule="*/5 * * * *", on_failure=["notify", "{name}"]),
            "services.web": {
                "command": ["web"],
                "port": 9100,
                "replicas": 2,
                "post_start": ["warm", "{host}:{port}", "{replica}"],
                "pre_stop": ["drain", "{name}"],
                "hook_timeout": 0.5,
            },
        },
    )
    config = load_config(path, environ={})
    backup = config.service("backup")
    assert backup.schedule == "*/5 * * * *"
    assert backup.on_failure == ("notify", "backup")
    assert backup.post_start == () and backup.pre_stop == ()
    assert backup.hook_timeout == 3
    web2 = config.service("web-2")
    assert web2.post_start == ("warm", "127.0.0.1:9101", "2")
    assert web2.pre_stop == ("drain", "web-2")
    assert web2.hook_timeout == 0.5


def test_schedule_and_hook_mistakes_name_the_key(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.toml",
        {
            "services.svc": {"command": ["x"], "port": 9100, "schedule": "every 60"},
            "services.zero": task(schedule="every 0"),
            "services.bad": task(schedule="*/5 * * *"),
            "services.many": task(schedule="every 60", replicas=2),
            "services.hook": task(pre_stop=["", "x"]),
        },
    )
    found = problems(path)
    assert "c.toml: services.svc.schedule: only a task can have a schedule" in found[0]
    assert any(p.startswith("c.toml: services.zero.schedule: ") and "above 0" in p for p in found)
    assert any(p.startswith("c.toml: services.bad.schedule: ") and "5-field" in p for p in found)
    assert "c.toml: services.many.schedule: a scheduled task runs as one process" in " ".join(found)
    assert "c.toml: services.hook.pre_stop: the program (first item) must not be empty" in found
    assert len(found) == 5


def test_hook_timeout_must_be_positive(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.toml",
        {"supervisor": {"hook_timeout": 0}, "services.t": task(hook_timeout=-1)},
    )
    found = problems(path)
    assert any(p.startswith("c.toml: supervisor.hook_timeout: ") for p in found), found
    assert any(p.startswith("c.toml: services.t.hook_timeout: ") for p in found), found


def test_the_cron_parser_is_loaded_only_for_a_cron_schedule(tmp_path: Path) -> None:
    every = write_config(tmp_path / "every.toml", {"services.t": task(schedule="every 5")})
    cron = write_config(tmp_path / "cron.toml", {"services.t": task(schedule="0 * * * *")})
    check = (
        "import sys; from hearthlink_trio.config.load import load_config; "
        "load_config(__import__('pathlib').Path(sys.argv[1]), {}); "
        "print('cronsim' in sys.modules, 'trio' in sys.modules)"
    )
    for path, expected in ((every, "False False"), (cron, "True False")):
        out = subprocess.run(
            [sys.executable, "-c", check, str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert out.stdout.strip() == expected


def test_a_cached_config_with_a_cron_schedule_loads_no_parser(tmp_path: Path) -> None:
    # What `status` and the other clients do once `run` has loaded the file: a cache hit.
    cron = write_config(tmp_path / "cron.toml", {"services.t": task(schedule="0 * * * *")})
    check = (
        "import sys; from pathlib import Path;"
        "from hearthlink_trio.config.cache import load_config_cached;"
        "config = load_config_cached(Path(sys.argv[1]));"
        "print(config.services[0].schedule, 'cronsim' in sys.modules)"
    )
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    outputs = [
        subprocess.run(
            [sys.executable, "-c", check, str(cron)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env=env,
        ).stdout.strip()
        for _ in range(2)
    ]
    assert outputs == ["0 * * * * True", "0 * * * * False"]
