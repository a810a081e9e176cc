"""The developer's loop: start a subset (names, profiles), `start` an unselected service, and
`hearthlink run -- CMD` (wait until healthy, run the command, stop, exit with its code)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import pid_alive, wait_for
from tests.stack import Stack, all_gone, run_command, running


def _stack(tmp_path: Path) -> Stack:
    """web -> api -> db, a lone worker, and a debug tool (profile "debug") needing db."""
    stack = Stack(tmp_path)
    stack.add("db")
    stack.add("api", depends_on=["db"])
    stack.add("web", depends_on=["api"])
    stack.add("worker")
    stack.add("tool", depends_on=["db"], profiles=["debug"])
    return stack


def _states(config: Path) -> dict[str, tuple[str, bool]] | None:
    """Each service's state and whether the run selected it; None until the supervisor
    answers."""
    result = run_command("status", "--json", "--config", str(config), cwd=config.parent)
    if result.returncode != 0:
        return None
    return {
        svc["name"]: (svc["state"], svc["selected"])
        for svc in json.loads(result.stdout)["services"]
    }


def _wait_states(config: Path, expected: dict[str, tuple[str, bool]]) -> None:
    wait_for(lambda: _states(config) == expected, timeout=15, what=f"states {expected}")


def test_run_names_starts_their_dependency_closure_only(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    config = stack.write()
    with running(config, "api") as sup:
        _wait_states(
            config,
            {
                "db": ("healthy", True),
                "api": ("healthy", True),
                "web": ("stopped", False),
                "worker": ("stopped", False),
                "tool": ("stopped", False),
            },
        )
        started = sorted(svc for kind, svc in stack.event_lines() if kind == "start")
        assert started == ["api", "db"]
        # `start` of an unselected one starts it, and what it needs is already running.
        result = run_command("start", "web", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        _wait_states(
            config,
            {
                "db": ("healthy", True),
                "api": ("healthy", True),
                "web": ("healthy", True),
                "worker": ("stopped", False),
                "tool": ("stopped", False),
            },
        )
        pids = stack.pids()
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0
    all_gone(pids)


def test_start_of_an_unselected_service_starts_its_unselected_dependencies(
    tmp_path: Path,
) -> None:
    stack = _stack(tmp_path)
    config = stack.write()
    with running(config, "worker") as sup:
        _wait_states(
            config,
            {
                "db": ("stopped", False),
                "api": ("stopped", False),
                "web": ("stopped", False),
                "worker": ("healthy", True),
                "tool": ("stopped", False),
            },
        )
        result = run_command("start", "web", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        _wait_states(
            config,
            {
                "db": ("healthy", True),
                "api": ("healthy", True),
                "web": ("healthy", True),
                "worker": ("healthy", True),
                "tool": ("stopped", False),
            },
        )
        pids = stack.pids()
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone(pids)


def test_profiles_keep_a_service_out_unless_selected_or_named(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    config = stack.write()
    everything_but_tool = {
        "db": ("healthy", True),
        "api": ("healthy", True),
        "web": ("healthy", True),
        "worker": ("healthy", True),
        "tool": ("stopped", False),
    }
    with running(config) as sup:
        _wait_states(config, everything_but_tool)
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0
    with running(config, "--profile", "debug") as sup:
        _wait_states(config, {**everything_but_tool, "tool": ("healthy", True)})
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0
    with running(config, "tool") as sup:  # named: started with what it needs (db)
        _wait_states(
            config,
            {
                "db": ("healthy", True),
                "api": ("stopped", False),
                "web": ("stopped", False),
                "worker": ("stopped", False),
                "tool": ("healthy", True),
            },
        )
        pids = stack.pids()
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0
    all_gone(pids)


def test_an_unknown_name_or_profile_is_a_usage_error(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    config = stack.write()
    result = run_command(
        "run", "--config", str(config), "web", "nope", "--profile", "prod", cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "no service named 'nope' (services: db, api, web, worker, tool)",
        "no profile named 'prod' (profiles: debug)",
    ]
    assert stack.pids() == []


# -- hearthlink run -- CMD -----------------------------------------------------------------


def test_run_command_exits_with_its_code_after_the_stack_stopped(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    config = stack.write()
    report = tmp_path / "report.json"
    # The command records what it sees: the stack's URLs and token, and that web answers.
    script = (
        "import json, os, sys, urllib.request\n"
        f"env = {{k: v for k, v in os.environ.items() if k.startswith('HEARTHLINK_')}}\n"
        "body = urllib.request.urlopen(env['HEARTHLINK_WEB_URL'] + '/health').read()\n"
        f"open({str(report)!r}, 'w').write(json.dumps({{'env': env, 'web': body.decode()}}))\n"
        "sys.exit(7)\n"
    )
    result = run_command(
        "run", "--config", str(config), "web", "--", sys.executable, "-c", script, cwd=tmp_path
    )
    assert result.returncode == 7, result.stderr
    seen = json.loads(report.read_text())
    assert seen["env"]["HEARTHLINK_WEB_URL"] == f"http://127.0.0.1:{stack.port('web')}"
    assert seen["env"]["HEARTHLINK_DB_URL"] == f"http://127.0.0.1:{stack.port('db')}"
    assert len(seen["env"]["HEARTHLINK_API_TOKEN"]) > 20
    assert "healthy" in seen["web"]
    lines = result.stderr.splitlines()
    ended = lines.index(next(line for line in lines if "ended (exit status 7)" in line))
    # Every service stopped after the command ended, and before hearthlink exited.
    stops = [i for i, line in enumerate(lines) if line.startswith("Stopped ")]
    assert len(stops) == 3 and min(stops) > ended
    assert sorted(svc for kind, svc in stack.event_lines() if kind == "start") == [
        "api",
        "db",
        "web",
    ]
    all_gone(stack.pids(), timeout=0.5)


def test_run_command_killed_by_a_signal_exits_128_plus_n(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("db")
    config = stack.write()
    kill = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    result = run_command(
        "run", "--config", str(config), "--", sys.executable, "-c", kill, cwd=tmp_path
    )
    assert result.returncode == 128 + signal.SIGKILL, result.stderr
    all_gone(stack.pids(), timeout=0.5)


def test_a_stack_that_never_gets_healthy_exits_1_naming_it(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("db")
    stack.add("slow", env={"TESTSVC_DELAY": "60"})
    config = stack.write()
    marker = tmp_path / "ran"
    result = run_command(
        "run",
        "--config",
        str(config),
        "--wait-timeout",
        "1.5",
        "--",
        sys.executable,
        "-c",
        f"open({str(marker)!r}, 'w')",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert not marker.exists()
    line = next(line for line in result.stderr.splitlines() if line.startswith("Not running"))
    assert "not healthy after 1.5s: slow (starting" in line
    assert "db" not in line.split(":", 2)[2]
    all_gone(stack.pids(), timeout=0.5)


def test_a_failed_service_ends_the_wait_at_once(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.restart["max_attempts"] = 1
    stack.add("broken", env={"TESTSVC_EXIT_AFTER": "0"})
    config = stack.write()
    result = run_command(
        "run",
        "--config",
        str(config),
        "--",
        sys.executable,
        "-c",
        "pass",
        cwd=tmp_path,
        timeout=20,
    )
    assert result.returncode == 1, result.stderr
    assert "a service will not get healthy: broken (failed" in result.stderr
    all_gone(stack.pids(), timeout=0.5)


def test_ctrl_c_goes_to_the_command_once_then_the_stack_stops(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("db")
    config = stack.write()
    started = tmp_path / "started"
    got = tmp_path / "got"
    # Counts the SIGINTs it receives, then exits 3 a moment after the first.
    script = (
        "import signal, sys, time\n"
        "count = 0\n"
        "def on_int(signum, frame):\n"
        "    global count\n"
        "    count += 1\n"
        "signal.signal(signal.SIGINT, on_int)\n"
        f"open({str(started)!r}, 'w')\n"
        "deadline = time.monotonic() + 30\n"
        "while not count and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "time.sleep(0.5)\n"
        f"open({str(got)!r}, 'w').write(str(count))\n"
        "sys.exit(3)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as err_file:
        # Its own process group, as a terminal's foreground job: the signal goes to the group.
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hearthlink_trio",
                "run",
                "--config",
                str(config),
                "--",
                sys.executable,
                "-c",
                script,
            ],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err_file,
            start_new_session=True,
        )
    try:
        wait_for(started.exists, timeout=20, what="the command to start")
        db_pids = stack.pids("db")
        assert db_pids and all(pid_alive(pid) for pid in db_pids)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(20) == 3, err.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert got.read_text() == "1"  # once: not passed on a second time
    text = err.read_text()
    assert "Received SIGINT, also received by the command" in text
    assert text.index("ended (exit status 3)") < text.index("Stopped db service")
    all_gone(db_pids, timeout=0.5)


def test_sigterm_is_passed_on_to_the_command(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("db")
    config = stack.write()
    started = tmp_path / "started"
    script = f"import time; open({str(started)!r}, 'w'); time.sleep(60)"
    with running(config, "--", sys.executable, "-c", script) as sup:
        wait_for(started.exists, timeout=20, what="the command to start")
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 128 + signal.SIGTERM
        assert "Received SIGTERM, passed on to the command" in sup.stderr()
    all_gone(stack.pids(), timeout=0.5)


def test_a_command_that_cannot_start_exits_127_and_the_token_is_never_logged(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path)
    stack.add("db")
    config = stack.write()
    token = "a-token-the-shell-expanded-0123456789"
    missing = str(tmp_path / "no-such-program")
    result = run_command(
        "run",
        "--config",
        str(config),
        "--",
        missing,
        token,
        cwd=tmp_path,
        env={"HEARTHLINK_API_TOKEN": token},
    )
    assert result.returncode == 127, result.stderr
    assert f"Not running {missing}: No such file or directory" in result.stderr
    assert token not in result.stderr + result.stdout
    all_gone(stack.pids(), timeout=0.5)


def test_restart_of_an_unselected_service_starts_what_it_needs(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    config = stack.write()
    with running(config, "worker") as sup:
        _wait_states(
            config,
            {
                "db": ("stopped", False),
                "api": ("stopped", False),
                "web": ("stopped", False),
                "worker": ("healthy", True),
                "tool": ("stopped", False),
            },
        )
        result = run_command("restart", "api", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        _wait_states(
            config,
            {
                "db": ("healthy", True),
                "api": ("healthy", True),
                "web": ("stopped", False),
                "worker": ("healthy", True),
                "tool": ("stopped", False),
            },
        )
        pids = stack.pids()
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0
    all_gone(pids)


def test_a_reload_applies_the_selection_to_what_it_adds(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("db")
    stack.add("api", depends_on=["db"])
    config = stack.write()
    with running(config, "api") as sup:
        _wait_states(config, {"db": ("healthy", True), "api": ("healthy", True)})
        # Added: cache, which api now needs, and extra, which nothing selected needs.
        stack.add("cache")
        stack.add("extra")
        stack.services["api"]["depends_on"] = ["db", "cache"]
        stack.write()
        sup.signal(signal.SIGHUP)
        sup.wait_line(r"^Config reloaded: added cache, extra; changed api$")
        _wait_states(
            config,
            {
                "db": ("healthy", True),
                "cache": ("healthy", True),
                "api": ("healthy", True),
                "extra": ("stopped", False),
            },
        )
        pids = stack.pids()
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0
    all_gone(pids)


def test_a_scheduled_task_is_not_waited_for(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("db")
    stack.services["nightly"] = {
        "command": [sys.executable, "-c", "pass"],
        "kind": "task",
        "schedule": "0 3 * * *",
    }
    config = stack.write()
    result = run_command(
        "run",
        "--config",
        str(config),
        "--wait-timeout",
        "10",
        "--",
        sys.executable,
        "-c",
        "pass",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Services ready; running" in result.stderr
    all_gone(stack.pids(), timeout=0.5)


def test_a_reload_reads_the_override_file_again(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("db")
    config = stack.write()
    override = tmp_path / "hearthlink.override.toml"
    override.write_text('[services.db.env]\nCOLOUR = "red"\n')
    with running(config) as sup:
        sup.wait_line("^db service is healthy$")
        # Read again with the files: nothing changed (without the override, db would have).
        sup.signal(signal.SIGHUP)
        sup.wait_line(r"^Config reloaded: no service changed$")
        override.write_text('[services.db.env]\nCOLOUR = "blue"\n')
        sup.signal(signal.SIGHUP)
        sup.wait_line(r"^Config reloaded: changed db$")
        sup.wait_line("^db service is healthy$", count=2)
        pids = stack.pids()
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0
    all_gone(pids)


def test_a_critical_service_giving_up_stops_the_command_and_exits_1(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.restart["max_attempts"] = 0
    stack.add("db", critical=True, env={"TESTSVC_EXIT_AFTER": "1.5"})
    config = stack.write()
    got_term = tmp_path / "got-term"
    script = (
        "import signal, sys, time\n"
        "def on_term(signum, frame):\n"
        f"    open({str(got_term)!r}, 'w')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "time.sleep(60)\n"
    )
    result = run_command(
        "run", "--config", str(config), "--", sys.executable, "-c", script, cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    assert got_term.exists()
    assert "critical service db gave up" in result.stderr
    all_gone(stack.pids(), timeout=0.5)


def test_the_command_gets_stdin_and_stdout(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("db")
    config = stack.write()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}
    upper = "import sys; sys.stdout.write(sys.stdin.read().upper())"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hearthlink_trio",
            "run",
            "--config",
            str(config),
            "--",
            sys.executable,
            "-c",
            upper,
        ],
        input="piped through\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "PIPED THROUGH" in result.stdout.splitlines()
    all_gone(stack.pids(), timeout=0.5)
