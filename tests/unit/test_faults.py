"""Bad files and failing writes: a malformed process-group record, a full disk."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from hearthlink_trio.process.groups import (
    GROUPS_NAME,
    GroupRecord,
    MalformedRecord,
    read_record,
    reap_leftovers,
)
from hearthlink_trio.supervisor.output import ServiceLog


@pytest.mark.parametrize(
    "text",
    ['["not", "an", "object"]', '{"svc": 12}', '{"svc": [1]}', '{"svc": ["a", 2]}', "{", "\xff"],
)
def test_a_malformed_group_record_is_named_not_a_traceback(tmp_path: Path, text: str) -> None:
    record = tmp_path / GROUPS_NAME
    record.write_text(text, encoding="latin-1")
    with pytest.raises(MalformedRecord):
        read_record(record)
    with pytest.raises(MalformedRecord):
        reap_leftovers(tmp_path)
    assert record.exists()  # left for the caller to move aside


def test_the_group_record_is_owner_only_and_complete(tmp_path: Path) -> None:
    groups = GroupRecord(tmp_path)
    groups.add("svc", 4242, 99)
    assert json.loads((tmp_path / GROUPS_NAME).read_text()) == {"svc": [4242, 99]}
    assert (tmp_path / GROUPS_NAME).stat().st_mode & 0o777 == 0o600
    assert read_record(tmp_path / GROUPS_NAME) == {4242: 99}
    assert not list(tmp_path.glob("*.tmp"))


def test_a_full_disk_is_reported_once_and_never_as_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # /dev/full fails every write with ENOSPC, as a full disk does.
    path = tmp_path / "logs" / "svc.log"
    path.parent.mkdir()
    os.symlink("/dev/full", path)
    reports: list[tuple[Path, OSError | None]] = []
    log = ServiceLog(
        path, max_bytes=1 << 30, backups=0, on_error=lambda p, e: reports.append((p, e))
    )
    for n in range(50):
        log.write([f"line {n}"])
    log.close()
    assert len(reports) == 1
    assert reports[0][0] == path
    assert isinstance(reports[0][1], OSError)
    assert "No space left on device" in str(reports[0][1])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "--- Logging error ---" not in captured.err


def test_a_log_that_can_be_written_again_says_so(tmp_path: Path) -> None:
    path = tmp_path / "svc.log"
    os.symlink("/dev/full", path)
    reports: list[OSError | None] = []
    log = ServiceLog(path, max_bytes=1 << 30, backups=0, on_error=lambda p, e: reports.append(e))
    log.write(["lost"])
    path.unlink()  # the disk has room again (a plain file now)
    log.write(["kept"])
    log.close()
    assert [r is None for r in reports] == [False, True]
    assert path.read_text() == "kept\n"
    logging.shutdown()
