"""``hearthlink logs TABLE`` of a replicated table: every replica's lines, each prefixed with
its replica's name, instead of asking for one."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.stack import Stack, all_gone, run_command, running


def test_logs_of_a_replicated_table_interleaves_its_replicas(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add("web", replicas=2)
    config = stack.write()
    port = stack.port("web")
    with running(config) as sup:
        sup.wait_line("^web-1 service is healthy$")
        sup.wait_line("^web-2 service is healthy$")
        result = run_command("logs", "web", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        lines = sorted(result.stdout.splitlines())
        assert [line.rsplit(" pid ", 1)[0] for line in lines] == [
            f"web-1 | web-1 listening on {port}",
            f"web-2 | web-2 listening on {port + 1}",
        ]
        one = run_command("logs", "web-2", "--config", str(config), cwd=tmp_path)
        assert one.stdout.startswith(f"web-2 listening on {port + 1}")  # one replica: as is
        pids = stack.pids()
        sup.signal(signal.SIGINT)
        assert sup.wait() == 0
    all_gone(pids)
    # After the run: the shutdown lines too, each file's block whole.
    after = run_command("logs", "web", "-n", "5", "--config", str(config), cwd=tmp_path)
    blocks = [line.split(" | ", 1)[0] for line in after.stdout.splitlines()]
    assert sorted(blocks) == ["web-1", "web-1", "web-2", "web-2"]
    assert blocks in (["web-1"] * 2 + ["web-2"] * 2, ["web-2"] * 2 + ["web-1"] * 2)
    assert "web-1 | web-1 got SIGTERM, shutting down" in after.stdout.splitlines()
