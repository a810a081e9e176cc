"""``hearthlink ui`` against a real supervisor: headless (Textual's pilot, on asyncio, so
each test runs its own ``asyncio.run`` rather than under trio mode), and in tmux."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from hearthlink_trio.control.client import ControlClient
from tests.helpers import wait_for
from tests.stack import Stack, running

#: The redraw budget of a state change, from the supervisor's event to the row's colour.
REDRAW_BUDGET = 0.1


@pytest.fixture
def root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hl-") as tmp:
        yield Path(tmp)


def sock_of(stack: Stack) -> Path:
    return stack.data_dir / "run" / "hearthlink.sock"


async def until(
    pause: Callable[[], Awaitable[None]], check: Callable[[], object], what: str
) -> None:
    deadline = time.monotonic() + 15
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pause()


def test_run_and_the_cli_never_import_textual() -> None:
    code = (
        "import sys, hearthlink_trio.supervisor.supervisor, hearthlink_trio.cli, "
        "hearthlink_trio.cli.app; assert 'textual' not in sys.modules, 'textual imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ui_table_colours_keys_output_and_quit(root: Path) -> None:
    from hearthlink_trio.cli.ui import HearthlinkUI

    stack = Stack(root)
    fail_file = root / "fail"
    stack.add("good")
    stack.add("bad", env={"TESTSVC_FAIL_FILE": str(fail_file)})
    config = stack.write()
    with running(config):
        client = ControlClient(sock_of(stack))
        wait_for(lambda: _state(client, "bad") == "healthy", what="bad healthy")

        async def scenario() -> int | None:
            app = HearthlinkUI(sock_of(stack))
            async with app.run_test(size=(80, 24)) as pilot:

                async def pause() -> None:
                    await pilot.pause(0.02)

                await until(pause, lambda: app.connected and len(app.services) == 2, "rows")
                table = app.query_one("#services")
                assert table.row_count == 2  # type: ignore[attr-defined]
                assert app.row_style("good") == "green"
                fail_file.touch()
                client.restart("bad")
                # The bad one gives up: its row turns red within the budget of its event.
                await until(pause, lambda: app.row_style("bad") == "bold red", "bad red")
                _, turned_red = app.row_styles["bad"]
                failed_at = app.state_events["bad"].ts
                assert app.state_events["bad"].state == "failed"
                assert turned_red - failed_at <= REDRAW_BUDGET
                cell = table.get_cell("bad", "STATE")  # type: ignore[attr-defined]
                assert str(cell) == "failed" and str(cell.style) == "bold red"

                # r restarts the selected service (the first row: good).
                assert app.selected == "good"
                old_pid = app.services["good"]["pid"]
                await pilot.press("r")
                await until(
                    pause,
                    lambda: (
                        app.services["good"]["state"] == "healthy"
                        and app.services["good"]["pid"] not in (None, old_pid)
                    ),
                    "good restarted",
                )
                new_pid = app.services["good"]["pid"]
                # The output pane follows it: the new process's first line.
                await until(
                    pause,
                    lambda: any(f"pid {new_pid}" in line for line in app.output_lines()),
                    "the new line in the output pane",
                )
                # s stops it, s starts it again.
                await pilot.press("s")
                await until(pause, lambda: app.services["good"]["state"] == "stopped", "stop")
                assert app.row_style("good") == "dim"
                await pilot.press("s")
                await until(pause, lambda: app.services["good"]["state"] == "healthy", "start")
                # l shows every service's lines, each with its name; / filters them.
                await pilot.press("l")
                await until(
                    pause,
                    lambda: any(line.startswith("bad | ") for line in app.output_lines()),
                    "interleaved output",
                )
                await pilot.press("slash")
                for key in "listening":
                    await pilot.press(key)
                await pilot.press("enter")
                await until(pause, lambda: app.filter_text == "listening", "filter")
                lines = app.output_lines()
                assert lines and all("listening" in line for line in lines)
                await pilot.press("q")
            return app.return_code

        code = asyncio.run(scenario())
        assert code == 0
        # Quitting the view leaves the supervisor running.
        assert _state(client, "good") == "healthy"


def test_ui_waits_for_a_supervisor_and_recovers(root: Path) -> None:
    from hearthlink_trio.cli.ui import HearthlinkUI

    stack = Stack(root)
    stack.add("svc")
    config = stack.write()

    async def scenario() -> None:
        app = HearthlinkUI(sock_of(stack))
        async with app.run_test(size=(80, 24)) as pilot:

            async def pause() -> None:
                await pilot.pause(0.05)

            await pause()
            waiting = app.query_one("#waiting")
            assert waiting.display and not app.connected
            assert f"waiting for a supervisor on {sock_of(stack)}" in str(waiting.render())
            with running(config):
                await until(pause, lambda: app.connected and "svc" in app.services, "connect")
                assert not waiting.display
            # The supervisor stopped: the view says so again.
            await until(pause, lambda: not app.connected, "the waiting screen")
            assert waiting.display
            await pilot.press("q")

    asyncio.run(scenario())


def _state(client: ControlClient, name: str) -> str | None:
    try:
        services = client.health()["services"]
    except Exception:
        return None
    return next((s["state"] for s in services if s["name"] == name), None)


def _tmux() -> str:
    tmux = shutil.which("tmux")
    if tmux is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is missing on CI (.ci/run installs it: apt-get install -y tmux)")
        pytest.skip("tmux is not installed (Debian: apt-get install -y tmux)")
    return tmux


def test_ui_in_tmux_shows_the_table_and_q_quits(root: Path) -> None:
    tmux = _tmux()
    stack = Stack(root)
    stack.add("alpha")
    stack.add("beta", depends_on=["alpha"])
    config = stack.write()
    server = f"hl-test-{os.getpid()}"
    command = f"{sys.executable} -m hearthlink_trio ui --config {config}"

    def screen() -> str:
        done = subprocess.run(
            [tmux, "-L", server, "capture-pane", "-p", "-t", "ui"],
            capture_output=True,
            text=True,
        )
        return done.stdout

    with running(config):
        client = ControlClient(sock_of(stack))
        wait_for(lambda: _state(client, "beta") == "healthy", what="beta healthy")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}
        env["TERM"] = "xterm-256color"
        try:
            subprocess.run(
                [
                    tmux,
                    "-L",
                    server,
                    "new-session",
                    "-d",
                    "-s",
                    "ui",
                    "-x",
                    "80",
                    "-y",
                    "24",
                    command,
                ],
                check=True,
                env=env,
                cwd=root,
            )
            wait_for(
                lambda: "alpha" in screen() and "beta" in screen() and "healthy (2/2" in screen(),
                timeout=20,
                what="the table on screen",
            )
            text = screen()
            assert "NAME" in text and "STATE" in text and "RSS" in text
            assert all(len(line) <= 80 for line in text.splitlines())
            subprocess.run([tmux, "-L", server, "send-keys", "-t", "ui", "q"], check=True)
            wait_for(
                lambda: (
                    subprocess.run(
                        [tmux, "-L", server, "has-session", "-t", "ui"], capture_output=True
                    ).returncode
                    != 0
                ),
                what="the view to quit",
            )
        finally:
            subprocess.run([tmux, "-L", server, "kill-server"], capture_output=True)
        assert _state(client, "beta") == "healthy"
