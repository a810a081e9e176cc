"""``hearthlink import`` with the real command: its outputs pass ``hearthlink check``, and a
compose file imported then exported again keeps its services, commands, dependencies and
health checks.

The example files of tests/fixtures/import are used with their ports replaced by free
ones and their folders by real ones (``check`` tries both); the Procfile's ports, honcho's
convention (5000, 5100), are moved to free ones by an override file.
"""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from hearthlink_trio.cli.importing.common import parse_duration
from tests.helpers import free_port
from tests.stack import run_command
from tests.unit.test_export import validate_compose

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "import"
FILES = {
    "procfile": ["Procfile", ".env"],
    "compose": ["compose.yaml", "shop.env"],
    "process-compose": ["process-compose.yaml"],
}
#: The fixed ports of the example files, each replaced by a free one.
FIXTURE_PORTS = re.compile(r"\b(16379|18080|18090|18123)\b")


def example(tmp_path: Path, source: str) -> Path:
    """The example files of ``source`` in ``tmp_path``, with free ports and real folders."""
    ports: dict[str, str] = {}
    for name in FILES[source]:
        text = (FIXTURES / name).read_text()
        text = FIXTURE_PORTS.sub(lambda m: ports.setdefault(m[1], str(free_port())), text)
        text = text.replace("/srv/shop", str(tmp_path))
        (tmp_path / name).write_text(text)
    if source == "compose":
        # web has two replicas: the second takes the next port, which must be free too.
        text = (tmp_path / "compose.yaml").read_text()
        web = int(ports["18080"])
        while not _free(web + 1):
            web = free_port()
        (tmp_path / "compose.yaml").write_text(text.replace(ports["18080"], str(web)))
    return tmp_path / FILES[source][0]


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def env(tmp_path: Path) -> dict[str, str]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return {"HEARTHLINK_DATA_DIR": str(data)}


@pytest.mark.parametrize("source", list(FILES))
def test_imported_example_passes_check(source: str, tmp_path: Path) -> None:
    path = example(tmp_path, source)
    out = tmp_path / "conf" / "hearthlink.toml"
    out.parent.mkdir()
    done = run_command("import", source, str(path), "-o", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    notes = out.read_text().count("# not imported: ")
    assert notes > 0
    assert done.stdout == (
        f"{out}: written; {notes} thing(s) not imported, each named in a comment\n"
        f"Next: hearthlink check --config {out}\n"
    )
    configs = ["--config", str(out)]
    if source == "procfile":
        # The import gives honcho's ports (5000, 5100); checked here on free ones, set by an
        # override file as a user would.
        override = tmp_path / "ports.toml"
        override.write_text(
            f"[services.web]\nport = {free_port()}\n[services.api]\nport = {free_port()}\n"
        )
        configs += ["--config", str(override)]
    check = run_command("check", *configs, cwd=tmp_path, env=env(tmp_path))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{out}: OK" in check.stdout


def test_import_refuses_to_replace_a_file_without_force(tmp_path: Path) -> None:
    path = example(tmp_path, "procfile")
    out = tmp_path / "hearthlink.toml"
    out.write_text("# mine\n")
    done = run_command("import", "procfile", str(path), "-o", str(out), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == f"{out} exists: give --force to replace it\n"
    assert out.read_text() == "# mine\n"
    forced = run_command("import", "procfile", str(path), "-o", str(out), "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert out.read_text().startswith("# Imported by hearthlink")


def test_a_file_with_nothing_to_import_is_exit_2_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text("services:\n  db:\n    image: postgres:16\n")
    out = tmp_path / "out.toml"
    done = run_command("import", "compose", str(path), "-o", str(out), cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == f"{path}: nothing to import: no service could be carried over"
    assert lines[1].startswith(f"{path}: services.db: only an image (postgres:16)")
    assert not out.exists()
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    done = run_command("import", "process-compose", "binary.yaml", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (2, "binary.yaml: a binary file, not a config\n")


ROUND_TRIP = """
services:
  migrate:
    image: example/app:2
    command: ["python", "-c", "print('migrated')"]
    restart: "no"
  db:
    image: example/db:2
    command: ["python", "-m", "http.server", "DB_PORT", "--bind", "127.0.0.1"]
    ports: ["127.0.0.1:DB_PORT:DB_PORT"]
    healthcheck:
      test: ["CMD", "python", "-c", "import socket; socket.create_connection(('::1', DB_PORT))"]
      interval: 7s
      timeout: 2s
      retries: 4
      start_period: 30s
      start_interval: 100ms
  web:
    image: example/app:2
    command: ["python", "-m", "http.server", "WEB_PORT", "--bind", "127.0.0.1"]
    ports: ["127.0.0.1:WEB_PORT:WEB_PORT"]
    environment:
      GREETING: "costs $$5"
    healthcheck:
      test: ["CMD", "python", "-c", "import urllib.request as u; u.urlopen('http://[::1]:WEB_PORT')"]
      interval: 7s
      timeout: 2s
      retries: 4
      start_period: 30s
      start_interval: 100ms
    depends_on:
      migrate: {condition: service_completed_successfully}
      db: {condition: service_healthy, restart: true}
    stop_signal: SIGINT
    stop_grace_period: 20s
    mem_limit: 256m
    post_start:
      - command: ["python", "-c", "print('up')"]
    pre_stop:
      - command: ["python", "-c", "print('going')"]
  worker:
    image: example/app:2
    command: ["sleep", "3600"]
    profiles: [jobs]
    depends_on:
      db: {condition: service_started}
      web: {condition: service_healthy}
"""


def _seconds(check: dict[str, Any], key: str) -> float | None:
    return parse_duration(check[key])


def test_compose_round_trip_keeps_services_commands_dependencies_and_checks(
    tmp_path: Path,
) -> None:
    text = ROUND_TRIP.replace("DB_PORT", str(free_port())).replace("WEB_PORT", str(free_port()))
    source = tmp_path / "compose.yaml"
    source.write_text(text)
    config = tmp_path / "hearthlink.toml"
    done = run_command("import", "compose", str(source), "-o", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    check = run_command("check", "--config", str(config), cwd=tmp_path, env=env(tmp_path))
    assert check.returncode == 0, check.stdout + check.stderr
    exported = run_command(
        "export", "compose", "--config", str(config), cwd=tmp_path, env=env(tmp_path)
    )
    assert exported.returncode == 0, exported.stderr
    validate_compose(exported.stdout, tmp_path)
    before = yaml.safe_load(text)["services"]
    after = yaml.safe_load(exported.stdout)["services"]
    assert list(after) == list(before)
    for name, old in before.items():
        new = after[name]
        assert new["image"] == old["image"], name
        assert new["command"] == old["command"], name
        assert new.get("depends_on", {}) == old.get("depends_on", {}), name
        if "healthcheck" in old:
            for key in ("test", "retries"):
                assert new["healthcheck"][key] == old["healthcheck"][key], (name, key)
            for key in ("interval", "timeout", "start_period", "start_interval"):
                assert _seconds(new["healthcheck"], key) == _seconds(old["healthcheck"], key)
        else:
            assert "healthcheck" not in new, name
        for key in ("ports", "stop_signal", "post_start", "pre_stop", "mem_limit", "profiles"):
            if key in old:
                assert new[key] == old[key], (name, key)
        if "stop_grace_period" in old:
            assert _seconds(new, "stop_grace_period") == _seconds(old, "stop_grace_period")
        for var, value in old.get("environment", {}).items():
            assert new["environment"][var] == value
    assert after["migrate"]["restart"] == "no"


def test_import_output_folder_decides_the_env_file_path(tmp_path: Path) -> None:
    path = example(tmp_path, "procfile")
    shutil.copy(FIXTURES / ".env", tmp_path / ".env")
    out = tmp_path / "deep" / "er" / "hearthlink.toml"
    out.parent.mkdir(parents=True)
    done = run_command("import", "procfile", str(path), "-o", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert 'env_file = "../../.env"' in out.read_text()
