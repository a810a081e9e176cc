"""The lock file shared by the run lock and the Vault's lock, on real files and processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hearthlink_trio import lockfile
from hearthlink_trio.errors import PreflightError
from hearthlink_trio.lockfile import LockHeld
from hearthlink_trio.services.vault.store import VaultBusyError, VaultLock
from hearthlink_trio.supervisor.preflight import LOCK_NAME, acquire_lock


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_the_lock_is_owner_only_in_a_private_folder_and_names_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "new" / "x.lock"
    lock = lockfile.acquire(path)
    try:
        assert path.parent.stat().st_mode & 0o777 == 0o700
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.read_text() == f"{os.getpid()}\n"
        assert lock.previous == ""
    finally:
        lock.release()
    lock.release()  # twice is harmless


def test_a_held_lock_is_refused_with_its_holder_and_nothing_left_open(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    first = lockfile.acquire(path)
    try:
        before = _open_fds()
        with pytest.raises(LockHeld) as refused:
            lockfile.acquire(path)
        assert refused.value.holder == str(os.getpid())
        assert refused.value.path == path
        assert _open_fds() == before
    finally:
        first.release()
    again = lockfile.acquire(path)  # released: free again
    assert again.previous == str(os.getpid())
    again.release()


def test_what_the_file_held_before_is_reported_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    path.write_bytes(b"\x00\xffgarbage and more\n")
    lock = lockfile.acquire(path)
    try:
        assert lock.previous == "\x00\ufffdgarbage and more"
        assert path.read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()


@pytest.mark.parametrize("before", ["", "7", "9" * 30, "our own pid"])
def test_our_pid_replaces_a_shorter_longer_or_equal_content(tmp_path: Path, before: str) -> None:
    # Written over in place and cut to length (never emptied first: see acquire).
    if before == "our own pid":
        before = str(os.getpid())  # here, not in the ids: each test worker has its own
    path = tmp_path / "x.lock"
    path.write_text(f"{before}\n" if before else "")
    lock = lockfile.acquire(path)
    try:
        assert lock.previous == before
        assert path.read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()


def test_the_kernel_releases_the_lock_of_a_killed_holder(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    code = (
        "import sys; from pathlib import Path; from hearthlink_trio import lockfile; "
        f"lockfile.acquire(Path({str(path)!r})); print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(LockHeld) as refused:
            lockfile.acquire(path)
        assert refused.value.holder == str(holder.pid)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=5)
    lock = lockfile.acquire(path)
    assert lock.previous == str(holder.pid)
    lock.release()


def test_the_run_lock_and_the_vault_lock_keep_their_messages(tmp_path: Path) -> None:
    run_dir = tmp_path / "data" / "run"
    held = acquire_lock(run_dir)
    try:
        assert held.path == run_dir / LOCK_NAME
        with pytest.raises(PreflightError) as refused:
            acquire_lock(run_dir)
        assert str(refused.value) == (
            f"Another hearthlink supervisor (pid {os.getpid()}) is already running with data "
            f"dir {tmp_path / 'data'}; stop it first (hearthlink stop) or use another data dir"
        )
    finally:
        held.release()
    vault_dir = tmp_path / "vault"
    with VaultLock.hold(vault_dir, purpose="test"), pytest.raises(VaultBusyError) as busy:
        VaultLock.acquire(vault_dir, purpose="rotate the Vault key")
    assert str(busy.value) == (
        f"cannot rotate the Vault key: the Vault data in {vault_dir} is in use by pid "
        f"{os.getpid()} (a running Vault or a key rotation); stop it first (hearthlink stop)"
    )
    VaultLock.acquire(vault_dir, purpose="test").release()  # released by hold()


def test_the_lock_file_module_needs_only_the_stdlib() -> None:
    # Both the supervisor and the services import it: it must pull neither side's stack.
    src = str(Path(lockfile.__file__).parent.parent)
    code = (
        f"import sys; sys.path.insert(0, {src!r}); import json; "
        "import hearthlink_trio.lockfile; print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-I", "-c", code], capture_output=True, text=True, check=True
    )
    loaded = json.loads(out.stdout)
    ours = sorted(name for name in loaded if name.startswith("hearthlink_trio"))
    assert ours == ["hearthlink_trio", "hearthlink_trio._util", "hearthlink_trio.lockfile"]
    foreign = [
        name
        for name in loaded
        if name.split(".")[0] not in (*sys.stdlib_module_names, "hearthlink_trio", "__main__")
    ]
    assert foreign == []
