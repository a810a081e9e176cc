"""The supervisor with real processes, real sockets, real signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hearthlink_trio.process.procfs import proc_stat
from hearthlink_trio.supervisor.output import MAX_LINE_BYTES
from tests.helpers import free_port, pid_alive, wait_for
from tests.stack import Stack, all_gone, run_command, running, sentinel_of


def get_json(port: int, path: str) -> dict[str, object]:
    response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2, trust_env=False)
    result: dict[str, object] = response.json()
    return result


def test_cold_start_logs_environment_and_clean_sigint(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("alpha")
    stack.add("beta-2", env={"EXTRA": "from-config"})
    config = stack.write()
    with running(config, env={"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1"}) as sup:
        sup.wait_line(r"^beta-2 service is healthy$")
        sup.wait_line(r"^alpha service is healthy$")
        err = sup.stderr()
        for name in ("alpha", "beta-2"):
            port = stack.port(name)
            assert f"✓ Port {port} available for {name} service" in err
            assert f"Started {name} service on port {port} with PID " in err
        env = get_json(stack.port("beta-2"), "/env")
        assert env["HEARTHLINK_SERVICE"] == "beta-2"
        assert env["HEARTHLINK_DATA_DIR"] == str(stack.data_dir)
        assert env["HEARTHLINK_ALPHA_URL"] == f"http://127.0.0.1:{stack.port('alpha')}"
        assert env["HEARTHLINK_BETA_2_URL"] == f"http://127.0.0.1:{stack.port('beta-2')}"
        assert env["EXTRA"] == "from-config"
        token = (stack.data_dir / "api.token").read_text().strip()
        assert env["HEARTHLINK_API_TOKEN"] == token and len(token) >= 32
        assert (stack.data_dir / "api.token").stat().st_mode & 0o777 == 0o600
        assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env
        assert "HEARTHLINK_VAULT_KEY" not in env
        assert token not in err
        # Services are session leaders, direct children of the supervisor.
        pids = stack.pids()
        for pid in pids:
            assert os.getsid(pid) == pid and os.getpgid(pid) == pid
            stat = proc_stat(pid)
            assert stat is not None and stat.ppid == sup.pid
        wait_for(lambda: "alpha | alpha listening on" in sup.stdout(), what="prefixed output")
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0
    all_gone(pids, timeout=0.5)
    assert "alpha got SIGTERM, shutting down" in (stack.data_dir / "logs" / "alpha.log").read_text()
    assert "Received SIGINT, stopping all services" in sup.stderr()


def test_sigterm_stops_services_and_grandchildren(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("a", env={"TESTSVC_GRANDCHILD": "1"})
    stack.add("b", env={"TESTSVC_GRANDCHILD": "1"})
    with running(stack.write()) as sup:
        sup.wait_line("a service is healthy")
        sup.wait_line("b service is healthy")
        pids = stack.pids()
        assert len(pids) == 4  # two services, two grandchildren
        assert all(pid_alive(p) for p in pids)
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    all_gone(pids, timeout=0.5)


def test_crash_restarts_with_backoff_then_gives_up(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.restart.update(max_attempts=3, initial_backoff=0.1, max_backoff=0.2)
    stack.add("flaky", env={"TESTSVC_EXIT_AFTER": "0.3", "TESTSVC_EXIT_CODE": "3"})
    stack.add("steady")
    with running(stack.write()) as sup:
        sup.wait_line(r"^Service flaky has failed 3 times, not restarting$")
        err = sup.stderr()
        assert "flaky service exited (exit status 3), scheduling restart" in err
        assert "Service flaky restarted (attempt 1), next backoff: 0.2s" in err
        assert "Service flaky restarted (attempt 2), next backoff: 0.2s" in err
        assert "Service flaky restarted (attempt 3), next backoff: 0.2s" in err
        assert err.count("Started flaky service on port") == 4  # 1 + max_attempts
        assert len(stack.pids("flaky")) == 4
        # The others keep running.
        assert get_json(stack.port("steady"), "/health")["status"] == "healthy"
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0


def test_critical_service_giving_up_exits_1(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.restart.update(max_attempts=1)
    stack.add("core", critical=True, env={"TESTSVC_EXIT_AFTER": "0"})
    stack.add("other")
    with running(stack.write()) as sup:
        assert sup.wait() == 1
    err = sup.stderr()
    assert "Service core has failed 1 times, not restarting" in err
    assert "Fatal: critical service core gave up" in err
    all_gone(stack.pids(), timeout=0.5)


def test_exit_78_fails_at_once_without_restart(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("conf", env={"TESTSVC_EXIT_AFTER": "0", "TESTSVC_EXIT_CODE": "78"})
    with running(stack.write()) as sup:
        sup.wait_line("conf service exited with status 78 .configuration error., not restarting")
        assert sup.stderr().count("Started conf service") == 1
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0


def test_unhealthy_service_is_restarted_but_one_failed_probe_is_not(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    flag = tmp_path / "unhealthy"
    stack.health.update(failure_threshold=3, startup_interval=0.2)
    stack.add("svc", env={"TESTSVC_UNHEALTHY_FILE": str(flag)})
    with running(stack.write()) as sup:
        sup.wait_line("svc service is healthy")
        first_pid = stack.pids("svc")[0]
        # One failed probe: the flag is up just long enough for one probe to see it.
        flag.touch()
        wait_for(lambda: ("probe503", "svc") in stack.event_lines(), timeout=5, what="a 503")
        flag.unlink()
        sup.wait_line("svc service is healthy again")
        assert "scheduling restart" not in sup.stderr()
        assert stack.pids("svc") == [first_pid]
        # Failing for good: restarted after failure_threshold probes.
        flag.touch()
        sup.wait_line(r"^svc service unhealthy \(HTTP 503\), scheduling restart$")
        flag.unlink()
        sup.wait_line(r"Service svc restarted \(attempt 1\), next backoff: 0.2s")
        sup.wait_line(r"^svc service is healthy$", count=2)
        assert len(stack.pids("svc")) == 2
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0


def test_port_conflict_exits_3_naming_port_service_and_holder(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web")
    config = stack.write()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", stack.port("web")))
        holder.listen()
        for command in ("run", "check"):
            result = run_command(command, "--config", str(config), cwd=tmp_path)
            assert result.returncode == 3, result.stderr
            assert (
                f"Port {stack.port('web')} unavailable for web service: Address already in use "
                f"(held by pid {os.getpid()}: " in result.stderr
            )
    assert stack.pids() == []


def test_check_passes_and_starts_nothing(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web")
    result = run_command("check", "--config", str(stack.write()), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"✓ Port {stack.port('web')} available for web service" in result.stderr
    assert stack.pids() == []


def test_single_instance_per_data_dir(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("one")
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("one service is healthy")
        other = tmp_path / "other.toml"
        other.write_text(config.read_text().replace(str(stack.port("one")), str(free_port())))
        result = run_command("run", "--config", str(other), cwd=tmp_path)
        assert result.returncode == 3
        assert f"Another hearthlink supervisor (pid {sup.pid}) is already running" in result.stderr
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0


def test_service_ignoring_sigterm_is_killed_after_stop_timeout(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("stubborn", stop_timeout=0.5, env={"TESTSVC_IGNORE_TERM": "1"})
    with running(stack.write()) as sup:
        sup.wait_line("stubborn service is healthy")
        pids = stack.pids()
        began = time.monotonic()
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0
        took = time.monotonic() - began
    assert "Stopped stubborn service (killed by SIGKILL)" in sup.stderr()
    assert took >= 0.5
    all_gone(pids, timeout=0.5)


def test_second_ctrl_c_kills_at_once(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("stubborn", stop_timeout=30, env={"TESTSVC_IGNORE_TERM": "1"})
    with running(stack.write()) as sup:
        sup.wait_line("stubborn service is healthy")
        pids = stack.pids()
        sup.signal(signal.SIGINT)
        sup.wait_line("Received SIGINT, stopping all services")
        sup.signal(signal.SIGINT)
        assert sup.wait(timeout=5) == 130
    assert "Received SIGINT again, killing all services now" in sup.stderr()
    all_gone(pids, timeout=0.5)


# The parent-death signal armed by util-linux's setpriv before exec, or by the child itself.
@pytest.mark.parametrize("setpriv", ["on", "off"])
def test_sigkill_of_supervisor_and_sentinel_leaves_no_service_and_next_run_reaps(
    tmp_path: Path, setpriv: str
) -> None:
    if setpriv == "on" and shutil.which("setpriv") is None:
        pytest.skip("no setpriv here")
    stack = Stack(tmp_path)
    stack.add("a", env={"TESTSVC_GRANDCHILD": "1"})
    stack.add("b")
    config = stack.write()
    # Without cgroups (a leftover cgroup would be emptied by the next run's start anyway).
    env = {"HEARTHLINK_CGROUPS": "off", "HEARTHLINK_SETPRIV": setpriv}
    with running(config, env=env) as sup:
        sup.wait_line("a service is healthy")
        sup.wait_line("b service is healthy")
        services = stack.pids("a") + stack.pids("b")
        grandchildren = stack.pids("grandchild")
        # The sentinel goes first, so that nothing cleans up but the next preflight.
        os.kill(sentinel_of(sup), signal.SIGKILL)
        sup.signal(signal.SIGKILL)
        sup.wait()
    # PDEATHSIG takes the direct children down within a second.
    all_gone(services, timeout=1.0)
    # The grandchild is left in the group; the next preflight reaps it by pgid + start time.
    assert all(pid_alive(p) for p in grandchildren)
    result = run_command("check", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        f"Reaped 1 leftover process(es) of a previous run (pids {grandchildren[0]})"
        in result.stderr
    )
    all_gone(grandchildren, timeout=1.0)


def test_dependencies_start_first_and_stop_last(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("app", depends_on=["db", "cache"])
    stack.add("db", env={"TESTSVC_DELAY": "0.3"})
    stack.add("cache")
    with running(stack.write()) as sup:
        sup.wait_line("app service is healthy")
        err = sup.stderr()
        assert err.index("db service is healthy") < err.index("Started app service")
        assert err.index("cache service is healthy") < err.index("Started app service")
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
    events = stack.event_lines()
    stops = [name for kind, name in events if kind == "stop"]
    assert stops[0] == "app" and set(stops) == {"app", "db", "cache"}


def test_output_flood_does_not_block_the_supervisor(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.supervisor.update(log_max_bytes=4 * 1024 * 1024, log_backups=2)
    stack.add("noisy", env={"TESTSVC_FLOOD": str(20 * 1024 * 1024)})
    stack.add("quiet")
    with running(stack.write()) as sup:
        sup.wait_line("noisy service is healthy", timeout=30)
        sup.wait_line("quiet service is healthy")
        log_dir = stack.data_dir / "logs"
        wait_for(
            lambda: "flood done" in (log_dir / "noisy.log").read_text(errors="replace"), timeout=30
        )
        assert (log_dir / "noisy.log.2").exists()  # rotated by size...
        assert not (log_dir / "noisy.log.3").exists()  # ... keeping log_backups old files
        names = ("noisy.log.2", "noisy.log.1", "noisy.log")
        text = "".join((log_dir / name).read_text() for name in names)
        assert max(len(line.encode()) for line in text.splitlines()) <= MAX_LINE_BYTES
        assert get_json(stack.port("quiet"), "/health")["status"] == "healthy"
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0
    out = sup.stdout()
    # Invalid UTF-8 replaced, the 1 MiB line cut into 64 KiB pieces, nothing lost on a file.
    assert "noisy | bad utf-8: \ufffd\ufffd\ufffd(\n" in out
    assert out.count("noisy | " + "x" * MAX_LINE_BYTES + "\n") == 16
    assert "noisy | flood done\n" in out


def test_stdout_is_written_line_by_line_to_a_pipe(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("talker")
    config = stack.write()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hearthlink_trio",
            "run",
            "--config",
            str(config),
            "--log-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("talker | talker listening on")
        seen = []
        while not any(e["event"] == "healthy" for e in seen):
            seen.append(json.loads(proc.stderr.readline()))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    events = seen + [json.loads(line) for line in err.decode().splitlines()]
    healthy = [e for e in events if e["event"] == "healthy"]
    assert healthy and healthy[0]["service"] == "talker"
    assert healthy[0]["message"] == "talker service is healthy"


def test_missing_program_is_a_preflight_failure(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("ghost")
    stack.services["ghost"].pop("script")
    stack.services["ghost"]["command"] = [str(tmp_path / "no-such-program"), "--port", "{port}"]
    result = run_command("check", "--config", str(stack.write()), cwd=tmp_path)
    assert result.returncode == 3
    assert "ghost service: program not found or not executable:" in result.stderr


def test_sigterm_while_services_are_still_starting(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("slow", env={"TESTSVC_DELAY": "2"})
    stack.add("after", depends_on=["slow"])
    with running(stack.write()) as sup:
        sup.wait_line("^Started slow service")
        wait_for(lambda: stack.pids("slow"), timeout=5, what="the slow service to run")
        pids = stack.pids()
        sup.signal(signal.SIGTERM)
        sup.signal(signal.SIGHUP)  # a reload asked for during the shutdown is ignored
        assert sup.wait() == 0
    all_gone(pids, timeout=0.5)
    assert "Started after service" not in sup.stderr()


def test_bad_secret_files_are_a_preflight_failure_and_kept(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("vault", secrets={"HEARTHLINK_VAULT_KEY": "vault.key"})
    config = stack.write()
    stack.data_dir.mkdir(mode=0o700)
    key_file = stack.data_dir / "vault.key"
    key_file.write_text("not base64 at all\n")
    key_file.chmod(0o600)
    result = run_command("run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert f"Secrets in {stack.data_dir}:" in result.stderr
    assert key_file.read_text() == "not base64 at all\n"  # never overwritten
    assert stack.pids() == []
    checked = run_command("check", "--config", str(config), cwd=tmp_path)
    assert checked.returncode == 3, checked.stderr
    assert f"{key_file} does not hold a secret" in checked.stderr
    assert key_file.read_text() == "not base64 at all\n"
    key_file.unlink()
    (stack.data_dir / "api.token").write_text("")
    result = run_command("run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "api.token is empty" in result.stderr
    assert stack.pids() == []


def test_vault_key_is_generated_once_and_given_to_the_vault_only(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("vault", secrets={"HEARTHLINK_VAULT_KEY": "vault.key"})
    stack.add("other")
    config = stack.write()
    keys = []
    for _ in range(2):
        with running(config) as sup:
            sup.wait_line("^vault service is healthy$")
            sup.wait_line("^other service is healthy$")
            vault_env = get_json(stack.port("vault"), "/env")
            other_env = get_json(stack.port("other"), "/env")
            keys.append(vault_env["HEARTHLINK_VAULT_KEY"])
            assert "HEARTHLINK_VAULT_KEY" not in other_env
            assert str(keys[-1]) not in sup.stderr()
            sup.signal(signal.SIGINT)
            assert sup.wait() == 0
    assert keys[0] == keys[1] == (stack.data_dir / "vault.key").read_text().strip()
    assert (stack.data_dir / "vault.key").stat().st_mode & 0o777 == 0o600
