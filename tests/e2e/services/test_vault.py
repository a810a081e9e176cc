"""The Vault against its real process over HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hearthlink_trio.services.vault.keys import generate_key
from tests.e2e.services import common
from tests.e2e.services.common import JSON, vault
from tests.helpers import (
    TOKEN,
    ServiceProcess,
    assert_error,
    health_ok,
    run_service,
    start_refused,
    wait_for,
)

MODULE = "hearthlink_trio.services.vault"
EX_CONFIG = 78


def verify(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/v1/audit/verify")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def audit_path(data_dir: Path) -> Path:
    return data_dir / "vault" / "audit.jsonl"


def audit_entries(data_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in audit_path(data_dir).read_bytes().splitlines()]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One Vault for the tests that only talk to it."""
    with vault(tmp_path_factory.mktemp("shared-vault"), generate_key()) as service:
        yield service


@pytest.fixture
def client(shared: ServiceProcess) -> Iterator[httpx.Client]:
    with shared.client() as c:
        yield c


# --- basics -------------------------------------------------------------------------


def test_health_is_open_and_has_the_spec_shape(shared: ServiceProcess) -> None:
    body = common.assert_open_health(shared, "vault-api")
    assert body["timestamp"].endswith("Z")
    assert "starting on http://127.0.0.1" in shared.output()


JSON_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -7,
    2**53 + 1,
    3.14159,
    -2.5e-300,
    "",
    'unicode ✓ 🔑 \u0000 "quoted" \\ back',
    [],
    [1, "a", None, [{}], 2.0],
    {},
    {"nested": {"deep": [1, 2, {"x": None, "y": [True, False]}]}, "ünï": "ok"},
    "x" * 100_000,
]


def test_round_trip_of_every_json_type(client: httpx.Client) -> None:
    for index, value in enumerate(JSON_VALUES):
        key = f"k{index}"
        put = client.put(f"/v1/memories/types/{key}", json={"value": value})
        assert put.status_code == 200, put.text
        meta = put.json()
        assert meta["namespace"] == "types"
        assert meta["key"] == key
        assert meta["version"] == 1
        assert meta["updated_at"].endswith("Z")
        got = client.get(f"/v1/memories/types/{key}")
        assert got.status_code == 200
        body = got.json()
        # Equal and of the same JSON types (True is not 1, 2.0 stays a float).
        assert json.dumps(body["value"]) == json.dumps(value)
        assert {k: body[k] for k in meta} == meta
    listed = client.get("/v1/memories/types").json()["items"]
    assert [item["key"] for item in listed] == sorted(f"k{i}" for i in range(len(JSON_VALUES)))
    assert all(set(item) == {"key", "version", "updated_at"} for item in listed)


def test_versions_count_up_and_delete_removes(client: httpx.Client) -> None:
    url = "/v1/memories/versions/counter"
    for expected in (1, 2, 3):
        response = client.put(url, json={"value": expected})
        assert response.json()["version"] == expected
    body = client.get(url).json()
    assert (body["version"], body["value"]) == (3, 3)
    assert client.delete(url).status_code == 204
    assert_error(client.get(url), 404, "not_found")
    assert_error(client.delete(url), 404, "not_found")
    assert client.get("/v1/memories/versions").json() == {"items": []}
    # A record created again after its deletion starts over.
    assert client.put(url, json={"value": "again"}).json()["version"] == 1


def test_runs_as_a_script_and_stops_within_two_seconds_of_sigterm(tmp_path: Path) -> None:
    env = {"HEARTHLINK_VAULT_KEY": generate_key()}
    started = time.monotonic()
    with run_service(f"{MODULE}.__main__", tmp_path, env=env, as_script=True) as service:
        ready = time.monotonic() - started
        common.assert_sigterm_stops_it_within_two_seconds(service)
    # Generous bound for a shared 2-core machine; the report gives the real figure.
    assert ready < 5.0


# --- confidentiality and integrity --------------------------------------------------


def files_containing(root: Path, needles: list[bytes]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [n.decode() for n in needles if n in data]
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


def test_no_plaintext_of_a_value_anywhere_in_the_data_directory(tmp_path: Path) -> None:
    canaries = {
        "string": "CANARY-string-5f1e2d3c",
        "object-key": {"CANARY-objkey-77aa91": 1},
        "nested": {"list": ["CANARY-nested-0b9c8d"], "n": 918273645546372819},
        "overwritten": "CANARY-old-version-4e4e4e",
        "deleted": "CANARY-deleted-6d6d6d",
    }
    needles = [
        b"CANARY-string-5f1e2d3c",
        b"CANARY-objkey-77aa91",
        b"CANARY-nested-0b9c8d",
        b"918273645546372819",
        b"CANARY-old-version-4e4e4e",
        b"CANARY-new-version-3f3f3f",
        b"CANARY-deleted-6d6d6d",
        b"CANARY-bulk-",
    ]
    with vault(tmp_path, generate_key()) as service, service.client() as client:
        for name, value in canaries.items():
            assert client.put(f"/v1/memories/secret/{name}", json={"value": value}).is_success
        # Enough 1 KiB records to fill WAL pages and trigger a checkpoint into vault.db.
        for i in range(600):
            value = f"CANARY-bulk-{i:05d}-" + "v" * 1000
            assert client.put(f"/v1/memories/bulk/r{i}", json={"value": value}).is_success
        client.put("/v1/memories/secret/overwritten", json={"value": "CANARY-new-version-3f3f3f"})
        assert client.delete("/v1/memories/secret/deleted").status_code == 204
        assert client.get("/v1/memories/secret/string").json()["value"] == canaries["string"]
        assert (tmp_path / "vault" / "vault.db-wal").exists()
        assert files_containing(tmp_path, needles) == {}
    assert files_containing(tmp_path, needles) == {}
    # The files are the owner's alone.
    for path in (tmp_path / "vault").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
    assert (tmp_path / "vault").stat().st_mode & 0o077 == 0


def db_execute(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Run SQL on the Vault's database from outside, as an intruder with file access."""
    conn = sqlite3.connect(data_dir / "vault" / "vault.db", timeout=5, isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_moved_or_altered_ciphertext_is_an_integrity_error(tmp_path: Path) -> None:
    records = {
        ("ns", "alpha"): "ALPHA-plaintext",
        ("ns", "beta"): "BETA-plaintext",
        ("ns", "gamma"): "GAMMA-plaintext",
        ("other", "alpha"): "OTHER-ALPHA-plaintext",
        ("ns", "delta"): "DELTA-plaintext",
        ("ns", "epsilon"): "EPSILON-plaintext",
    }
    with vault(tmp_path, generate_key()) as service, service.client() as client:
        for (ns, key), value in records.items():
            assert client.put(f"/v1/memories/{ns}/{key}", json={"value": value}).is_success
        nonce, ciphertext = db_execute(
            tmp_path,
            "SELECT nonce, ciphertext FROM records WHERE namespace = 'ns' AND key = 'alpha'",
        )[0]
        # alpha's sealed value copied onto another key, and onto the same key elsewhere.
        for ns, key in (("ns", "beta"), ("other", "alpha")):
            db_execute(
                tmp_path,
                "UPDATE records SET nonce = ?, ciphertext = ? WHERE namespace = ? AND key = ?",
                (nonce, ciphertext, ns, key),
            )
        # One bit flipped; and a version changed under an intact ciphertext.
        (gamma,) = db_execute(tmp_path, "SELECT ciphertext FROM records WHERE key = 'gamma'")[0]
        flipped = bytes([gamma[0] ^ 1]) + gamma[1:]
        db_execute(tmp_path, "UPDATE records SET ciphertext = ? WHERE key = 'gamma'", (flipped,))
        db_execute(tmp_path, "UPDATE records SET version = 7 WHERE key = 'delta'")
        # A sealed value turned into (invalid UTF-8) text.
        db_execute(
            tmp_path, "UPDATE records SET ciphertext = x'ff' || ciphertext WHERE key = 'epsilon'"
        )

        damaged = [("ns", "beta"), ("other", "alpha"), ("ns", "gamma"), ("ns", "delta")]
        damaged.append(("ns", "epsilon"))
        for ns, key in damaged:
            response = client.get(f"/v1/memories/{ns}/{key}")
            assert_error(response, 500, "integrity")
            assert "plaintext" not in response.text
        # The untouched record is still served, and so is the listing.
        assert client.get("/v1/memories/ns/alpha").json()["value"] == "ALPHA-plaintext"
        assert len(client.get("/v1/memories/ns").json()["items"]) == 5
        # A damaged record can be replaced, then it reads again.
        assert client.put("/v1/memories/ns/beta", json={"value": "fresh"}).is_success
        assert client.get("/v1/memories/ns/beta").json()["value"] == "fresh"
        assert verify(client)["ok"] is True
    outcomes = [(e["op"], e["key"], e["outcome"]) for e in audit_entries(tmp_path)]
    assert ("get", "beta", "integrity_error") in outcomes
    assert ("get", "gamma", "integrity_error") in outcomes


# --- keys at start-up ---------------------------------------------------------------


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def data_files(data_dir: Path) -> dict[str, str]:
    """Digests of the files that hold the Vault's data (a missing WAL reads as empty).

    ``vault.db-shm`` is SQLite's shared-memory index, rebuilt from the WAL by any reader.
    """
    folder = data_dir / "vault"
    names = ("vault.db", "vault.db-wal", "audit.jsonl")
    return {
        name: digest_of((folder / name).read_bytes() if (folder / name).exists() else b"")
        for name in names
    }


def test_wrong_key_is_refused_at_start_and_the_data_stays_intact(tmp_path: Path) -> None:
    right = generate_key()
    with vault(tmp_path, right) as service, service.client() as client:
        for i in range(20):
            client.put(f"/v1/memories/keep/r{i}", json={"value": {"i": i}})
    # The Vault was killed (run_service ends with SIGKILL), so its last writes are still in
    # the WAL: the refused start must not even checkpoint them into vault.db.
    before = data_files(tmp_path)
    assert before["vault.db-wal"] != digest_of(b"")

    refused = start_refused(MODULE, tmp_path, HEARTHLINK_VAULT_KEY=generate_key())
    assert refused.returncode == EX_CONFIG, refused.stderr
    assert "does not match the data" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert data_files(tmp_path) == before

    with vault(tmp_path, right) as service, service.client() as client:
        for i in range(20):
            assert client.get(f"/v1/memories/keep/r{i}").json()["value"] == {"i": i}
        assert verify(client) == {"ok": True, "entries": 40}  # 20 puts, 20 gets


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (None, "HEARTHLINK_VAULT_KEY is not set"),
        ("", "HEARTHLINK_VAULT_KEY is not set"),
        ("not base64 at all!!", "not base64"),
        ("c2hvcnQta2V5LTE2Ynl0ZQ==", "decodes to 16 bytes"),
    ],
)
def test_missing_or_malformed_key_is_a_clear_start_up_error(
    tmp_path: Path, key: str | None, message: str
) -> None:
    env = {} if key is None else {"HEARTHLINK_VAULT_KEY": key}
    refused = start_refused(MODULE, tmp_path, **env)
    assert refused.returncode == EX_CONFIG
    assert message in refused.stderr
    assert "Traceback" not in refused.stderr
    if key:
        assert key not in refused.stderr + refused.stdout


def test_a_second_vault_on_the_same_data_is_refused(tmp_path: Path) -> None:
    key = generate_key()
    with vault(tmp_path, key) as service:
        refused = start_refused(MODULE, tmp_path, HEARTHLINK_VAULT_KEY=key)
        assert refused.returncode == EX_CONFIG
        assert "in use by pid" in refused.stderr
        assert health_ok(f"{service.url}/health")


# --- durability ---------------------------------------------------------------------


#: A record's acknowledged version and value.
Ack = tuple[int, str]


class Writers:
    """Threads writing 1 KiB values as fast as acknowledgements come, noting each ack."""

    def __init__(self, service: ServiceProcess, round_no: int, acked: dict[str, Ack]) -> None:
        self.service = service
        self.round_no = round_no
        self.acked = acked
        self.count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(w,)) for w in range(4)]

    def __enter__(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def reached(self, count: int) -> Callable[[], bool]:
        return lambda: self.count >= count

    def _write(self, worker: int) -> None:
        with self.service.client() as client:
            i = 0
            while not self._stop.is_set():
                # Worker 0 overwrites one record (versions); the others create new ones.
                name = "counter" if worker == 0 else f"r{self.round_no}-w{worker}-{i}"
                value = f"{name}#{i}:" + "x" * 1000
                try:
                    response = client.put(f"/v1/memories/kill/{name}", json={"value": value})
                except httpx.TransportError:
                    return  # the kill
                assert response.status_code == 200, response.text
                with self._lock:
                    self.acked[name] = (response.json()["version"], value)
                    self.count += 1
                i += 1


def check_acknowledged(client: httpx.Client, acked: dict[str, Ack]) -> None:
    for name, (version, value) in sorted(acked.items()):
        got = client.get(f"/v1/memories/kill/{name}")
        assert got.status_code == 200, (name, got.text)
        body = got.json()
        if name == "counter":
            # An overwrite in flight at the kill may have committed after the last ack.
            assert body["version"] >= version
            assert body["value"] == value or body["version"] > version
        else:
            assert (body["version"], body["value"]) == (version, value)


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    """Several rounds: writers in flight, SIGKILL right after acks, restart, all there."""
    key = generate_key()
    acked: dict[str, Ack] = {}
    acks = 0
    for round_no in range(3):
        with vault(tmp_path, key) as service:
            with service.client() as client:
                check_acknowledged(client, acked)
                assert verify(client)["ok"] is True
            with Writers(service, round_no, acked) as writers:
                wait_for(writers.reached(200), timeout=60, what="200 acknowledged writes")
                service.proc.kill()
                service.proc.wait()
            acks += writers.count
    with vault(tmp_path, key) as service, service.client() as client:
        check_acknowledged(client, acked)
        assert acks >= 3 * 200
        # Each kill may have cut off one committed entry's log line; the restart repaired it.
        result = verify(client)
        assert result["ok"] is True, result


# --- audit --------------------------------------------------------------------------


def test_audit_log_records_every_operation_without_values(tmp_path: Path) -> None:
    with vault(tmp_path, generate_key()) as service, service.client() as client:
        client.put("/v1/memories/a/k", json={"value": "SECRET-VALUE-1"})
        client.get("/v1/memories/a/k")
        client.get("/v1/memories/a/missing")
        client.get("/v1/memories/a")
        client.delete("/v1/memories/a/k")
        client.put("/v1/memories/a/.bad", json={"value": 1})
        client.put(
            "/v1/memories/a/k", content=b"{nope", headers={"content-type": "application/json"}
        )
        with service.client(token="wrong") as intruder:
            intruder.get("/v1/memories/a/k")
        with service.client(token=None) as anonymous:
            anonymous.get("/v1/audit/verify")
        assert verify(client) == {"ok": True, "entries": 9}
    entries = audit_entries(tmp_path)
    assert [(e["seq"], e["op"], e["outcome"]) for e in entries] == [
        (1, "put", "ok"),
        (2, "get", "ok"),
        (3, "get", "not_found"),
        (4, "list", "ok"),
        (5, "delete", "ok"),
        (6, "put", "rejected"),
        (7, "put", "rejected"),
        (8, "get", "denied"),
        (9, "verify", "denied"),
        (10, "verify", "ok"),
    ]
    assert entries[5]["reason"] == "invalid key" and entries[5]["key"] is None
    assert entries[6]["reason"] == "malformed JSON"
    assert entries[7]["reason"] == "wrong bearer token"
    assert entries[8]["reason"] == "missing bearer token"
    required = {"seq", "ts", "op", "namespace", "key", "outcome", "prev_hash", "hash"}
    for previous, entry in zip([None, *entries], entries, strict=False):
        assert required <= set(entry) <= required | {"reason"}
        assert common.UTC_MS.fullmatch(entry["ts"]), entry["ts"]
        assert entry["prev_hash"] == (previous["hash"] if previous else "0" * 64)
    assert b"SECRET-VALUE-1" not in audit_path(tmp_path).read_bytes()
    assert TOKEN.encode() not in audit_path(tmp_path).read_bytes()


def test_audit_verify_finds_edited_removed_and_cut_off_lines(tmp_path: Path) -> None:
    path = audit_path(tmp_path)
    with vault(tmp_path, generate_key()) as service, service.client() as client:
        for i in range(8):
            client.put(f"/v1/memories/log/k{i}", json={"value": i})
        assert verify(client) == {"ok": True, "entries": 8}

        def tampered(change: Callable[[list[bytes]], list[bytes]]) -> dict[str, Any]:
            """Verify with the file changed, then put back what was there (plus new lines)."""
            original = path.read_bytes()
            changed = b"".join(change(original.splitlines(keepends=True)))
            path.write_bytes(changed)
            result = verify(client)
            appended = path.read_bytes()[len(changed) :]
            path.write_bytes(original + appended)
            return result

        def edit(lines: list[bytes]) -> list[bytes]:
            lines[2] = lines[2].replace(b'"key":"k2"', b'"key":"k9"')
            return lines

        result = tampered(edit)
        assert result == {"ok": False, "entries": 9, "first_bad_seq": 3}
        assert verify(client)["ok"] is True  # put back: the chain holds again

        def forge(lines: list[bytes]) -> list[bytes]:
            # Edit a line and recompute every hash from there with plain SHA-256, as
            # someone without the Vault key would have to: the keyed chain still fails.
            prev = json.loads(lines[3])["prev_hash"]
            for index in range(3, len(lines)):
                entry = json.loads(lines[index])
                if index == 3:
                    entry["outcome"] = "not_found"
                entry["prev_hash"] = prev
                del entry["hash"]
                canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"))
                entry["hash"] = prev = hashlib.sha256(canonical.encode()).hexdigest()
                lines[index] = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
            return lines

        assert tampered(forge)["first_bad_seq"] == 4

        result = tampered(lambda lines: lines[:4] + lines[5:])
        assert result["ok"] is False and result["first_bad_seq"] == 5

        result = tampered(lambda lines: lines[:5] + lines[6:7] + lines[5:6] + lines[7:])
        assert result["ok"] is False and result["first_bad_seq"] == 6

        assert verify(client)["ok"] is True
        # Cutting off the tail leaves a chain that is valid as far as it goes; the
        # database's anchor is what shows it is short.
        entries_before = len(path.read_bytes().splitlines())
        result = tampered(lambda lines: lines[:-2])
        assert result == {
            "ok": False,
            "entries": entries_before - 2,
            "first_bad_seq": entries_before - 1,
        }


def test_audit_tail_after_a_crash_is_restored_but_a_cut_tail_is_reported(tmp_path: Path) -> None:
    key = generate_key()
    path = audit_path(tmp_path)
    with vault(tmp_path, key) as service, service.client() as client:
        for i in range(5):
            client.put(f"/v1/memories/t/k{i}", json={"value": i})
    # What a kill between commit and log append leaves: the last line missing.
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][:17])  # and a torn fragment
    with vault(tmp_path, key) as service, service.client() as client:
        assert verify(client) == {"ok": True, "entries": 6}
        assert "restored entry 5" in service.output()
    recover = audit_entries(tmp_path)[5]
    assert (recover["op"], recover["outcome"]) == ("recover", "repaired")
    assert "restored entry 5" in recover["reason"]

    # Two lines gone is not a crash: reported, not papered over.
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))
    with vault(tmp_path, key) as service, service.client() as client:
        result = verify(client)
        assert result["ok"] is False
        assert result["first_bad_seq"] == len(lines) - 1


def test_a_new_database_does_not_inherit_an_orphaned_audit_log(tmp_path: Path) -> None:
    key = generate_key()
    with vault(tmp_path, key) as service, service.client() as client:
        client.put("/v1/memories/o/k", json={"value": 1})
    for path in (tmp_path / "vault").glob("vault.db*"):
        path.unlink()  # the user starts over, forgetting the audit log
    with vault(tmp_path, key) as service, service.client() as client:
        assert verify(client) == {"ok": True, "entries": 0}
        assert "audit log of the old one was moved" in service.output()
    assert len(list((tmp_path / "vault").glob("audit.jsonl.orphaned-*"))) == 1


# --- auth -----------------------------------------------------------------------------

PROTECTED = [
    ("PUT", "/v1/memories/authns/k", {"value": 1}),
    ("GET", "/v1/memories/authns/k", None),
    ("DELETE", "/v1/memories/authns/k", None),
    ("GET", "/v1/memories/authns", None),
    ("GET", "/v1/audit/verify", None),
]


@pytest.mark.parametrize("authorization", common.BAD_AUTHORIZATIONS)
def test_every_route_but_health_needs_the_token(
    shared: ServiceProcess, client: httpx.Client, authorization: str | None
) -> None:
    common.assert_only_health_is_open(shared, authorization, PROTECTED)
    # The refused PUT wrote nothing.
    assert_error(client.get("/v1/memories/authns/k"), 404)


# --- malformed input -------------------------------------------------------------------

LONG = "n" * 129
MALFORMED = [
    ("PUT", "/v1/memories/ns/.hidden", JSON, b'{"value":1}', 422, "validation_error"),
    ("PUT", "/v1/memories/%2E%2E/k", JSON, b'{"value":1}', 422, "validation_error"),
    ("PUT", "/v1/memories/ns/%2E", JSON, b'{"value":1}', 422, "validation_error"),
    ("PUT", f"/v1/memories/ns/{LONG}", JSON, b'{"value":1}', 422, "validation_error"),
    ("PUT", f"/v1/memories/{LONG}/k", JSON, b'{"value":1}', 422, "validation_error"),
    ("PUT", "/v1/memories/ns/a%20b", JSON, b'{"value":1}', 422, "validation_error"),
    ("PUT", "/v1/memories/ns/a%0A", JSON, b'{"value":1}', 422, "validation_error"),
    ("PUT", "/v1/memories/ns/caf%C3%A9", JSON, b'{"value":1}', 422, "validation_error"),
    ("PUT", "/v1/memories/ns/a:b", JSON, b'{"value":1}', 422, "validation_error"),
    ("GET", "/v1/memories/ns/.x", {}, None, 422, "validation_error"),
    ("DELETE", "/v1/memories/ns/.x", {}, None, 422, "validation_error"),
    ("GET", "/v1/memories/..x", {}, None, 422, "validation_error"),
    ("PUT", "/v1/memories/ns/a%2Fb", JSON, b'{"value":1}', 404, "not_found"),
    ("PUT", "/v1/memories/ns/k", JSON, b"", 400, "bad_request"),
    ("PUT", "/v1/memories/ns/k", JSON, b"   ", 400, "bad_request"),
    ("PUT", "/v1/memories/ns/k", JSON, b"{not json", 400, "bad_request"),
    ("PUT", "/v1/memories/ns/k", JSON, b'{"value": NaN}', 400, "bad_request"),
    ("PUT", "/v1/memories/ns/k", JSON, b'{"value": -Infinity}', 400, "bad_request"),
    ("PUT", "/v1/memories/ns/k", JSON, b'{"value": 1e999}', 400, "bad_request"),
    ("PUT", "/v1/memories/ns/k", JSON, b'{"value": ' + b"9" * 5000 + b"}", 400, None),
    ("PUT", "/v1/memories/ns/k", JSON, b'{"value": "\xff\xfe"}', 400, "bad_request"),
    ("PUT", "/v1/memories/ns/k", JSON, b'\xef\xbb\xbf{"value": 1}', 400, "bad_request"),
    ("PUT", "/v1/memories/ns/k", JSON, b'{"value": 1} trailing', 400, "bad_request"),
    (
        "PUT",
        "/v1/memories/ns/k",
        JSON,
        b'{"value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        400,
        "bad_request",
    ),
    ("PUT", "/v1/memories/ns/k", JSON, b"[1, 2]", 422, "validation_error"),
    ("PUT", "/v1/memories/ns/k", JSON, b'"value"', 422, "validation_error"),
    ("PUT", "/v1/memories/ns/k", JSON, b"null", 422, "validation_error"),
    ("PUT", "/v1/memories/ns/k", JSON, b'{"val": 1}', 422, "validation_error"),
    ("PUT", "/v1/memories/ns/k", JSON, b'{"value": 1, "extra": 2}', 422, "validation_error"),
    (
        "PUT",
        "/v1/memories/ns/k",
        {"content-type": "text/plain"},
        b'{"value":1}',
        400,
        "bad_request",
    ),
    (
        "PUT",
        "/v1/memories/ns/k",
        {"content-type": "application/x-www-form-urlencoded"},
        b"value=1",
        400,
        "bad_request",
    ),
    (
        "PUT",
        "/v1/memories/ns/k",
        {"content-type": "application/json; charset=latin-1"},
        b'{"value":1}',
        400,
        "bad_request",
    ),
    ("POST", "/v1/memories/ns/k", JSON, b'{"value":1}', 405, "method_not_allowed"),
    ("PATCH", "/v1/memories/ns/k", JSON, b'{"value":1}', 405, "method_not_allowed"),
    ("PUT", "/v1/memories/ns", JSON, b'{"value":1}', 405, "method_not_allowed"),
    ("DELETE", "/v1/audit/verify", {}, None, 405, "method_not_allowed"),
    ("GET", "/v1/memories/ns/k/", {}, None, 404, "not_found"),
    ("GET", "/v1/memories/ns/", {}, None, 404, "not_found"),
    ("GET", "/v1/memories//k", {}, None, 404, "not_found"),
    ("GET", "/v1/memories", {}, None, 404, "not_found"),
    ("GET", "/v1/memories/ns/k/extra", {}, None, 404, "not_found"),
    ("GET", "/v1/nothing", {}, None, 404, "not_found"),
]


@pytest.mark.parametrize("case", MALFORMED, ids=common.malformed_id)
def test_malformed_input_gets_its_4xx(client: httpx.Client, case: tuple[Any, ...]) -> None:
    common.assert_refused(client, *case)


def test_a_body_not_declared_json_is_400_saying_so(client: httpx.Client) -> None:
    common.assert_not_json_is_400(client, "PUT", "/v1/memories/ns/k", b'{"value": 1}')
    assert_error(client.get("/v1/memories/ns/k"), 404)


def test_body_size_limit_is_1_mib_chunked_or_not(client: httpx.Client) -> None:
    limit = common.MIB
    prefix, suffix = b'{"value":"', b'"}'
    exact = prefix + b"a" * (limit - len(prefix) - len(suffix)) + suffix
    assert len(exact) == limit
    accepted = client.put("/v1/memories/big/exact", content=exact, headers=JSON)
    assert accepted.status_code == 200, accepted.text
    assert len(client.get("/v1/memories/big/exact").json()["value"]) == len(exact) - 12

    over = prefix + b"a" * (limit - len(prefix) - len(suffix) + 1) + suffix
    common.assert_too_large(client, "PUT", "/v1/memories/big/over", over)
    chunks = common.chunks_over_1_mib(prefix, b"a", suffix)
    common.assert_too_large(client, "PUT", "/v1/memories/big/chunked", chunks)
    assert_error(client.get("/v1/memories/big/over"), 404)
    assert_error(client.get("/v1/memories/big/chunked"), 404)


def test_service_is_still_healthy_and_consistent_after_the_abuse(
    shared: ServiceProcess, client: httpx.Client
) -> None:
    common.assert_still_healthy(shared)
    assert verify(client)["ok"] is True
    assert os.path.exists(shared.log_path)
