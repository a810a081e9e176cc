"""Mutated configs: a fixed seed, a few hundred mutations of a valid config, each loaded and
preflighted as ``hearthlink check`` does. Every one is either accepted or refused with lines
in the error form (exit 2 or 3), quickly: never another exception, a hang, a long parse.

The accepted ones are started by ``tests/e2e/test_hostile_run.py`` (a few of them)."""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hearthlink_trio.config import load_config
from hearthlink_trio.errors import ConfigError, HearthlinkError, PreflightError
from hearthlink_trio.supervisor.preflight import preflight
from tests.helpers import free_port
from tests.unit.test_hostile_config import toml

SEED = 22
COUNT = 500
#: A mutant loads and passes (or fails) the preflight in well under this.
MAX_SECONDS = 3.0
SLEEP = shutil.which("sleep") or "/bin/sleep"
TRUE = shutil.which("true") or "/bin/true"

#: Values a new user (or a fuzzer) might put anywhere. No absolute path outside the test's
#: folder that a run would create: the accepted mutants are started too.
HOSTILE: list[Any] = [
    True,
    False,
    0,
    -1,
    1,
    65536,
    2**63 - 1,
    -(2**63),
    1e308,
    float("inf"),
    float("-inf"),
    float("nan"),
    0.0,
    "",
    "yes",
    "30001",
    "\0",
    "a\nb",
    "x" * 300,
    "~nosuchuser-hl/x",
    "/dev/zero",
    "sub/../x",
    "{port}",
    "{",
    "é\u2028",
    "SIGKILL",
    "SIGNOPE",
    "task",
    "never",
    "completed",
    "http",
    "every 0",
    "*/0 * * * *",
    "61 * * * *",
    "512X",
    "0.5G",
    "9" * 400 + "M",
    "every 1e300",
    [],
    [""],
    ["\0"],
    [1],
    ["web"],
    {},
    {"a": 1},
    {"A=B": "x"},
    {"PATH": "p.key"},
    {"http": "/x"},
    {"exec": []},
    {"tcp": True},
    {"log": "("},
    {"web": "completed"},
]
HOSTILE_NAMES = ["Web", "a" * 64, "a.b", "bad\nname", "", "0x", "web-2", "é"]
UNKNOWN_KEYS = ["prot", "services", "enabled", "x" * 100, "a\0b"]
#: Characters that break TOML in interesting places.
NOISE = [*"[]{}=.,\"'\\\n\t# 0\0\ufeff", "\u2028", "\x7f", "é"]


def base_config(root: Path, ports: tuple[int, int]) -> dict[str, dict[str, Any]]:
    """A valid config: a service, one that depends on it, and a task."""
    return {
        "supervisor": {"data_dir": str(root / "data"), "stop_timeout": 1.0, "log_backups": 1},
        "health": {"startup_interval": 0.2, "timeout": 1.0, "failure_threshold": 2},
        "restart": {"max_attempts": 1, "initial_backoff": 0.1, "max_backoff": 0.2},
        "services.web": {
            "command": [SLEEP, "30"],
            "port": ports[0],
            "probe": "none",
            "env": {"GREETING": "hi"},
            "stop_signal": "SIGTERM",
            "max_memory": "512M",
        },
        "services.worker": {
            "command": [SLEEP, "30"],
            "probe": "none",
            "depends_on": ["web"],
            "port": ports[1],
            "replicas": 1,
        },
        "services.job": {
            "command": [TRUE],
            "kind": "task",
            "depends_on": {"web": "started"},
            "post_start": [TRUE],
        },
        "services.nightly": {"command": [TRUE], "kind": "task", "schedule": "0 3 * * *"},
    }


def render(tables: dict[str, dict[str, Any]]) -> str:
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{json.dumps(key)} = {toml(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _mutate_tables(rng: random.Random, tables: dict[str, dict[str, Any]]) -> None:
    table = rng.choice(list(tables))
    values = tables[table]
    what = rng.randrange(5)
    if what == 0 and values:  # a value replaced
        key = rng.choice(list(values))
        values[key] = rng.choice(HOSTILE)
    elif what == 1 and values:  # a key removed
        del values[rng.choice(list(values))]
    elif what == 2:  # a key added, known elsewhere or unknown
        known = [key for other in tables.values() for key in other]
        values[rng.choice(known + UNKNOWN_KEYS)] = rng.choice(HOSTILE)
    elif what == 3 and table.startswith("services."):  # a service renamed
        tables[f"services.{json.dumps(rng.choice(HOSTILE_NAMES))}"] = tables.pop(table)
    else:  # a value nested one level down
        inner = [key for key, value in values.items() if isinstance(value, dict | list) and value]
        if inner:
            key = rng.choice(inner)
            if isinstance(values[key], dict):
                values[key][rng.choice(list(values[key]))] = rng.choice(HOSTILE)
            else:
                values[key][rng.randrange(len(values[key]))] = rng.choice(HOSTILE)


def _mutate_text(rng: random.Random, text: str) -> str:
    what = rng.randrange(5)
    at = rng.randrange(len(text) + 1)
    if what == 0:
        return text[:at]
    if what == 1:
        return text[:at] + rng.choice(NOISE) + text[at:]
    if what == 2:
        return text[:at] + text[at + 1 :]
    lines = text.splitlines(keepends=True)
    n = rng.randrange(len(lines))
    if what == 3:
        return "".join(lines[: n + 1] + lines[n:])  # a line twice
    return "\ufeff" + text if n == 0 else "".join(lines[:n] + lines[n + 1 :])


@dataclass
class Mutant:
    number: int
    text: str


def mutants(root: Path, ports: tuple[int, int]) -> Iterator[Mutant]:
    """The same :data:`COUNT` mutants for the same ``root`` and ``ports``, every time."""
    rng = random.Random(SEED)
    for number in range(COUNT):
        tables = json.loads(json.dumps(base_config(root, ports)))
        for _ in range(rng.randint(1, 3)):
            _mutate_tables(rng, tables)
        text = render(tables)
        if rng.random() < 0.3:
            text = _mutate_text(rng, text)
        yield Mutant(number, text)


def check(path: Path) -> HearthlinkError | None:
    """What ``hearthlink check`` finds for ``path``: None (OK) or the error it reports."""
    log = logging.getLogger("tests.mutations")
    try:
        preflight(load_config(path, environ={}), log, keep_lock=False)
    except HearthlinkError as exc:
        return exc
    return None


def assert_error_form(path: Path, error: HearthlinkError) -> None:
    assert isinstance(error, ConfigError | PreflightError), error
    assert error.exit_code in (2, 3)
    assert error.problems
    for line in error.problems:
        assert line and "\n" not in line and len(line.splitlines()) == 1, line
        if isinstance(error, ConfigError):
            assert line.startswith((f"{path.name}: ", f"{path}: ")), line


@pytest.fixture
def ports() -> tuple[int, int]:
    # The mutations do not depend on the ports (only values carry them): the same seed
    # gives the same mutants, whatever ports are free.
    return two_ports()


def two_ports() -> tuple[int, int]:
    """Two different free ports (the base config needs distinct ones to be valid)."""
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


def test_mutated_configs_are_accepted_or_refused_in_the_error_form(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    accepted = refused = 0
    started = time.monotonic()
    for mutant in mutants(tmp_path, ports):
        path = tmp_path / "hearthlink.toml"
        path.write_bytes(mutant.text.encode("utf-8", "surrogatepass"))
        begun = time.monotonic()
        error = check(path)
        took = time.monotonic() - begun
        assert took < MAX_SECONDS, f"mutant {mutant.number} took {took:.1f}s:\n{mutant.text}"
        if error is None:
            accepted += 1
        else:
            refused += 1
            assert_error_form(path, error)
    # Both outcomes are exercised, and the whole run stays short on a busy machine.
    assert accepted >= 10 and refused >= COUNT // 2, (accepted, refused)
    assert time.monotonic() - started < 60
