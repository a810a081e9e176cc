"""Several config files read as one: the merge rules, ``enabled = false``, the file named in
an error, the override file beside the config, and the cache keyed on every file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from hearthlink_trio.config.cache import _entry_path, load_cached, load_config_cached
from hearthlink_trio.config.load import load_config
from hearthlink_trio.config.locate import Location, locate
from hearthlink_trio.config.merge import OVERRIDE_NAME, effective_files, merge_files
from hearthlink_trio.errors import ConfigError
from tests.stack import run_command, write_config


def _base(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "base.toml",
        {
            "supervisor": {"data_dir": str(tmp_path / "d"), "stop_timeout": 3.0},
            "services.db": {"command": ["sleep", "60"], "probe": "none"},
            "services.web": {
                "command": ["sleep", "60", "{port}"],
                "port": 4100,
                "env": {"A": "1", "B": "2"},
                "depends_on": ["db"],
            },
        },
    )


def _problems(paths: list[Path]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(paths, environ={})
    return info.value.problems


def test_tables_merge_recursively_and_other_values_are_replaced() -> None:
    merged = merge_files(
        [
            ("a.toml", {"s": {"env": {"A": "1", "B": "2"}, "argv": ["x", "y"], "port": 1}}),
            ("b.toml", {"s": {"env": {"B": "3"}, "argv": ["z"]}}),
        ]
    )
    assert merged.raw == {"s": {"env": {"A": "1", "B": "3"}, "argv": ["z"], "port": 1}}
    assert merged.label_for(["s", "env", "A"]) == "a.toml"
    assert merged.label_for(["s", "env", "B"]) == "b.toml"
    assert merged.label_for(["s", "argv"]) == "b.toml"
    assert merged.label_for(["s", "port"]) == "a.toml"
    assert merged.label_for(["s", "missing"]) == "b.toml"  # the table's last writer


def test_a_table_replaced_by_a_plain_value_forgets_its_keys_origin() -> None:
    merged = merge_files(
        [("a.toml", {"s": {"probe": {"tcp": True}}}), ("b.toml", {"s": {"probe": "none"}})]
    )
    assert merged.raw == {"s": {"probe": "none"}}
    assert merged.label_for(["s", "probe", "tcp"]) == "b.toml"


def test_later_config_files_merge_onto_earlier_ones(tmp_path: Path) -> None:
    base = _base(tmp_path)
    top = write_config(
        tmp_path / "top.toml",
        {
            "supervisor": {"stop_timeout": 5.0},
            "services.web": {"env": {"B": "3"}, "command": ["sleep", "61", "{port}"]},
        },
    )
    config = load_config([base, top], environ={})
    web = config.service("web")
    assert dict(web.env) == {"A": "1", "B": "3"}
    assert web.argv == ("sleep", "61", "4100")
    assert web.stop_timeout == 5.0
    assert web.depends_on == ("db",)
    assert config.path == base.absolute() and config.files == (base.absolute(), top.absolute())


def test_the_override_file_beside_the_config_is_merged(tmp_path: Path) -> None:
    base = _base(tmp_path)
    assert effective_files(base) == (base,)
    override = write_config(tmp_path / OVERRIDE_NAME, {"services.web": {"port": 4101}})
    top = write_config(tmp_path / "top.toml", {"services.web": {"port": 4102}})
    assert effective_files([base, top]) == (base, override, top)
    assert effective_files([base, override]) == (base, override)  # not twice
    assert load_config(base, environ={}).service("web").port == 4101
    assert load_config([base, top], environ={}).service("web").port == 4102


def test_enabled_false_removes_a_service(tmp_path: Path) -> None:
    extra = write_config(
        tmp_path / "base.toml",
        {
            "supervisor": {"data_dir": str(tmp_path / "d")},
            "services.web": {"command": ["true"], "probe": "none"},
            "services.debugger": {"command": ["true"], "probe": "none", "profiles": ["debug"]},
        },
    )
    off = write_config(tmp_path / "off.toml", {"services.debugger": {"enabled": False}})
    assert load_config([extra, off], environ={}).names == ("web",)
    # A table that only switches a service off needs nothing else, and true keeps it.
    on = write_config(tmp_path / "on.toml", {"services.debugger": {"enabled": True}})
    assert load_config([extra, on], environ={}).names == ("web", "debugger")


def test_a_dependency_on_a_disabled_service_names_both_files(tmp_path: Path) -> None:
    base = _base(tmp_path)
    off = write_config(tmp_path / "off.toml", {"services.db": {"enabled": False}})
    assert _problems([base, off]) == [
        "base.toml: services.web.depends_on: depends on db, which off.toml disables "
        "(services.db.enabled = false)"
    ]


def test_an_error_names_the_file_that_set_the_key(tmp_path: Path) -> None:
    base = _base(tmp_path)
    top = write_config(
        tmp_path / "top.toml",
        {"services.web": {"port": "x", "enabled": "no"}, "services.db": {"replicas": 0}},
    )
    assert sorted(_problems([base, top])) == [
        "top.toml: services.db.replicas: Input should be greater than or equal to 1",
        "top.toml: services.web.enabled: Input should be a valid boolean",
        "top.toml: services.web.port: Input should be a valid integer",
    ]
    # A check across keys too: the port set by the second file, the clash named there.
    clash = write_config(tmp_path / "clash.toml", {"services.db": {"port": 4100}})
    assert _problems([base, clash]) == [
        "base.toml: services.web.port: port 4100 is already used by service db"
    ]
    unknown = write_config(tmp_path / "unknown.toml", {"services.web": {"depends_on": ["x"]}})
    assert _problems([base, unknown]) == [
        "unknown.toml: services.web.depends_on: unknown service 'x'"
    ]


def test_same_named_files_are_told_apart_by_path(tmp_path: Path) -> None:
    base = _base(tmp_path)
    (tmp_path / "sub").mkdir()
    top = write_config(tmp_path / "sub" / "base.toml", {"services.web": {"port": 0}})
    assert _problems([base, top]) == [
        f"{top}: services.web.port: Input should be greater than or equal to 1"
    ]


def test_the_cache_keys_on_every_file(tmp_path: Path) -> None:
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    base = _base(tmp_path)
    top = write_config(tmp_path / "top.toml", {"services.web": {"port": 4101}})
    alone = load_config_cached(base, environ)
    both = load_config_cached([base, top], environ)
    assert alone.service("web").port == 4100 and both.service("web").port == 4101
    assert _entry_path(base, environ) != _entry_path([base, top], environ)
    assert load_cached([base, top], environ) == both == load_config([base, top], environ)
    # An edit of the second file, or an override file appearing beside the first: a miss.
    top.write_text(top.read_text().replace("4101", "4102"))
    assert load_cached([base, top], environ) is None
    assert load_config_cached([base, top], environ).service("web").port == 4102
    assert load_cached(base, environ) == alone
    write_config(tmp_path / OVERRIDE_NAME, {"services.web": {"port": 4103}})
    assert load_cached(base, environ) is None
    assert load_config_cached(base, environ).service("web").port == 4103


def test_config_command_prints_the_merged_config_in_a_stable_order(tmp_path: Path) -> None:
    base = _base(tmp_path)
    top = write_config(tmp_path / "top.toml", {"services.web": {"env": {"B": "3"}}})
    args = ["config", "--config", str(base), "--config", str(top)]
    first = run_command(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == run_command(*args, cwd=tmp_path).stdout
    text = first.stdout
    assert text.index("[supervisor]") < text.index("[services.db]") < text.index("[services.web]")
    assert 'A = "1"\nB = "3"\n' in text
    assert "stop_timeout = 3.0" in text
    assert tomllib.loads(text)["services"]["web"]["port"] == 4100
    off = write_config(tmp_path / "off.toml", {"services.db": {"enabled": False}})
    bad = run_command("config", "--config", str(base), "--config", str(off), cwd=tmp_path)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "base.toml: services.web.depends_on: depends on db, which off.toml disables "
        "(services.db.enabled = false)"
    ]


def test_the_printed_config_loads_back_to_the_same_services(tmp_path: Path) -> None:
    base = _base(tmp_path)
    top = write_config(
        tmp_path / "top.toml",
        {
            "services.db": {"probe": {"tcp": True}, "port": 4101, "profiles": ["data"]},
            "services.web": {"depends_on": {"db": "started"}, "env": {"B": "3"}},
        },
    )
    printed = run_command("config", "--config", str(base), "--config", str(top), cwd=tmp_path)
    assert printed.returncode == 0 and printed.stderr == "", printed.stderr
    again = tmp_path / "printed.toml"
    again.write_text(printed.stdout)
    assert load_config(again, environ={}).services == load_config([base, top], environ={}).services


def test_clients_find_the_supervisor_of_the_merged_config(tmp_path: Path) -> None:
    base = _base(tmp_path)
    write_config(tmp_path / OVERRIDE_NAME, {"supervisor": {"data_dir": "elsewhere"}})
    top = write_config(tmp_path / "top.toml", {"supervisor": {"log_dir": "logs-here"}})
    where = locate([base, top], environ={})
    assert where == Location(
        data_dir=tmp_path / "elsewhere",
        control_socket=tmp_path / "elsewhere" / "run" / "hearthlink.sock",
        log_dir=tmp_path / "logs-here",
    )
    assert where.data_dir == load_config([base, top], environ={}).data_dir
    # A file with errors (being edited) still gives what the others say.
    top.write_text("[supervisor\n")
    assert locate([base, top], environ={}).data_dir == tmp_path / "elsewhere"
