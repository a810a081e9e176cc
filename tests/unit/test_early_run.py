"""Which forms of ``hearthlink run`` start before the argument parser loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearthlink_trio.cli.early import plain_run, plain_status


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([], (None, "human")),
        (["--config", "a.toml"], ((Path("a.toml"),), "human")),
        (["--config=a.toml", "--config", "b.toml"], ((Path("a.toml"), Path("b.toml")), "human")),
        (["--log-format", "json", "--config", "a.toml"], ((Path("a.toml"),), "json")),
        (["--log-format=human"], (None, "human")),
    ],
)
def test_the_plain_forms_are_read(words: list[str], expected: object) -> None:
    assert plain_run(words) == expected


@pytest.mark.parametrize(
    "words",
    [
        ["web"],  # service names: the parser's to read
        ["--profile", "dev"],
        ["--no-watch"],
        ["--config"],  # no value
        ["--config", "--log-format", "json"],  # an option where the value should be
        ["--config="],
        ["--log-format", "xml"],
        ["--log-format"],
        ["--help"],
        ["-h"],
        ["--config", "a.toml", "extra"],
        ["--wait-timeout", "5"],
        ["--configs", "a.toml"],
    ],
)
def test_anything_else_is_left_to_the_parser(words: list[str]) -> None:
    assert plain_run(words) is None


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([], (None, False)),
        (["--json"], (None, True)),
        (["--config", "a.toml", "--json"], ([Path("a.toml")], True)),
        (["--config=a.toml", "--config", "b.toml"], ([Path("a.toml"), Path("b.toml")], False)),
    ],
)
def test_the_plain_forms_of_status_are_read(words: list[str], expected: object) -> None:
    assert plain_status(words) == expected


@pytest.mark.parametrize(
    "words",
    [
        ["--watch"],
        ["--json=true"],
        ["--no-json"],
        ["--config"],
        ["--help"],
        ["x"],
        ["--log-format", "json"],
    ],
)
def test_other_status_command_lines_are_left_to_the_parser(words: list[str]) -> None:
    assert plain_status(words) is None
