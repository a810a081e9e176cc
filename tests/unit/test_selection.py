"""Which services a run starts: names, profiles and the dependency closure."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearthlink_trio.config.load import load_config
from hearthlink_trio.config.resolved import Config
from hearthlink_trio.config.selection import Selection, dependency_closure
from hearthlink_trio.errors import ExitCode, UsageError
from tests.stack import write_config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    def svc(**more: object) -> dict[str, object]:
        return {"command": ["true"], "probe": "none", **more}

    path = write_config(
        tmp_path / "c.toml",
        {
            "services.db": svc(),
            "services.api": svc(depends_on=["db"], replicas=2),
            "services.web": svc(depends_on=["api"]),
            "services.worker": svc(),
            "services.tool": svc(depends_on=["db"], profiles=["debug"]),
            "services.docs": svc(profiles=["docs", "debug"]),
            "services.seed": svc(profiles=["data"]),
            "services.migrate": svc(kind="task", profiles=["data"]),
            "services.admin": svc(depends_on=["seed"]),
        },
    )
    return load_config(path, environ={})


def test_by_default_every_service_without_a_profile_and_what_it_needs(config: Config) -> None:
    # admin has no profile; its dependency seed has one and comes with it.
    assert Selection().pick(config) == {
        "db", "api-1", "api-2", "web", "worker", "admin", "seed"
    }  # fmt: skip


def test_names_start_their_dependency_closure_only(config: Config) -> None:
    assert Selection(("web",)).pick(config) == {"web", "api-1", "api-2", "db"}
    assert Selection(("api-2",)).pick(config) == {"api-2", "db"}
    assert Selection(("tool",)).pick(config) == {"tool", "db"}  # named: its profile is moot


def test_profiles_add_their_services(config: Config) -> None:
    assert Selection(profiles=("debug",)).pick(config) == Selection().pick(config) | {
        "tool",
        "docs",
    }
    assert Selection(("worker",), ("data",)).pick(config) == {"worker", "seed", "migrate"}


def test_unknown_names_and_profiles_are_all_named(config: Config) -> None:
    with pytest.raises(UsageError) as info:
        Selection(("web", "nope", "api-3"), ("prod",)).check(config)
    assert info.value.exit_code == ExitCode.CONFIG
    assert info.value.problems == [
        "no service named 'nope' (services: db, api, web, worker, tool, docs, seed, migrate, "
        "admin)",
        "no service named 'api-3' (services: db, api, web, worker, tool, docs, seed, migrate, "
        "admin)",
        "no profile named 'prod' (profiles: data, debug, docs)",
    ]
    Selection(("web", "api-1"), ("docs",)).check(config)  # all known: no error
    # Picking is lenient (a reload may have removed a name): the rest still counts.
    assert Selection(("worker", "gone")).pick(config) == {"worker"}


def test_dependency_closure_is_in_config_order(config: Config) -> None:
    assert dependency_closure(config, ["web"]) == ("db", "api-1", "api-2", "web")
    assert dependency_closure(config, ["nope"]) == ()
