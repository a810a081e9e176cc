"""Config validation: defaults, resolution, and one line per problem, exit 2."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from hearthlink_trio.config import config_path, default_config_path, load_config
from hearthlink_trio.errors import ConfigError
from tests.stack import TESTSVC, run_command, write_config


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    return info.value.problems


def test_defaults_and_resolution(tmp_path: Path) -> None:
    (tmp_path / "svc.py").write_text("")
    path = write_config(
        tmp_path / "c.toml",
        {
            "supervisor": {"data_dir": "state"},
            "services.web": {"script": "svc.py", "port": 9001},
            "services.api": {
                "command": ["{python}", "-m", "x", "--port", "{port}", "--name", "{name}"],
                "port": 9002,
                "depends_on": ["web"],
                "stop_signal": "INT",
            },
        },
    )
    config = load_config(path, environ={})
    assert config.data_dir == tmp_path / "state"
    assert config.log_dir == tmp_path / "state" / "logs"
    assert config.control_socket == tmp_path / "state" / "run" / "hearthlink.sock"
    assert config.health.startup_interval == 5.0
    assert config.health.startup_period == 60.0
    assert config.health.steady_interval == 30.0
    assert config.health.timeout == 5.0
    assert config.health.failure_threshold == 3
    assert config.restart.max_attempts == 5
    assert config.restart.initial_backoff == 1.0
    assert config.restart.max_backoff == 30.0
    assert config.restart.stable_after == 10.0
    web, api = config.service("web"), config.service("api")
    assert web.argv[1:] == (str(tmp_path / "svc.py"), "--host", "127.0.0.1", "--port", "9001")
    assert web.health_url == "http://127.0.0.1:9001/health"
    assert web.stop_timeout == 10.0 and web.stop_signal is signal.SIGTERM
    assert web.cwd == tmp_path
    assert api.argv[1:] == ("-m", "x", "--port", "9002", "--name", "api")
    assert api.stop_signal is signal.SIGINT
    assert config.names == ("web", "api")


def test_data_dir_env_overrides(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", {"services.a": {"command": ["true"], "port": 9}})
    config = load_config(path, environ={"HEARTHLINK_DATA_DIR": str(tmp_path / "elsewhere")})
    assert config.data_dir == tmp_path / "elsewhere"


def test_services_are_ordered_dependencies_first(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.toml",
        {
            "services.c": {"command": ["true"], "port": 3, "depends_on": ["b"]},
            "services.b": {"command": ["true"], "port": 2, "depends_on": ["a"]},
            "services.a": {"command": ["true"], "port": 1},
        },
    )
    assert load_config(path, environ={}).names == ("a", "b", "c")


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ({"command": ["true"]}, "c.toml: services.a.port: field required"),
        (
            {"command": ["true"], "port": 1, "colour": "red"},
            "c.toml: services.a.colour: unknown key",
        ),
        (
            {"command": ["true"], "port": "eighty"},
            "c.toml: services.a.port: Input should be a valid integer",
        ),
        (
            {"command": ["true"], "port": 70000},
            "c.toml: services.a.port: Input should be less than",
        ),
        ({"port": 1}, "c.toml: services.a: give exactly one of 'script' or 'command'"),
        (
            {"command": ["true"], "port": 1, "stop_signal": "SIGNOPE"},
            "services.a.stop_signal: unknown signal",
        ),
        ({"script": "missing.py", "port": 1}, "c.toml: services.a.script: file not found"),
        (
            {"command": ["true"], "port": 1, "host": "0.0.0.0"},
            "services.a.host: '0.0.0.0' is not a loopback",
        ),
        (
            {"command": ["true"], "port": 1, "depends_on": ["ghost"]},
            "services.a.depends_on: unknown service 'ghost'",
        ),
    ],
)
def test_each_bad_config_names_file_and_key(
    tmp_path: Path, service: dict[str, object], expected: str
) -> None:
    path = write_config(tmp_path / "c.toml", {"services.a": service})
    found = problems(path)
    assert len(found) == 1, found
    assert expected in found[0], found


def test_duplicate_ports_cycles_and_several_problems_at_once(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.toml",
        {
            "health": {"timeout": -1},
            "services.a": {"command": ["true"], "port": 5, "depends_on": ["b"]},
            "services.b": {"command": ["true"], "port": 5, "depends_on": ["a"]},
        },
    )
    assert problems(path) == ["c.toml: health.timeout: Input should be greater than 0"]
    path = write_config(
        tmp_path / "c.toml",
        {
            "services.a": {"command": ["true"], "port": 5, "depends_on": ["b"]},
            "services.b": {"command": ["true"], "port": 5, "depends_on": ["a"]},
            "services.Bad": {"command": ["true"], "port": 6},
        },
    )
    found = problems(path)
    assert "c.toml: services.b.port: port 5 is already used by service a" in found
    assert any("dependency cycle: a -> b -> a" in line for line in found)
    assert any(line.startswith("c.toml: services.Bad: invalid service name") for line in found)


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[services.a\nport = 1\n")
    assert problems(bad)[0].startswith("c.toml: TOML syntax error")
    assert "file not found" in problems(tmp_path / "absent.toml")[0]


def test_config_lookup_order(tmp_path: Path) -> None:
    explicit = tmp_path / "x.toml"
    assert config_path(explicit, {"HEARTHLINK_CONFIG": "/y.toml"}) == explicit
    assert config_path(None, {"HEARTHLINK_CONFIG": "/y.toml"}) == Path("/y.toml")
    assert config_path(None, {}) == default_config_path()


def test_bad_config_exits_2_and_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pids"
    marker.mkdir()
    path = write_config(
        tmp_path / "c.toml",
        {
            "supervisor": {"data_dir": str(tmp_path / "data")},
            "services.good": {
                "script": str(TESTSVC),
                "port": 1,
                "env": {"TESTSVC_PIDDIR": str(marker)},
            },
            "services.bad": {"script": str(TESTSVC), "port": 1},
        },
    )
    for command in ("run", "check"):
        result = run_command(command, "--config", str(path), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "c.toml: services.bad.port: port 1 is already used by service good" in result.stderr
    assert list(marker.iterdir()) == []


def test_bad_config_with_json_log_format_is_one_json_object_a_line(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", {"services.a": {"command": ["true"]}})
    result = run_command("run", "--config", str(path), "--log-format", "json", cwd=tmp_path)
    assert result.returncode == 2
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert [e["message"] for e in events] == ["c.toml: services.a.port: field required"]
    assert events[0]["level"] == "error"


def _load(tmp_path: Path, services: dict[str, dict[str, object]], **top: dict[str, object]):
    sections: dict[str, dict[str, object]] = {"supervisor": {"data_dir": str(tmp_path / "d")}}
    sections.update(top)
    sections.update({f"services.{name}": table for name, table in services.items()})
    return load_config(write_config(tmp_path / "c.toml", sections), environ={})


def _problems(tmp_path: Path, services: dict[str, dict[str, object]], **top: dict[str, object]):
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, services, **top)
    return caught.value.problems


def test_a_port_is_needed_only_where_something_uses_it(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        {
            "worker": {"command": ["w"], "probe": {"log": "ready"}},
            "job": {"command": ["j"], "kind": "task"},
            "quiet": {"command": ["q"], "probe": "none"},
        },
    )
    assert [s.port for s in config.services] == [None, None, None]
    assert config.service("job").probe.kind == "none"
    assert config.service("job").restart == "on-failure"
    assert _problems(tmp_path, {"db": {"command": ["db"], "probe": {"tcp": True}}}) == [
        "c.toml: services.db.port: field required (the tcp probe connects to it)"
    ]
    assert _problems(tmp_path, {"x": {"command": ["x", "{port}"], "probe": "none"}}) == [
        "c.toml: services.x.port: field required ({port} is used)"
    ]


def test_probe_tables_and_their_mistakes(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        {
            "web": {
                "command": ["w"],
                "port": 5000,
                "probe": {"http": "/up", "status": 204, "json": False},
            },
            "pg": {
                "command": ["pg"],
                "port": 5001,
                "probe": {"exec": ["pg_isready", "-p", "{port}"]},
            },
        },
    )
    web, pg = config.service("web"), config.service("pg")
    assert (web.probe.kind, web.probe.status, web.probe.json) == ("http", 204, False)
    assert web.health_url == "http://127.0.0.1:5000/up"
    assert pg.probe.argv == ("pg_isready", "-p", "5001")
    assert pg.health_url is None
    problems = _problems(
        tmp_path,
        {
            "a": {"command": ["a"], "port": 1, "probe": {"tcp": True, "log": "x"}},
            "b": {"command": ["b"], "probe": {"log": "("}},
            "c": {"command": ["c"], "port": 3, "probe": "ping"},
        },
    )
    assert (
        problems[0]
        == "c.toml: services.a.probe: give exactly one of http, tcp, exec or log (got tcp, log)"
    )
    assert problems[1].startswith(
        "c.toml: services.b.probe: the log probe's pattern is not a regular expression"
    )
    assert problems[2].startswith("c.toml: services.c.probe: unknown probe 'ping'")
    task = {"command": ["d"], "kind": "task", "probe": {"tcp": True}, "port": 4}
    assert _problems(tmp_path, {"d": task}) == [
        "c.toml: services.d.probe: a task is not probed (it is done when it exits 0)"
    ]


def test_dependency_conditions_and_their_mistakes(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        {
            "db": {"command": ["db"], "port": 1},
            "migrate": {"command": ["m"], "kind": "task", "depends_on": ["db"]},
            "app": {
                "command": ["a"],
                "port": 2,
                "depends_on": {"migrate": "completed", "db": "started"},
            },
        },
    )
    assert config.names == ("db", "migrate", "app")
    assert dict(config.service("app").conditions) == {"migrate": "completed", "db": "started"}
    assert dict(config.service("migrate").conditions) == {"db": "healthy"}
    problems = _problems(
        tmp_path,
        {
            "db": {"command": ["db"], "port": 1},
            "app": {"command": ["a"], "port": 2, "depends_on": {"db": "completed"}},
            "web": {"command": ["w"], "port": 3, "depends_on": {"db": "ready"}},
        },
    )
    assert problems == [
        "c.toml: services.web.depends_on.db: Input should be 'started', 'healthy' or 'completed'"
    ]
    problems = _problems(
        tmp_path,
        {
            "db": {"command": ["db"], "port": 1},
            "app": {"command": ["a"], "port": 2, "depends_on": {"db": "completed"}},
        },
    )
    assert problems == [
        "c.toml: services.app.depends_on.db: 'completed' needs a task "
        "(db is a service that keeps running)"
    ]


def test_replicas_expand_with_ports_names_and_dependencies(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        {
            "web": {"command": ["w", "{port}", "{replica}", "{name}"], "port": 6000, "replicas": 3},
            "lb": {"command": ["lb"], "port": 6100, "depends_on": ["web"]},
        },
    )
    assert config.names == ("web-1", "web-2", "web-3", "lb")
    assert config.service("web-3").argv == ("w", "6002", "3", "web-3")
    assert [s.group for s in config.group("web")] == ["web", "web", "web"]
    assert config.service("lb").depends_on == ("web-1", "web-2", "web-3")
    assert _problems(
        tmp_path,
        {
            "web": {"command": ["w"], "port": 6000, "replicas": 2},
            "api": {"command": ["a"], "port": 6001},
        },
    ) == ["c.toml: services.api.port: port 6001 is already used by service web-2"]


def test_env_files_are_read_and_their_errors_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "ok.env").write_text("# comment\nA=1\nexport B='two words'\nC=${A}x\n")
    config = _load(tmp_path, {"s": {"command": ["s"], "port": 1, "env_file": "ok.env"}})
    assert dict(config.service("s").file_env) == {"A": "1", "B": "two words", "C": "1x"}
    (tmp_path / "bad.env").write_text("A=1\nthis is not an assignment\n")
    problems = _problems(tmp_path, {"s": {"command": ["s"], "port": 1, "env_file": "bad.env"}})
    assert problems == [
        f"c.toml: services.s.env_file: {tmp_path / 'bad.env'}: line 2: not NAME=value: "
        "'this is not an assignment'"
    ]
    problems = _problems(
        tmp_path,
        {"s": {"command": ["s"], "port": 1}},
        supervisor={"data_dir": "d", "env_file": "none.env"},
    )
    assert problems == [f"c.toml: supervisor.env_file: {tmp_path / 'none.env'}: file not found"]


def test_user_must_exist_and_needs_root(tmp_path: Path) -> None:
    problems = _problems(tmp_path, {"s": {"command": ["s"], "port": 1, "user": "no-such-user-x"}})
    assert problems == ["c.toml: services.s.user: unknown user 'no-such-user-x'"]
    if os.geteuid() == 0:
        config = _load(tmp_path, {"s": {"command": ["s"], "port": 1, "user": "nobody"}})
        assert config.service("s").user == "nobody"
    else:
        problems = _problems(tmp_path, {"s": {"command": ["s"], "port": 1, "user": "nobody"}})
        assert problems == [
            "c.toml: services.s.user: running it as nobody needs hearthlink to run as root"
        ]


def test_user_is_refused_when_not_root(tmp_path: Path) -> None:
    from hearthlink_trio.config.model import ServiceSection
    from hearthlink_trio.config.services import Where, resolve_services

    where = Where("c.toml", tmp_path, sys.executable, tmp_path, 10.0, {}, local=True, euid=1000)
    table = ServiceSection.model_validate({"command": ["s"], "port": 1, "user": "root"})
    services, problems = resolve_services({"s": table}, where)
    assert services == []
    assert problems == [
        "c.toml: services.s.user: running it as root needs hearthlink to run as root"
    ]
