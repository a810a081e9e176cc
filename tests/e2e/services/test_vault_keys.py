"""Vault key files and key rotation, checked through the real Vault process."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hearthlink_trio.services.vault.keys import (
    decode_key,
    generate_key,
    load_or_create_key,
    rotate_key,
)
from hearthlink_trio.services.vault.store import VaultLock
from tests.e2e.services.common import VAULT, vault
from tests.e2e.services.test_vault import EX_CONFIG, JSON_VALUES, audit_entries, verify
from tests.helpers import start_refused

RECORDS: dict[str, Any] = {f"r{i}": value for i, value in enumerate(JSON_VALUES[:6])}


def key_file(data_dir: Path) -> Path:
    return data_dir / "vault.key"


def new_key_file(data_dir: Path) -> Path:
    return data_dir / "vault.key.new"


def populate(data_dir: Path, key: str) -> None:
    with vault(data_dir, key) as service, service.client() as client:
        for name, value in RECORDS.items():
            assert client.put(f"/v1/memories/rot/{name}", json={"value": value}).is_success


def assert_readable(data_dir: Path, key: str) -> None:
    """The real Vault, started with ``key``, serves every record and a sound audit log."""
    with vault(data_dir, key) as service, service.client() as client:
        for name, value in RECORDS.items():
            response = client.get(f"/v1/memories/rot/{name}")
            assert response.status_code == 200, response.text
            assert json.dumps(response.json()["value"]) == json.dumps(value)
        assert verify(client)["ok"] is True


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# --- load_or_create_key ---------------------------------------------------------------


def test_load_or_create_key_makes_one_private_key_and_keeps_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    with umask(0):  # even the most permissive umask does not widen the files
        key = load_or_create_key(data_dir)
    assert len(decode_key(key, source="test")) == 32
    assert key_file(data_dir).read_text() == key + "\n"
    assert key_file(data_dir).stat().st_mode & 0o777 == 0o600
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert load_or_create_key(data_dir) == key
    assert sorted(p.name for p in data_dir.iterdir()) == ["vault.key"]  # no temp file left
    # The key the supervisor would pass opens what the Vault writes.
    populate(data_dir, key)
    assert_readable(data_dir, load_or_create_key(data_dir))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a key\n", "not base64"),
        (base64.b64encode(b"k" * 16) + b"\n", "decodes to 16 bytes"),
        (b"\xff\xfe\x00garbage", "not base64"),
        (b"", "decodes to 0 bytes"),
        (b"A" * 5000, "larger than a key"),
    ],
)
def test_a_malformed_key_file_is_a_clear_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = key_file(tmp_path)
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ValueError, match=message) as error:
        load_or_create_key(tmp_path)
    assert str(path) in str(error.value)
    assert path.read_bytes() == content  # never replaced


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = generate_key()
    key_file(tmp_path).write_text(key + "\n")
    key_file(tmp_path).chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        load_or_create_key(tmp_path)


def test_no_new_key_is_made_up_for_existing_data(tmp_path: Path) -> None:
    populate(tmp_path, load_or_create_key(tmp_path))
    key_file(tmp_path).unlink()
    with pytest.raises(ValueError, match="holds encrypted Vault data"):
        load_or_create_key(tmp_path)
    assert not key_file(tmp_path).exists()


# --- rotation -------------------------------------------------------------------------


def ciphertexts(data_dir: Path) -> list[bytes]:
    conn = sqlite3.connect(data_dir / "vault" / "vault.db")
    try:
        return [row[0] for row in conn.execute("SELECT ciphertext FROM records")]
    finally:
        conn.close()


def test_rotate_key_re_encrypts_everything_and_replaces_the_key_file(tmp_path: Path) -> None:
    old = load_or_create_key(tmp_path)
    populate(tmp_path, old)
    before = ciphertexts(tmp_path)

    new = rotate_key(tmp_path)

    assert new != old
    assert key_file(tmp_path).read_text().strip() == new
    assert key_file(tmp_path).stat().st_mode & 0o777 == 0o600
    assert not new_key_file(tmp_path).exists()
    # No ciphertext of the retired key is left in the database files (WAL included).
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "vault").glob("vault.db*"))
    assert not [c for c in before if c[:32] in on_disk]
    assert_readable(tmp_path, new)
    assert [e["op"] for e in audit_entries(tmp_path)].count("rotate_key") == 1
    refused = start_refused(VAULT, tmp_path, HEARTHLINK_VAULT_KEY=old)
    assert refused.returncode == EX_CONFIG
    assert "does not match" in refused.stderr


def test_rotate_key_with_the_key_from_the_environment(tmp_path: Path) -> None:
    old = generate_key()
    populate(tmp_path, old)
    new = rotate_key(tmp_path, current_key=old)
    assert not key_file(tmp_path).exists()  # the environment holds the key, not a file
    # ... but a crash right after the commit must not lose the new key: it is on disk.
    assert new_key_file(tmp_path).read_text().strip() == new
    assert new_key_file(tmp_path).stat().st_mode & 0o777 == 0o600
    assert_readable(tmp_path, new)
    # A user who later drops the environment key gets a key file made (as the supervisor
    # does), and the Vault started with it adopts the kept key instead.
    provisioned = load_or_create_key(tmp_path)
    assert provisioned != new
    assert_readable(tmp_path, provisioned)
    assert key_file(tmp_path).read_text().strip() == new
    assert not new_key_file(tmp_path).exists()


def test_rotate_key_refuses_a_wrong_key_no_key_and_a_running_vault(tmp_path: Path) -> None:
    old = generate_key()
    populate(tmp_path, old)
    with pytest.raises(ValueError, match="does not match the Vault data"):
        rotate_key(tmp_path, current_key=generate_key())
    with pytest.raises(ValueError, match="not a valid Vault key"):
        rotate_key(tmp_path, current_key="short")
    with pytest.raises(ValueError, match="no Vault key at"):
        rotate_key(tmp_path)
    with vault(tmp_path, old), pytest.raises(ValueError, match="in use by pid"):
        rotate_key(tmp_path, current_key=old)
    assert not new_key_file(tmp_path).exists()
    assert_readable(tmp_path, old)


def test_rotate_key_refuses_when_a_record_fails_authentication(tmp_path: Path) -> None:
    old = generate_key()
    populate(tmp_path, old)
    conn = sqlite3.connect(tmp_path / "vault" / "vault.db", isolation_level=None)
    try:
        conn.execute("UPDATE records SET ciphertext = x'00' || ciphertext WHERE key = 'r2'")
    finally:
        conn.close()
    with pytest.raises(ValueError, match="record rot/r2 fails authentication"):
        rotate_key(tmp_path, current_key=old)
    assert not new_key_file(tmp_path).exists()
    with vault(tmp_path, old) as service, service.client() as client:
        assert client.get("/v1/memories/rot/r1").status_code == 200
        assert client.get("/v1/memories/rot/r2").json()["error"] == "integrity"


# --- interrupted rotation -----------------------------------------------------------

CRASHING_ROTATION = """
import os, signal, sys
from pathlib import Path
from hearthlink_trio.services.vault import keys as vault_keys

def crash_at(step: str) -> None:
    if step == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)

vault_keys.rotation_checkpoint = crash_at
vault_keys.rotate_key(Path(sys.argv[1]), current_key=sys.argv[3] or None)
sys.exit(3)  # the step was never reached
"""


def crash_rotation(data_dir: Path, step: str, current_key: str = "") -> None:
    result = subprocess.run(
        [sys.executable, "-c", CRASHING_ROTATION, str(data_dir), step, current_key],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr


@pytest.mark.parametrize(
    ("step", "data_under"),
    [
        ("opened", "old"),
        ("new-key-written", "old"),
        ("record:3", "old"),  # mid-way through the records
        ("before-commit", "old"),
        ("committed", "new"),  # data re-keyed, key file not yet replaced
        ("done", "new"),
    ],
)
def test_an_interrupted_rotation_leaves_the_data_readable_with_a_key_on_disk(
    tmp_path: Path, step: str, data_under: str
) -> None:
    old = load_or_create_key(tmp_path)
    populate(tmp_path, old)

    crash_rotation(tmp_path, step)
    # What the supervisor passes the Vault: the key file's key (the old one until the
    # rotation's last rename).
    passed = key_file(tmp_path).read_text().strip()
    assert (passed == old) is (step != "done")

    on_disk = {key_file(tmp_path).read_text().strip()}
    new = None
    if new_key_file(tmp_path).exists():
        new = new_key_file(tmp_path).read_text().strip()
        on_disk.add(new)
    expected = old if data_under == "old" else (new or key_file(tmp_path).read_text().strip())
    assert expected in on_disk
    if data_under == "new":
        assert expected != old

    # The Vault, started with that key, settles on the right key file, removes the other
    # and serves every record.
    assert_readable(tmp_path, passed)
    assert not new_key_file(tmp_path).exists()
    assert key_file(tmp_path).read_text().strip() == expected
    assert_readable(tmp_path, expected)
    # And the settled state rotates cleanly again.
    again = rotate_key(tmp_path)
    assert key_file(tmp_path).read_text().strip() == again != expected
    assert_readable(tmp_path, again)


def test_an_interrupted_rotation_of_an_environment_key_keeps_the_new_key(tmp_path: Path) -> None:
    old = generate_key()
    populate(tmp_path, old)
    crash_rotation(tmp_path, "committed", current_key=old)
    new = new_key_file(tmp_path).read_text().strip()
    refused = start_refused(VAULT, tmp_path, HEARTHLINK_VAULT_KEY=old)
    assert refused.returncode == EX_CONFIG
    # The refusal points at the key that opens the data.
    assert str(new_key_file(tmp_path)) in refused.stderr
    assert_readable(tmp_path, new)


def test_settling_refuses_when_neither_key_matches(tmp_path: Path) -> None:
    old = load_or_create_key(tmp_path)
    populate(tmp_path, old)
    wrong = generate_key()
    key_file(tmp_path).write_text(wrong + "\n")
    new_key_file(tmp_path).write_text(generate_key() + "\n")
    new_key_file(tmp_path).chmod(0o600)
    refused = start_refused(VAULT, tmp_path, HEARTHLINK_VAULT_KEY=wrong)
    assert refused.returncode == EX_CONFIG
    assert "neither" in refused.stderr
    assert key_file(tmp_path).exists() and new_key_file(tmp_path).exists()  # nothing removed


def test_settling_waits_for_no_one_while_a_rotation_holds_the_lock(tmp_path: Path) -> None:
    old = load_or_create_key(tmp_path)
    populate(tmp_path, old)
    new_key_file(tmp_path).write_text(generate_key() + "\n")
    new_key_file(tmp_path).chmod(0o600)
    with VaultLock.hold(tmp_path / "vault", purpose="test"):
        refused = start_refused(VAULT, tmp_path, HEARTHLINK_VAULT_KEY=old)
    assert refused.returncode == EX_CONFIG
    assert "in use by pid" in refused.stderr
    assert new_key_file(tmp_path).exists()  # nothing settled without the lock
    assert_readable(tmp_path, old)
    assert not new_key_file(tmp_path).exists()
    assert key_file(tmp_path).read_text().strip() == old
