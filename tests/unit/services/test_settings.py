"""What a service reads from its environment: its data folder and its numbers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hearthlink_trio.services.common.settings import ConfigurationError, service_data_dir


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277], ids=["0000", "0022", "0277"])
def test_the_service_data_folder_is_owner_only_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int
) -> None:
    monkeypatch.setenv("HEARTHLINK_DATA_DIR", str(tmp_path / "data"))
    old = os.umask(umask)
    try:
        folder = service_data_dir("core")
    finally:
        os.umask(old)
    assert folder == tmp_path / "data" / "core"
    assert folder.stat().st_mode & 0o777 == 0o700


def test_no_data_dir_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEARTHLINK_DATA_DIR", raising=False)
    with pytest.raises(ConfigurationError, match="HEARTHLINK_DATA_DIR is not set"):
        service_data_dir("core")
