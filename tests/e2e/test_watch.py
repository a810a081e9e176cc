"""Watching files with the real watcher: real files saved as editors save them, real
processes restarted, dependents following their dependency's restart."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from hearthlink_trio.supervisor.watch import BATCH_SECONDS
from tests.e2e.test_rolling import ClientLoop
from tests.helpers import wait_for
from tests.stack import Running, Stack, all_gone, run_command, running


def save(path: Path, text: str) -> None:
    """Save as editors do: the new text in a temporary file beside it, renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_text(text)
    os.replace(temporary, path)


def pid_of(stack: Stack, name: str) -> int | None:
    """The pid of the process answering ``name``'s port, or None."""
    try:
        response = httpx.get(
            f"http://127.0.0.1:{stack.port(name)}/health", timeout=1, trust_env=False
        )
    except httpx.TransportError:
        return None
    pid: int | None = response.json().get("pid")
    return pid


def project(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    (folder / "pkg").mkdir(parents=True)
    (folder / "app.py").write_text("v0\n")
    return folder


def changed_lines(sup: Running) -> list[str]:
    return [line for line in sup.stderr().splitlines() if " changed (" in line]


def starts(sup: Running, name: str) -> int:
    return len(re.findall(rf"^Started {name} service", sup.stderr(), re.M))


def watches(pid: int) -> bool:
    """Has the process ``pid`` loaded the watcher (watchfiles' Rust extension)?"""
    with open(f"/proc/{pid}/maps") as f:
        return "_rust_notify" in f.read()


def test_a_save_restarts_the_service_once_and_the_line_names_the_file(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    stack = Stack(tmp_path)
    stack.add("web", cwd=str(cwd), watch=["**/*.py"])
    with running(stack.write()) as sup:
        sup.wait_line(r"^web service is healthy$")
        first = pid_of(stack, "web")
        assert first is not None and watches(sup.pid)
        save(cwd / "app.py", "v1\n")
        sup.wait_line(r"^web: 1 file changed \(app.py\), restarting$")
        sup.wait_line(r"^web service is healthy$", count=2)
        second = pid_of(stack, "web")
        assert second not in (None, first)
        # A later save is the marker: whatever the first save caused came before its line.
        save(cwd / "pkg" / "models.py", "v1\n")
        sup.wait_line(r"^web: 1 file changed \(pkg/models.py\), restarting$")
        sup.wait_line(r"^web service is healthy$", count=3)
        assert changed_lines(sup) == [
            "web: 1 file changed (app.py), restarting",
            "web: 1 file changed (pkg/models.py), restarting",
        ]
        assert starts(sup, "web") == 3
        assert "Service web restarted (attempt" not in sup.stderr()  # not counted
        began = time.monotonic()
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
        # The watcher's thread does not hold the exit up.
        assert time.monotonic() - began < 2.0
    all_gone(stack.pids())


def test_the_state_events_of_a_watch_restart_carry_what_changed(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    stack = Stack(tmp_path)
    stack.add("web", cwd=str(cwd), watch=["**/*.py"])
    with running(stack.write()) as sup:
        sup.wait_line(r"^web service is healthy$")
        transport = httpx.HTTPTransport(uds=str(stack.data_dir / "run" / "hearthlink.sock"))
        with (
            httpx.Client(transport=transport, timeout=15, trust_env=False) as client,
            client.stream("GET", "http://x/v1/events?service=web&types=state") as response,
        ):
            lines = (json.loads(line) for line in response.iter_lines() if line)
            assert next(lines)["type"] == "snapshot"
            save(cwd / "app.py", "v1\n")
            save(cwd / "pkg" / "models.py", "v1\n")
            moves: list[dict[str, Any]] = []
            for event in lines:
                if event["state"] != event["previous"]:
                    moves.append(event)
                if event["state"] == "healthy":
                    break
        reason = "2 files changed (app.py, pkg/models.py)"
        assert [(e["state"], e["reason"]) for e in moves] == [
            ("stopping", reason),
            ("starting", reason),
            ("healthy", reason),
        ]
        sup.wait_line(r"^web: 2 files changed \(app.py, pkg/models.py\), restarting$")
    all_gone(stack.pids())


def test_fifty_saves_in_100ms_restart_once(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    stack = Stack(tmp_path)
    stack.add("web", cwd=str(cwd), watch=["**/*.py"])
    with running(stack.write()) as sup:
        sup.wait_line(r"^web service is healthy$")
        began = time.monotonic()
        for n in range(50):
            save(cwd / f"m{n % 5}.py", f"v{n}\n")
        # Meant to take 100 ms; on a loaded machine it may take longer, but all of it must
        # fall in one batch for the test to mean anything.
        took = time.monotonic() - began
        assert took < BATCH_SECONDS * 0.75, f"the 50 saves took {took:.3f}s"
        sup.wait_line(r"^web: 5 files changed \(m0.py, m1.py, …\), restarting$")
        sup.wait_line(r"^web service is healthy$", count=2)
        save(cwd / "app.py", "marker\n")
        sup.wait_line(r"^web: 1 file changed \(app.py\), restarting$")
        sup.wait_line(r"^web service is healthy$", count=3)
        assert len(changed_lines(sup)) == 2
        assert starts(sup, "web") == 3
    all_gone(stack.pids())


def test_ignored_paths_restart_nothing(tmp_path: Path) -> None:
    # The cwd holds the data dir and its logs (written on every output line), so a watch
    # of **/*.log sees them but must not restart on them.
    stack = Stack(tmp_path)
    stack.add(
        "web",
        cwd=str(tmp_path),
        watch=["**/*.py", "**/*.log"],
        watch_ignore=["vendor/", "*_test.py"],
    )
    with running(stack.write()) as sup:
        sup.wait_line(r"^web service is healthy$")
        wait_for(lambda: (stack.data_dir / "logs" / "web.log").exists(), what="the log file")
        for ignored in (
            "vendor/lib.py",
            "app_test.py",
            "__pycache__/app.py",
            ".git/hooks.py",
            "node_modules/x.py",
            ".venv/site.py",
            "data/logs/other.log",
            "data/state.py",
        ):
            save(tmp_path / ignored, "x\n")
        (tmp_path / ".app.py.swp").write_text("swap")
        (tmp_path / "app.py~").write_text("backup")
        (tmp_path / "4913").write_text("")
        save(tmp_path / "marker.py", "x\n")
        sup.wait_line(r"^web: 1 file changed \(marker.py\), restarting$")
        sup.wait_line(r"^web service is healthy$", count=2)
        assert changed_lines(sup) == ["web: 1 file changed (marker.py), restarting"]
        assert starts(sup, "web") == 2
    all_gone(stack.pids())


def test_a_dependent_with_restart_true_follows_once_its_dependency_is_healthy(
    tmp_path: Path,
) -> None:
    cwd = project(tmp_path)
    stack = Stack(tmp_path)
    # db is slow to be ready after each start, so a dependent restarted too early shows.
    stack.add("db", cwd=str(cwd), watch=["**/*.py"], env={"TESTSVC_DELAY": "0.5"})
    stack.add("api", depends_on={"db": {"condition": "healthy", "restart": True}})
    stack.add("plain", depends_on=["db"])
    with running(stack.write()) as sup:
        sup.wait_line(r"^api service is healthy$")
        sup.wait_line(r"^plain service is healthy$")
        api, plain = pid_of(stack, "api"), pid_of(stack, "plain")
        save(cwd / "app.py", "v1\n")
        sup.wait_line(r"^api: db was restarted and is healthy again, restarting$")
        sup.wait_line(r"^api service is healthy$", count=2)
        assert pid_of(stack, "api") not in (None, api)
        lines = sup.stderr().splitlines()
        db_again = [i for i, line in enumerate(lines) if line == "db service is healthy"][1]
        api_again = [i for i, line in enumerate(lines) if line.startswith("Started api")][1]
        assert db_again < api_again
        # The one without restart = true kept its process.
        assert pid_of(stack, "plain") == plain
        assert starts(sup, "plain") == 1
    all_gone(stack.pids())


def test_a_service_that_writes_its_own_watched_files_is_caught_in_a_storm(
    tmp_path: Path,
) -> None:
    cwd = project(tmp_path)
    stack = Stack(tmp_path)
    # Each start of web writes gen.py, a file it watches. It waits for db, which listens
    # only after 0.5 s, so its first start comes after the watcher is up (a service that
    # starts before, waiting for nothing or started early after a quick dependency, may
    # write before the watcher looks, and that first write goes unseen).
    stack.add("db", env={"TESTSVC_DELAY": "0.5"})
    stack.add(
        "web",
        cwd=str(cwd),
        watch=["**/*.py"],
        depends_on=["db"],
        env={"TESTSVC_TOUCH": str(cwd / "gen.py")},
    )
    with running(stack.write()) as sup:
        storm = sup.wait_line(r"^web: restarted 5 times in 10s", timeout=30)
        assert storm == [
            "web: restarted 5 times in 10s by changes made while it was starting (its own "
            "writes?): gen.py; not restarting on changes to these files until another watched "
            "file changes (add them to watch_ignore)"
        ]
        # Five restarts on its own writes; the sixth was not made.
        assert changed_lines(sup) == ["web: 1 file changed (gen.py), restarting"] * 5
        assert starts(sup, "web") == 6
        # Another file restarts it; the write of that start is ignored.
        save(cwd / "pkg" / "views.py", "v1\n")
        sup.wait_line(r"^web: 1 file changed \(pkg/views.py\), restarting$")
        sup.wait_line(r"^web service is healthy$", count=7)
        save(cwd / "pkg" / "models.py", "v1\n")
        sup.wait_line(r"^web: \d files? changed \((gen.py, )?pkg/models.py\), restarting$")
        sup.wait_line(r"^web service is healthy$", count=8)
        assert changed_lines(sup)[5:-1] == ["web: 1 file changed (pkg/views.py), restarting"]
        assert starts(sup, "web") == 8
        assert sup.stderr().count("web: restarted 5 times") == 1
    all_gone(stack.pids())


def test_no_watch_turns_watching_off_and_a_run_without_watch_never_loads_it(
    tmp_path: Path,
) -> None:
    cwd = project(tmp_path)
    stack = Stack(tmp_path)
    stack.add("web", cwd=str(cwd), watch=["**/*.py"])
    with running(stack.write(), "--no-watch") as sup:
        sup.wait_line(r"^web service is healthy$")
        assert not watches(sup.pid)
        save(cwd / "app.py", "v1\n")
        # Nothing can be waited for: give a restart five batches' time to show, in vain.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert not changed_lines(sup)
            time.sleep(0.05)
        assert starts(sup, "web") == 1
    (tmp_path / "plain").mkdir()
    plain = Stack(tmp_path / "plain")
    plain.add("web")
    with running(plain.write()) as sup:
        sup.wait_line(r"^web service is healthy$")
        assert not watches(sup.pid)
    all_gone(stack.pids() + plain.pids())


def test_a_watch_on_a_missing_folder_is_refused_before_anything_starts(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    stack = Stack(tmp_path)
    stack.add("web", cwd=str(cwd), watch=["src/**/*.py"])
    config = stack.write()
    result = run_command("run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"hearthlink.toml: services.web.watch: 'src/**/*.py': no such folder: {cwd}/src"
    ]
    assert stack.pids() == []


def test_a_reload_that_adds_a_watch_starts_watching(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    stack = Stack(tmp_path)
    stack.add("web", cwd=str(cwd))
    config = stack.write()
    with running(config) as sup:
        sup.wait_line(r"^web service is healthy$")
        assert not watches(sup.pid)
        stack.services["web"]["watch"] = ["*.py"]
        stack.write()
        sup.signal(signal.SIGHUP)
        sup.wait_line(r"^Config reloaded")
        sup.wait_line(r"^web service is healthy$", count=2)  # a changed service restarts
        # The watcher starts in the background: save until it has seen a save.
        wait_for(
            lambda: save(cwd / "app.py", f"{time.monotonic()}\n") or changed_lines(sup),
            interval=0.5,
            what="a save seen",
        )
        assert changed_lines(sup)[0] == "web: 1 file changed (app.py), restarting"
    all_gone(stack.pids())


def test_a_service_left_out_of_the_run_is_not_started_by_a_change(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    stack = Stack(tmp_path)
    stack.add("api", cwd=str(cwd), watch=["**/*.py"])
    stack.add("web", cwd=str(cwd), watch=["**/*.py"])
    with running(stack.write(), "api") as sup:
        sup.wait_line(r"^api service is healthy$")
        save(cwd / "app.py", "v1\n")
        sup.wait_line(r"^api: 1 file changed \(app.py\), restarting$")
        sup.wait_line(r"^api service is healthy$", count=2)
        # The same change concerned web, which the run left out: not started, not spoken of.
        assert changed_lines(sup) == ["api: 1 file changed (app.py), restarting"]
        assert starts(sup, "web") == 0
    all_gone(stack.pids())


def test_a_watch_restart_of_a_service_holding_its_socket_is_rolling_and_refuses_nothing(
    tmp_path: Path,
) -> None:
    cwd = project(tmp_path)
    stack = Stack(tmp_path)
    # Half a second to start: stopped first, requests would wait or fail meanwhile.
    stack.add(
        "web",
        cwd=str(cwd),
        watch=["**/*.py"],
        socket=True,
        env={"TESTSVC_DELAY": "0.5", "TESTSVC_GRACEFUL": "1"},
    )
    with running(stack.write()) as sup:
        sup.wait_line(r"^web service is healthy$")
        (old,) = stack.pids("web")
        with ClientLoop(stack.port("web")).running() as client:
            wait_for(lambda: len(client.answered) > 20, timeout=10)
            save(cwd / "app.py", "v1\n")
            sup.wait_line(r"^web: 1 file changed \(app.py\), restarting$")
            line = sup.wait_line(r"^Rolling restart of web: PID \d+ is ready, stopping PID \d+$")
            new = int(line[0].split("PID ")[1].split()[0])
            wait_for(lambda: client.answered[-1] == new, timeout=10)
        assert client.failed == []
        assert client.answered[0] == old and set(client.answered) == {old, new}
        assert "Manual restart of web" not in sup.stderr()
    all_gone(stack.pids())
