"""``hearthlink ui`` shows what a quiet service said before the view opened: its last lines
from the log file, then the live lines, none twice; ``l`` does the same for all services."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearthlink_trio.cli.ui import HISTORY_LINES
from hearthlink_trio.control.client import ControlClient
from tests.e2e.test_ui import _state, sock_of, until
from tests.helpers import wait_for
from tests.stack import Stack, running


@pytest.fixture
def root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hl-") as tmp:
        yield Path(tmp)


def test_selecting_a_quiet_service_shows_its_last_lines_then_follows(root: Path) -> None:
    from hearthlink_trio.cli.ui import HearthlinkUI

    stack = Stack(root)
    stack.add("first")
    stack.add("quiet", depends_on=["first"])
    config = stack.write()
    log_dir = stack.data_dir / "logs"
    # An older log of quiet, longer than the history: only its last lines are shown.
    log_dir.mkdir(parents=True)
    (log_dir / "quiet.log").write_text("".join(f"old line {n}\n" for n in range(300)))
    with running(config):
        client = ControlClient(sock_of(stack))
        wait_for(lambda: _state(client, "quiet") == "healthy", what="quiet healthy")
        quiet_pid = client.health()["services"][1]["pid"]
        started = f"quiet listening on {stack.port('quiet')} pid {quiet_pid}"

        async def scenario() -> None:
            app = HearthlinkUI(sock_of(stack), log_dir)
            async with app.run_test(size=(100, 40)) as pilot:

                async def pause() -> None:
                    await pilot.pause(0.02)

                await until(pause, lambda: app.connected and len(app.services) == 2, "rows")
                await pilot.press("down")  # select quiet: it has said nothing since
                await until(pause, lambda: app.selected == "quiet", "quiet selected")
                shown = app.output_lines()
                assert len(shown) == HISTORY_LINES
                assert shown[-1] == started
                assert shown[0] == f"old line {300 - HISTORY_LINES + 1}"
                # Then live: its next process's first line, once.
                client.restart("quiet")
                await until(
                    pause,
                    lambda: (
                        app.output_lines()[-1].startswith("quiet listening")
                        and app.output_lines()[-1] != started
                    ),
                    "the restarted process's line",
                )
                lines = app.output_lines()
                assert len(lines) == len(set(lines)), "a line shown twice"
                assert "quiet got SIGTERM, shutting down" in lines
                # l: every service's lines, each service's block as written, then live.
                await pilot.press("l")
                every = app.output_lines()
                # first's file was last written before quiet's: its block comes first.
                assert every[0].startswith(f"first | first listening on {stack.port('first')}")
                assert every[1] == f"quiet | old line {300 - HISTORY_LINES + 1}"
                assert every[HISTORY_LINES] == f"quiet | {started}"
                assert every[-1] == f"quiet | {lines[-1]}"
                assert len(every) == len(set(every)), "a line shown twice"
                await pilot.press("q")

        asyncio.run(scenario())
