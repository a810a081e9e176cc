"""``hearthlink import``: Procfiles, compose files and process-compose files as configs.

Pure: the example files of tests/fixtures/import (each tool's format, every mapped key)
are imported in-process and compared with the golden configs of tests/unit/golden/import
(``UPDATE_GOLDEN=1`` rewrites them; review the diff). That the outputs pass
``hearthlink check`` is proved by tests/e2e/test_import.py, with the real command.
"""

from __future__ import annotations

import os
import shutil
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hearthlink_trio import __version__
from hearthlink_trio.cli.app import app
from hearthlink_trio.cli.importing import import_config, write_new
from hearthlink_trio.cli.importing.common import (
    MAX_SOURCE_BYTES,
    parse_duration,
    signal_name,
    split_command,
)
from hearthlink_trio.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "import"
GOLDEN = Path(__file__).resolve().parent / "golden" / "import"
SOURCES = {
    "procfile": ["Procfile", ".env"],
    "compose": ["compose.yaml", "shop.env"],
    "process-compose": ["process-compose.yaml"],
}


def project(tmp_path: Path, source: str) -> Path:
    """The example files of ``source`` copied to ``tmp_path``; the main file's path."""
    for name in SOURCES[source]:
        shutil.copy(FIXTURES / name, tmp_path / name)
    return tmp_path / SOURCES[source][0]


def imported(source: str, text: str, tmp_path: Path, name: str = "") -> str:
    path = tmp_path / (name or SOURCES[source][0])
    path.write_text(text)
    return import_config(source, path, tmp_path)


def parsed(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


def refusal(source: str, text: str | bytes, tmp_path: Path, name: str = "in.yaml") -> list[str]:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError) as info:
        import_config(source, path, tmp_path)
    return info.value.problems


def cli(args: list[str]) -> int:
    result = app(args, result_action="return_value", exit_on_error=False)
    assert isinstance(result, int)
    return result


# --- golden outputs -------------------------------------------------------------------------


@pytest.mark.parametrize("source", list(SOURCES))
def test_example_file_matches_its_golden_config(source: str, tmp_path: Path) -> None:
    text = import_config(source, project(tmp_path, source), tmp_path)
    text = text.replace(f"hearthlink {__version__} ", "hearthlink VERSION ")
    golden = GOLDEN / f"{source}.toml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("source", list(SOURCES))
def test_every_not_imported_line_names_a_key_and_why(source: str, tmp_path: Path) -> None:
    text = import_config(source, project(tmp_path, source), tmp_path)
    notes = [line for line in text.splitlines() if line.startswith("# not imported")]
    assert notes
    for line in notes:
        key, sep, why = line.removeprefix("# not imported: ").partition(": ")
        assert sep and why.strip(), line
        assert " " not in key, line


# --- Procfile -------------------------------------------------------------------------------


def test_procfile_port_follows_honchos_convention(tmp_path: Path) -> None:
    text = "a: sleep 1\nb: prog --port $PORT\nc: prog --port=${PORT}\n"
    services = parsed(imported("procfile", text, tmp_path))["services"]
    assert "port" not in services["a"]
    # Like honcho: 5000 + 100 × the line's index among the processes.
    assert services["b"]["port"] == 5100
    assert services["b"]["command"] == ["prog", "--port", "{port}"]
    assert services["b"]["env"] == {"PORT": "{port}"}
    assert services["c"]["port"] == 5200
    assert services["c"]["command"] == ["prog", "--port={port}"]


@pytest.mark.parametrize(
    ("line", "argv"),
    [
        ("python -m app --name 'a b'", ["python", "-m", "app", "--name", "a b"]),
        ('python -c "print(1); print(2)"', ["python", "-c", "print(1); print(2)"]),
        ("echo 'a|b' \"c&d\"", ["echo", "a|b", "c&d"]),
        ("a && b", ["sh", "-c", "a && b"]),
        ("a | b", ["sh", "-c", "a | b"]),
        ("a > log", ["sh", "-c", "a > log"]),
        ("echo $HOME", ["sh", "-c", "echo $HOME"]),
        ('echo "$HOME"', ["sh", "-c", 'echo "$HOME"']),
        ("rm *.pyc", ["sh", "-c", "rm *.pyc"]),
        ("DEBUG=1 prog", ["sh", "-c", "DEBUG=1 prog"]),
        ("echo 'unclosed", ["sh", "-c", "echo 'unclosed"]),
    ],
)
def test_shell_syntax_runs_through_sh_and_plain_lines_run_directly(
    line: str, argv: list[str]
) -> None:
    assert split_command(line)[0] == argv


def test_procfile_env_beside_it_is_the_supervisors_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("A=1\n")
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "Procfile").write_text("web: sleep 5\n")
    config = parsed(import_config("procfile", tmp_path / "Procfile", out))
    # Relative to the folder the config is written to.
    assert config["supervisor"]["env_file"] == "../.env"


def test_procfile_refusals(tmp_path: Path) -> None:
    problems = refusal("procfile", "web: ok\nthis is not a process\n", tmp_path, "Procfile")
    assert problems == [
        f"{tmp_path / 'Procfile'}: line 2: not 'name: command': 'this is not a process'"
    ]
    problems = refusal("procfile", "Web: a\nweb: b\n", tmp_path, "Procfile")
    assert len(problems) == 1 and "would both be named 'web'" in problems[0]
    problems = refusal("procfile", "# only a comment\n", tmp_path, "Procfile")
    assert problems == [
        f"{tmp_path / 'Procfile'}: nothing to import: no service could be carried over"
    ]
    (tmp_path / ".env").write_text("not a dotenv line\n")
    problems = refusal("procfile", "web: a\n", tmp_path, "Procfile")
    assert len(problems) == 1 and "not NAME=value" in problems[0]


# --- compose --------------------------------------------------------------------------------


def test_compose_image_alone_is_refused_with_the_line_to_write(tmp_path: Path) -> None:
    text = (
        "services:\n  db: {image: 'postgres:16', ports: ['15432:5432']}\n"
        "  web: {command: [sleep, '5']}\n"
    )
    config = imported("compose", text, tmp_path)
    assert list(parsed(config)["services"]) == ["web"]
    line = next(line for line in config.splitlines() if "services.db" in line)
    assert line.startswith("# not imported: services.db: only an image (postgres:16)")
    assert (
        'command = ["docker", "run", "--rm", "--init", "--name", "db", "-p", '
        '"127.0.0.1:15432:5432", "postgres:16"]' in line
    )
    # Alone, it is nothing to import: exit 2, the reason named.
    problems = refusal("compose", "services:\n  db: {image: 'postgres:16'}\n", tmp_path)
    assert problems[0].endswith("nothing to import: no service could be carried over")
    assert "services.db: only an image (postgres:16)" in problems[1]


@pytest.mark.parametrize(
    ("test", "probe", "port"),
    [
        (["CMD", "pg_isready", "-p", "5432"], {"exec": ["pg_isready", "-p", "5432"]}, None),
        # "|| exit 1" changes no check's outcome: the program runs directly.
        (["CMD-SHELL", "pg_isready || exit 1"], {"exec": ["pg_isready"]}, None),
        (["CMD-SHELL", "pg_isready | cat"], {"exec": ["sh", "-c", "pg_isready | cat"]}, None),
        ("curl -f http://localhost:8080/healthz", {"http": "/healthz", "json": False}, 8080),
        (["CMD", "curl", "--fail", "http://127.0.0.1/"], {"http": "/", "json": False}, 80),
        (
            ["CMD-SHELL", "wget -qO- http://localhost:9000/ready?deep=1 || exit 1"],
            {"http": "/ready?deep=1", "json": False},
            9000,
        ),
        # Without -f curl passes on any status: kept as the command it is.
        ("curl http://localhost:8080/", {"exec": ["curl", "http://localhost:8080/"]}, None),
        # Another host is not this service: kept as a command.
        ("curl -f http://example.com/", {"exec": ["curl", "-f", "http://example.com/"]}, None),
        (["NONE"], "none", None),
        (["CMD", "echo", "$$HOME"], {"exec": ["echo", "$HOME"]}, None),
    ],
)
def test_compose_healthcheck_test_becomes_a_probe(
    test: Any, probe: Any, port: int | None, tmp_path: Path
) -> None:
    text = "services:\n  web:\n    command: [sleep, '5']\n    healthcheck: {test: TEST}\n"
    service = parsed(imported("compose", text.replace("TEST", repr(test)), tmp_path))["services"]
    assert service["web"]["probe"] == probe
    assert service["web"].get("port") == port


def test_compose_http_check_on_another_port_than_the_published_one_stays_a_command(
    tmp_path: Path,
) -> None:
    text = (
        "services:\n  web:\n    command: [nginx]\n    ports: ['8081:80']\n"
        "    healthcheck: {test: 'curl -f http://localhost:80/'}\n"
    )
    web = parsed(imported("compose", text, tmp_path))["services"]["web"]
    assert web["port"] == 8081
    assert web["probe"] == {"exec": ["sh", "-c", "curl -f http://localhost:80/"]}


def test_compose_dependencies_and_tasks(tmp_path: Path) -> None:
    text = """
services:
  migrate: {command: [python, -c, pass], restart: no}
  db: {command: [sleep, '9'], healthcheck: {test: [CMD, 'true']}}
  cache: {command: [sleep, '9']}
  web:
    command: [sleep, '9']
    depends_on:
      migrate: {condition: service_completed_successfully}
      db: {condition: service_healthy}
      cache: {condition: service_started}
  worker:
    command: [sleep, '9']
    depends_on: [db, ghost]
"""
    config = imported("compose", text, tmp_path)
    services = parsed(config)["services"]
    assert services["migrate"]["kind"] == "task"
    assert services["migrate"]["restart"] == "never"
    assert "probe" not in services["migrate"]
    assert services["web"]["depends_on"] == {
        "migrate": "completed",
        "db": "healthy",
        "cache": "started",
    }
    assert services["db"].get("kind") is None
    # The short form waits for the start only, as compose does.
    assert services["worker"]["depends_on"] == {"db": "started"}
    assert "# not imported: services.worker.depends_on.ghost: not a service of this file" in config


def test_compose_environment_list_and_map(tmp_path: Path) -> None:
    text = """
services:
  a:
    command: [sleep, '9']
    environment: [A=1, 'B=x=y', C, 'D=$$literal', 'E=${FROM_SHELL}']
  b:
    command: [sleep, '9']
    environment: {A: 1, B: true, C: null, HEARTHLINK_DATA_DIR: /data}
"""
    config = imported("compose", text, tmp_path)
    services = parsed(config)["services"]
    assert services["a"]["env"] == {"A": "1", "B": "x=y", "D": "$literal"}
    assert services["b"]["env"] == {"A": "1", "B": "true"}
    assert "services.a.environment.C: no value" in config
    assert "services.a.environment.E: uses compose's ${VARIABLE} substitution" in config
    assert "services.b.environment.HEARTHLINK_DATA_DIR: set by hearthlink itself" in config


def test_compose_health_numbers_go_to_the_health_table_once(tmp_path: Path) -> None:
    text = """
services:
  a: {command: [sleep, '9'], healthcheck: {test: [CMD, 'true'], interval: 1m30s, retries: 2}}
  b: {command: [sleep, '9'], healthcheck: {test: [CMD, 'true'], interval: 5s, timeout: 100ms}}
"""
    config = imported("compose", text, tmp_path)
    assert parsed(config)["health"] == {
        "steady_interval": 90.0,
        "failure_threshold": 2,
        "timeout": 0.1,
    }
    assert (
        "# not imported: services.b.healthcheck.interval: 5.0 differs from the [health] "
        "steady_interval = 90.0 already taken from another service" in config
    )


def test_compose_replicas_get_a_port_each(tmp_path: Path) -> None:
    text = """
services:
  web:
    command: [serve, --port, '7000', --bind, '127.0.0.1:7000', --other, '70000']
    ports: ['7000:7000']
    deploy: {replicas: 3}
"""
    web = parsed(imported("compose", text, tmp_path))["services"]["web"]
    assert web["replicas"] == 3
    assert web["port"] == 7000
    assert web["command"] == [
        "serve",
        "--port",
        "{port}",
        "--bind",
        "127.0.0.1:{port}",
        "--other",
        "70000",
    ]


def test_compose_memory_limits_become_max_memory(tmp_path: Path) -> None:
    text = """
services:
  a: {command: [sleep, '9'], mem_limit: 512m}
  b: {command: [sleep, '9'], deploy: {resources: {limits: {memory: 1gb, cpus: '0.5'}}}}
  c: {command: [sleep, '9'], mem_limit: 1048576}
  d: {command: [sleep, '9'], mem_limit: lots}
"""
    config = imported("compose", text, tmp_path)
    services = parsed(config)["services"]
    assert services["a"]["max_memory"] == "512M"
    assert services["b"]["max_memory"] == "1G"
    assert services["c"]["max_memory"] == "1048576"
    assert "max_memory" not in services["d"]
    assert (
        "# not imported: services.b.deploy.resources.limits.cpus: hearthlink limits memory only"
        in config
    )
    assert "# not imported: services.d.mem_limit: 'lots' is not a size hearthlink reads" in config


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1, 2]\n", "the top level must be a mapping (got a list)"),
        ("", "the top level must be a mapping (got an empty file)"),
        ("services: [\n", "line 2: not valid YAML"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "not valid YAML: maximum recursion depth"),
        ("version: '3'\n", "services: no services to import"),
        ("services: {}\n", "services: no services to import"),
        ("services:\n  Web: {command: [a]}\n  web: {command: [b]}\n", "would both be named 'web'"),
        ("services:\n  web: {command: {a: 1}}\n", "services.web.command: neither a string"),
        ("services:\n  web: {build: .}\n", "services.web: no command to run"),
    ],
)
def test_compose_bad_file_is_one_line_per_problem(text: str, problem: str, tmp_path: Path) -> None:
    problems = refusal("compose", text, tmp_path)
    assert any(problem in line for line in problems), problems
    assert all(line.startswith(str(tmp_path)) and "\n" not in line for line in problems)


def test_binary_huge_and_exploding_files_are_refused(tmp_path: Path) -> None:
    assert refusal("compose", b"\x7fELF\x00\x01\x02", tmp_path) == [
        f"{tmp_path / 'in.yaml'}: a binary file, not a config"
    ]
    assert refusal("compose", b"services: \xff\xfe\n", tmp_path) == [
        f"{tmp_path / 'in.yaml'}: not UTF-8 text"
    ]
    huge = "x: " + "a" * MAX_SOURCE_BYTES + "\n"
    assert refusal("process-compose", huge, tmp_path) == [
        f"{tmp_path / 'in.yaml'}: larger than 1 MiB; not a config this import reads"
    ]
    # A few hundred bytes whose anchors nest nine deep: a billion values once expanded.
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 9)]
    problems = refusal("compose", "\n".join(lines) + "\n", tmp_path)
    assert problems == [
        f"{tmp_path / 'in.yaml'}: expands to more than 100000 values (nested anchors?); "
        "not a config this import reads"
    ]
    with pytest.raises(ConfigError) as info:
        import_config("compose", tmp_path / "nope.yaml", tmp_path)
    assert info.value.problems == [f"{tmp_path / 'nope.yaml'}: file not found"]
    # A FIFO is refused unread (reading it would wait for a writer forever), as a folder.
    os.mkfifo(tmp_path / "fifo.yaml")
    for path in (tmp_path / "fifo.yaml", tmp_path):
        with pytest.raises(ConfigError) as info:
            import_config("compose", path, tmp_path)
        assert info.value.problems == [
            f"{path}: not a regular file; not a config this import reads"
        ]


def test_yaml_never_builds_objects(tmp_path: Path) -> None:
    problems = refusal("compose", "services: !!python/object/apply:os.system ['true']\n", tmp_path)
    assert "not valid YAML" in problems[0]


# --- process-compose ------------------------------------------------------------------------


def test_process_compose_daemon_is_refused_with_why(tmp_path: Path) -> None:
    text = "processes:\n  d: {command: 'food --fork', is_daemon: true}\n  w: {command: sleep 9}\n"
    config = imported("process-compose", text, tmp_path)
    assert list(parsed(config)["services"]) == ["w"]
    assert "# not imported: services.d: is_daemon: a daemon forks into the background" in config
    problems = refusal(
        "process-compose", "processes:\n  d: {command: x, is_daemon: true}\n", tmp_path
    )
    assert "services.d: is_daemon: a daemon forks" in problems[1]


def test_process_compose_availability_and_shutdown(tmp_path: Path) -> None:
    text = """
processes:
  a:
    command: sleep 9
    availability: {restart: exit_on_failure, backoff_seconds: 0.5, max_restarts: 2}
    shutdown: {signal: 15, timeout_seconds: 3}
  b:
    command: sleep 9
    availability: {restart: no}
    shutdown: {signal: SIGQUIT}
"""
    config = parsed(imported("process-compose", text, tmp_path))
    assert config["restart"] == {"initial_backoff": 0.5, "max_attempts": 2}
    a, b = config["services"]["a"], config["services"]["b"]
    assert (a["restart"], a["critical"], a["stop_signal"], a["stop_timeout"]) == (
        "never",
        True,
        "SIGTERM",
        3.0,
    )
    assert (b["restart"], b["stop_signal"]) == ("never", "SIGQUIT")


def test_namespaces_profiles_and_disabled(tmp_path: Path) -> None:
    text = """
processes:
  a: {command: sleep 9, namespace: default}
  b: {command: sleep 9, namespace: tools}
  c: {command: sleep 9, namespace: 'bad name'}
  d: {command: sleep 9, disabled: true}
"""
    config = imported("process-compose", text, tmp_path)
    services = parsed(config)["services"]
    assert "profiles" not in services["a"]  # "default" is every process's namespace
    assert services["b"]["profiles"] == ["tools"]
    assert "profiles" not in services["c"]
    assert "# not imported: services.c.namespace: 'bad name' is not a profile name" in config
    assert services["d"]["enabled"] is False
    compose = "services:\n  w: {command: [sleep, '9'], profiles: [debug, 'no way']}\n"
    config = imported("compose", compose, tmp_path)
    assert parsed(config)["services"]["w"]["profiles"] == ["debug"]
    assert "# not imported: services.w.profiles: 'no way' is not a profile name" in config


def test_process_compose_bad_files(tmp_path: Path) -> None:
    assert refusal("process-compose", "version: '0.5'\n", tmp_path)[0].endswith(
        "processes: no processes to import"
    )
    assert "(got a str)" in refusal("process-compose", "just text\n", tmp_path)[0]


# --- small parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("100ms", 0.1), ("1h", 3600.0), (5, 5.0), ("2.5s", 2.5)],
)
def test_durations(value: Any, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "10", "s", "10x", "-1s", True, None, "1s 2s"])
def test_bad_durations(value: Any) -> None:
    assert parse_duration(value) is None


def test_signal_names() -> None:
    assert signal_name(2) == "SIGINT"
    assert signal_name("term") == "SIGTERM"
    assert signal_name("SIGHUP") == "SIGHUP"
    assert signal_name("nope") is None
    assert signal_name(999) is None


# --- writing the output ---------------------------------------------------------------------


def test_write_new_never_replaces_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "hearthlink.toml"
    assert write_new("first\n", out, force=False) == 0
    assert out.read_text() == "first\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert write_new("second\n", out, force=False) == 1
    assert out.read_text() == "first\n"
    assert capsys.readouterr().err.strip() == f"{out} exists: give --force to replace it"
    assert write_new("third\n", out, force=True) == 0
    assert out.read_text() == "third\n"
    # No temporary file is left behind, either way.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hearthlink.toml"]


def test_write_new_into_a_missing_folder_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert write_new("x\n", tmp_path / "no" / "such.toml", force=False) == 1
    assert capsys.readouterr().err.startswith(f"Cannot write {tmp_path / 'no' / 'such.toml'}")


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = project(tmp_path, "procfile")
    out = tmp_path / "out.toml"
    assert cli(["import", "procfile", str(source), "-o", str(out)]) == 0
    assert parsed(out.read_text())["services"]
    assert cli(["import", "procfile", str(source), "-o", str(out)]) == 1
    assert cli(["import", "procfile", str(source), "-o", str(out), "--force"]) == 0
    capsys.readouterr()
    assert cli(["import", "compose", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == f"{tmp_path / 'nope.yaml'}: file not found\n"
    assert cli(["import", "procfile", str(source)]) == 0
    assert capsys.readouterr().out.startswith("# Imported by hearthlink")
