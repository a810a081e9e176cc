"""The cache of validated configs: a hit only while nothing the load depended on changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearthlink_trio.config.cache import _entry_path, load_cached, load_config_cached
from hearthlink_trio.config.load import load_config
from hearthlink_trio.errors import ConfigError
from tests.stack import TESTSVC, write_config


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(tmp_path / "cache")}


def _config(tmp_path: Path, **service: object) -> Path:
    table = {"script": str(TESTSVC), "port": 4000, "env_file": "s.env", **service}
    (tmp_path / "s.env").write_text("A=${FROM_ENV}\n")
    return write_config(
        tmp_path / "c.toml",
        {"supervisor": {"data_dir": str(tmp_path / "d")}, "services.s": table},
    )


def test_a_hit_equals_the_full_load(tmp_path: Path, environ: dict[str, str]) -> None:
    path = _config(tmp_path)
    first = load_config_cached(path, environ)
    assert load_cached(path, environ) == first == load_config(path, environ)
    assert _entry_path(path, environ).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "change",
    ["config", "env_file", "environment", "script gone", "corrupt entry"],
)
def test_any_change_is_a_miss(tmp_path: Path, environ: dict[str, str], change: str) -> None:
    path = _config(tmp_path)
    load_config_cached(path, environ)
    assert load_cached(path, environ) is not None
    if change == "config":
        path.write_text(path.read_text().replace("4000", "4001"))
    elif change == "env_file":
        (tmp_path / "s.env").write_text("A=2\n")
    elif change == "environment":
        environ["FROM_ENV"] = "now set"
    elif change == "script gone":
        script = tmp_path / "svc.py"
        script.write_text(TESTSVC.read_text())
        path = _config(tmp_path, script=str(script))
        load_config_cached(path, environ)
        script.unlink()
    else:
        _entry_path(path, environ).write_text("{not json")
    assert load_cached(path, environ) is None


def test_a_config_with_errors_is_never_cached(tmp_path: Path, environ: dict[str, str]) -> None:
    path = write_config(tmp_path / "c.toml", {"services.s": {"command": ["x"]}})
    with pytest.raises(ConfigError):
        load_config_cached(path, environ)
    assert not _entry_path(path, environ).exists()


def test_a_hit_keeps_schedules_and_hooks(tmp_path: Path, environ: dict[str, str]) -> None:
    path = _config(
        tmp_path,
        post_start=["warm", "{port}"],
        pre_stop=["drain"],
        on_failure=["notify", "{name}"],
        hook_timeout=2.5,
    )
    first = load_config_cached(path, environ)
    hit = load_cached(path, environ)
    assert hit == first
    assert hit is not None and hit.services[0].post_start == ("warm", "4000")


@pytest.mark.parametrize("change", ["env file renamed", "home moved", "link retargeted"])
def test_a_hit_reads_no_toml_but_misses_what_the_toml_would_change(
    tmp_path: Path, environ: dict[str, str], change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hit checks the env files its entry recorded, without parsing the config: whatever
    # would make the config name other env files must still be a miss.
    for folder in ("a", "b", "home-a", "home-b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "s.env").write_text(f"A={folder}\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home-a"))
    environ["HOME"] = str(tmp_path / "home-a")
    env_file = "~/s.env" if change == "home moved" else "s.env"
    real = write_config(
        tmp_path / "a" / "c.toml",
        {"services.s": {"script": str(TESTSVC), "port": 4000, "env_file": env_file}},
    )
    path = tmp_path / "link.toml"
    path.symlink_to(real)
    load_config_cached(path, environ)
    assert load_cached(path, environ) is not None
    if change == "env file renamed":
        (tmp_path / "a" / "t.env").write_text("A=t\n")
        real.write_text(real.read_text().replace('"s.env"', '"t.env"'))
    elif change == "home moved":
        monkeypatch.setenv("HOME", str(tmp_path / "home-b"))
        environ["HOME"] = str(tmp_path / "home-b")
    else:  # the same file's text in another folder: its relative env file is another one
        (tmp_path / "b" / "c.toml").write_text(real.read_text())
        path.unlink()
        path.symlink_to(tmp_path / "b" / "c.toml")
    assert load_cached(path, environ) is None


def test_a_hit_does_not_load_the_toml_parser(tmp_path: Path, environ: dict[str, str]) -> None:
    # In a fresh interpreter: this one has tomllib already.
    import json
    import subprocess
    import sys

    path = _config(tmp_path)
    load_config_cached(path, environ)
    probe = (
        "import sys, json\n"
        "from hearthlink_trio.config.cache import load_cached\n"
        "from pathlib import Path\n"
        f"hit = load_cached(Path({str(path)!r}), {environ!r})\n"
        "print(json.dumps([hit is not None, 'tomllib' in sys.modules, 'hashlib' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [True, False, False]


def test_the_fields_types_are_those_typing_gives() -> None:
    # The cache evaluates the annotations itself (typing.get_type_hints is slower): the
    # same types, for every class a config is built of.
    import typing

    from hearthlink_trio.config import resolved
    from hearthlink_trio.config.cache import _hints

    kinds = (resolved.Config, resolved.Service, resolved.Probe, resolved.Health, resolved.Restart)
    for kind in kinds:
        assert _hints(kind) == typing.get_type_hints(kind), kind


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("port", "4000"),  # a string where an int belongs
        ("env", ["A", "B"]),  # a list where a table belongs
        ("restart", "sometimes"),  # not one of the policies
        ("stop_signal", 999),  # no such signal
        ("probe", "http"),  # a string where a table belongs
    ],
)
def test_an_entry_of_the_wrong_shape_is_a_miss(
    tmp_path: Path, environ: dict[str, str], key: str, value: object
) -> None:
    import json

    path = _config(tmp_path)
    load_config_cached(path, environ)
    entry_path = _entry_path(path, environ)
    entry = json.loads(entry_path.read_text())
    entry["config"]["services"][0][key] = value
    entry_path.write_text(json.dumps(entry))
    assert load_cached(path, environ) is None
