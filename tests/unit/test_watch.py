"""Watching files and following dependencies: the config keys and the pure logic (which
changes concern a service, the storm guard, the cascade's order)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hearthlink_trio.config import load_config
from hearthlink_trio.config.cache import load_cached, load_config_cached
from hearthlink_trio.config.resolved import glob_folder
from hearthlink_trio.errors import ConfigError
from hearthlink_trio.supervisor.cascade import followers
from hearthlink_trio.supervisor.log_lines import describe_changes, files_changed
from hearthlink_trio.supervisor.watch import Change, Decision, Matcher, StormGuard, watch_roots
from tests.stack import write_config

SVC = {"command": ["svc"], "probe": "none"}


def _write(tmp_path: Path, **services: dict[str, object]) -> Path:
    return write_config(
        tmp_path / "hearthlink.toml",
        {f"services.{name}": {**SVC, **table} for name, table in services.items()},
    )


def _problems(tmp_path: Path, **services: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, **services), environ={})
    return info.value.problems


def test_watch_keys_resolve_and_default_to_nothing(tmp_path: Path) -> None:
    (tmp_path / "src" / "app").mkdir(parents=True)
    config = load_config(
        _write(
            tmp_path,
            web={"watch": ["**/*.py", "src/app/*.html"], "watch_ignore": ["tests/"]},
            db={},
        ),
        environ={},
    )
    web, db = config.service("web"), config.service("db")
    assert web.watch == ("**/*.py", "src/app/*.html")
    assert web.watch_ignore == ("tests/",)
    assert web.watch_folders == (tmp_path, tmp_path / "src" / "app")
    assert (db.watch, db.watch_ignore, db.watch_folders, db.restart_with) == ((), (), (), ())


def test_a_watch_on_a_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "web").mkdir()
    assert _problems(
        tmp_path, web={"cwd": "web", "watch": ["src/**/*.py", "*.toml", "!gone/x", "/etc/x"]}
    ) == [
        f"hearthlink.toml: services.web.watch: 'src/**/*.py': no such folder: {tmp_path}/web/src",
        f"hearthlink.toml: services.web.watch: '/etc/x': no such folder: {tmp_path}/web/etc",
    ]


def test_globs_that_leave_the_cwd_are_refused(tmp_path: Path) -> None:
    assert _problems(tmp_path, web={"watch": ["../other/*.py"], "watch_ignore": [""]}) == [
        "hearthlink.toml: services.web.watch: '../other/*.py': globs are relative "
        "to the service's cwd and stay under it (no '~' or '..')",
        "hearthlink.toml: services.web.watch_ignore: '': an empty glob matches nothing",
    ]


def test_globs_that_are_not_globs_are_refused(tmp_path: Path) -> None:
    assert _problems(tmp_path, web={"watch": ["src\\"], "watch_ignore": ["!"]}) == [
        "hearthlink.toml: services.web.watch: 'src\\\\': not a gitignore-style glob "
        "(Invalid git pattern: 'src\\\\')",
        "hearthlink.toml: services.web.watch_ignore: '!': not a gitignore-style glob "
        "(Invalid git pattern: '!')",
    ]
    # The first problem of a list is the one named.
    assert _problems(tmp_path, web={"watch": ["*.py", "a\tb", "\\"]}) == [
        "hearthlink.toml: services.web.watch: 'a\\tb': control characters are not allowed "
        "in a glob",
    ]


def test_depends_on_tables_resolve_restart_with_replicas_expanded(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            db={"replicas": 2, "port": 7000, "probe": {"tcp": True}},
            cache={},
            migrate={"kind": "task"},
            web={
                "depends_on": {
                    "db": {"condition": "healthy", "restart": True},
                    "cache": {"restart": False},
                    "migrate": "completed",
                }
            },
        ),
        environ={},
    )
    web = config.service("web")
    assert web.conditions == {
        "db-1": "healthy",
        "db-2": "healthy",
        "cache": "healthy",
        "migrate": "completed",
    }
    assert web.restart_with == ("db-1", "db-2")


def test_depends_on_table_mistakes_name_the_key(tmp_path: Path) -> None:
    assert _problems(
        tmp_path,
        db={},
        web={"depends_on": {"db": {"condition": "ready", "restart": "sometimes", "extra": 1}}},
    ) == [
        "hearthlink.toml: services.web.depends_on.db.condition: Input should be 'started', "
        "'healthy' or 'completed'",
        "hearthlink.toml: services.web.depends_on.db.restart: Input should be a valid boolean",
        "hearthlink.toml: services.web.depends_on.db.extra: unknown key",
    ]


@pytest.mark.parametrize(
    ("glob", "folder"),
    [
        ("**/*.py", ""),
        ("*.py", ""),
        ("app.py", ""),
        ("src/", ""),
        ("/app.py", ""),
        ("src/*.py", "src"),
        ("src/app/**/*.py", "src/app"),
        ("/src/app/models.py", "src/app"),
        ("src/ap*/x/*.py", "src"),
        ("**/src/*.py", ""),
    ],
)
def test_a_globs_folder_is_its_fixed_leading_part(glob: str, folder: str) -> None:
    assert glob_folder(glob) == folder


def test_watch_roots_are_each_folder_once_none_inside_another() -> None:
    roots = watch_roots([Path("/a/b"), Path("/a"), Path("/c/d"), Path("/a/b/c"), Path("/c/d")])
    assert roots == [Path("/a"), Path("/c/d")]


def test_which_changes_concern_a_service(tmp_path: Path) -> None:
    service = dataclasses.replace(
        load_config(_write(tmp_path, web={}), environ={}).service("web"),
        watch=("**/*.py", "templates/", "!generated.py"),
        watch_ignore=("tests/", "*_flymake.py"),
    )
    data = tmp_path / "data"
    matcher = Matcher.of(service, skip=(data,))

    def wants(relative: str) -> str | None:
        return matcher.wants(tmp_path / relative)

    assert wants("app.py") == "app.py"
    assert wants("pkg/deep/models.py") == "pkg/deep/models.py"
    assert wants("templates/index.html") == "templates/index.html"
    assert wants("README.md") is None
    # The user's ignores, and a negation in watch.
    assert wants("tests/test_app.py") is None
    assert wants("app_flymake.py") is None
    assert wants("generated.py") is None
    # The built-in ignores: version control, caches, dependencies, editors' files.
    for ignored in (
        ".git/HEAD.py",
        "__pycache__/app.cpython-311.py",
        "app.pyc",
        "node_modules/x/y.py",
        ".venv/lib/site.py",
        ".pytest_cache/x.py",
        ".app.py.swp",
        "app.py~",
        ".#app.py",
        "4913",
    ):
        assert wants(ignored) is None, ignored
    # The data dir (here under the cwd), and anything outside the cwd.
    assert wants("data/state.py") is None
    assert matcher.wants(tmp_path.parent / "other.py") is None


def _batch(*paths: str, own: bool = True) -> list[Change]:
    return [Change(path, own) for path in paths]


def test_storm_guard_needs_five_restarts_in_ten_seconds_all_of_the_services_own() -> None:
    guard = StormGuard()
    # Changes made while the service was running normally: never a storm.
    assert [guard.decide(_batch("app.py", own=False), t) for t in range(10)] == [
        Decision.RESTART
    ] * 10
    # Its own writes, but slower than 5 in 10 s: no storm either.
    assert [guard.decide(_batch("state.json"), t * 2.5) for t in range(10)] == [
        Decision.RESTART
    ] * 10
    # A change of the developer's in between starts the count again.
    guard = StormGuard()
    decisions = [guard.decide(_batch("state.json"), t * 0.5) for t in range(4)]
    decisions.append(guard.decide(_batch("app.py", own=False), 2.0))
    decisions += [guard.decide(_batch("state.json"), 2.5 + t * 0.5) for t in range(5)]
    assert decisions == [Decision.RESTART] * 10
    # The sixth own batch after five within 10 s is the storm.
    assert guard.decide(_batch("state.json", "cache.db"), 5.0) is Decision.STORM
    assert guard.files == {"state.json", "cache.db"}


def test_a_storm_ignores_the_services_own_writes_to_its_files_from_then_on() -> None:
    guard = StormGuard()
    for t in range(5):
        assert guard.decide(_batch("state.json"), t * 0.5) is Decision.RESTART
    assert guard.decide(_batch("state.json"), 3.0) is Decision.STORM
    assert guard.decide(_batch("state.json"), 3.5) is Decision.IGNORE
    # Another file restarts it; the writes of that start are ignored again.
    assert guard.decide(_batch("app.py", own=False), 60.0) is Decision.RESTART
    assert guard.decide(_batch("state.json"), 60.5) is Decision.IGNORE
    assert guard.decide(_batch("state.json", "app.py"), 61.0) is Decision.RESTART
    # The same file changed while the service was running is the developer's.
    assert guard.decide(_batch("state.json", own=False), 70.0) is Decision.RESTART
    assert guard.active


def test_the_line_names_what_changed() -> None:
    assert describe_changes(["app.py"]) == "1 file changed (app.py)"
    assert describe_changes(["models.py", "app.py"]) == "2 files changed (app.py, models.py)"
    assert (
        describe_changes(["views.py", "models.py", "app.py"])
        == "3 files changed (app.py, models.py, …)"
    )
    event = files_changed(
        "web", ["models.py", "app.py", "views.py"], restarted=True, why="restarting"
    )
    assert event.message == "web: 3 files changed (app.py, models.py, …), restarting"
    assert event.fields["files"] == ["app.py", "models.py", "views.py"]
    held = files_changed("web", ["app.py"], restarted=False, why="stopped by hand; not started")
    assert held.message == (
        "web: 1 file changed (app.py), not restarted: stopped by hand; not started"
    )


def test_followers_are_transitive_in_dependency_order(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            db={},
            api={"depends_on": {"db": {"restart": True}}},
            plain={"depends_on": ["db"]},
            web={"depends_on": {"api": {"restart": True}, "db": {"restart": True}}},
            worker={"depends_on": {"plain": {"restart": True}}},
        ),
        environ={},
    )
    assert followers(config.services, "db") == ["api", "web"]
    assert followers(config.services, "api") == ["web"]
    assert followers(config.services, "plain") == ["worker"]
    assert followers(config.services, "web") == []


def test_the_config_cache_keeps_the_new_keys_and_checks_the_watched_folders(
    tmp_path: Path,
) -> None:
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    (tmp_path / "src").mkdir()
    path = _write(
        tmp_path,
        db={},
        web={
            "watch": ["src/**/*.py"],
            "watch_ignore": ["src/gen/"],
            "depends_on": {"db": {"restart": True}},
        },
    )
    first = load_config_cached(path, environ)
    hit = load_cached(path, environ)
    assert hit == first == load_config(path, environ)
    assert hit is not None and hit.service("web").watch == ("src/**/*.py",)
    assert hit.service("web").restart_with == ("db",)
    # A watched folder gone: no hit, and the full load says why.
    (tmp_path / "src").rmdir()
    assert load_cached(path, environ) is None
    with pytest.raises(ConfigError):
        load_config_cached(path, environ)
