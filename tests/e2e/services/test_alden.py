"""Alden against its real process over HTTP, with a real Vault (and without one)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hearthlink_trio.services.common.validation import MAX_MESSAGE_CHARS
from hearthlink_trio.services.vault.keys import generate_key
from tests.e2e.services import common
from tests.e2e.services.common import JSON, vault
from tests.helpers import JsonServer, ServiceProcess, assert_error, free_port, run_service, wait_for

MODULE = "hearthlink_trio.services.alden"


def alden_env(vault_url: str | None, **extra: str) -> dict[str, str]:
    env = {"HEARTHLINK_ALDEN_RESYNC_INTERVAL": "0.2"}
    if vault_url is not None:
        env["HEARTHLINK_VAULT_URL"] = vault_url
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def shared_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with vault(tmp_path_factory.mktemp("alden-vault"), generate_key()) as service:
        yield service


@pytest.fixture(scope="module")
def alden(
    tmp_path_factory: pytest.TempPathFactory, shared_vault: ServiceProcess
) -> Iterator[ServiceProcess]:
    data_dir = tmp_path_factory.mktemp("alden")
    with run_service(MODULE, data_dir, env=alden_env(shared_vault.url)) as service:
        wait_for(lambda: health(service)["memory_mode"] == "vault", timeout=10, what="vault mode")
        yield service


@pytest.fixture
def client(alden: ServiceProcess) -> Iterator[httpx.Client]:
    with alden.client() as c:
        yield c


@pytest.fixture
def vault_client(shared_vault: ServiceProcess) -> Iterator[httpx.Client]:
    with shared_vault.client() as c:
        yield c


def health(service: ServiceProcess) -> dict[str, Any]:
    with service.client(token=None) as anonymous:
        body: dict[str, Any] = anonymous.get("/health").json()
    return body


def chat(client: httpx.Client, message: str, session_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message}
    if session_id is not None:
        body["session_id"] = session_id
    response = client.post("/v1/chat", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def vault_records(vault_client: httpx.Client) -> dict[str, Any]:
    """Every record of namespace ``alden``: key -> the record with its value."""
    listing = vault_client.get("/v1/memories/alden")
    assert listing.status_code == 200, listing.text
    records = {}
    for item in listing.json()["items"]:
        records[item["key"]] = vault_client.get(f"/v1/memories/alden/{item['key']}").json()
    return records


# --- with the Vault ---------------------------------------------------------------------


def test_health_is_open_and_reports_the_memory_mode(alden: ServiceProcess) -> None:
    body = common.assert_open_health(alden, "alden-api")
    assert body["memory_mode"] == "vault"
    assert body["pending_memories"] == 0
    assert "alden-api" in alden.output()


def test_each_exchange_is_one_vault_record(
    client: httpx.Client, vault_client: httpx.Client
) -> None:
    before = vault_records(vault_client)
    answer = chat(client, "I keep my bicycle in the garden shed", session_id="s-1")
    assert answer["memory_mode"] == "vault"
    assert isinstance(answer["reply"], str) and answer["reply"]
    assert answer["recalled"] == []
    after = vault_records(vault_client)
    assert set(after) - set(before) == {answer["memory_key"]}
    record = after[answer["memory_key"]]
    assert record["version"] == 1
    value = record["value"]
    assert set(value) == {"user", "reply", "ts", "session_id"}
    assert value["user"] == "I keep my bicycle in the garden shed"
    assert value["reply"] == answer["reply"]
    assert value["session_id"] == "s-1"
    assert common.UTC_MS.fullmatch(value["ts"]), value["ts"]
    # Without a session id the record says null.
    second = chat(client, "The shed key hangs by the door")
    assert vault_records(vault_client)[second["memory_key"]]["value"]["session_id"] is None


def test_recall_draws_on_relevant_memories_only(
    client: httpx.Client, vault_client: httpx.Client
) -> None:
    chat(client, "My sister Marguerite lives in Lisbon")
    chat(client, "I had pasta for lunch today")
    answer = chat(client, "When should I visit Marguerite?")
    assert answer["recalled"] == ["My sister Marguerite lives in Lisbon"]
    assert "Marguerite lives in Lisbon" in answer["reply"]
    # Rarer shared words weigh more than common ones.
    chat(client, "Lunch with Marguerite was lovely")
    assert chat(client, "Lisbon trip for Marguerite")["recalled"][0] == (
        "My sister Marguerite lives in Lisbon"
    )
    # Nothing shared, nothing recalled.
    assert chat(client, "Zebras?")["recalled"] == []


def test_memories_written_to_the_vault_by_others_are_recalled_and_deleted_ones_forgotten(
    client: httpx.Client, vault_client: httpx.Client
) -> None:
    note = {"user": "My favourite colour is teal", "reply": "", "ts": "2025-01-01T00:00:00Z"}
    assert vault_client.put("/v1/memories/alden/note-colour", json={"value": note}).is_success
    assert vault_client.put(
        "/v1/memories/alden/note-plain", json={"value": "The wifi password is on the fridge"}
    ).is_success
    assert vault_client.put("/v1/memories/alden/not-a-memory", json={"value": [1, 2]}).is_success
    assert chat(client, "What is my favourite colour?")["recalled"] == [
        "My favourite colour is teal"
    ]
    assert chat(client, "where is the wifi password")["recalled"][0] == (
        "The wifi password is on the fridge"
    )
    listed = {item["key"]: item for item in client.get("/v1/memories?limit=1000").json()["items"]}
    assert listed["note-colour"]["user"] == "My favourite colour is teal"
    assert listed["note-colour"]["stored"] == "vault"
    assert "not-a-memory" not in listed

    assert vault_client.delete("/v1/memories/alden/note-colour").status_code == 204
    assert "My favourite colour is teal" not in chat(client, "favourite colour?")["recalled"]


def test_list_memories(client: httpx.Client) -> None:
    first = chat(client, "Remember the milk")
    second = chat(client, "Remember the eggs", session_id="shopping")
    items = client.get("/v1/memories").json()["items"]
    keys = [item["key"] for item in items]
    assert keys.index(first["memory_key"]) < keys.index(second["memory_key"])
    last = items[-1]
    assert last == {
        "key": second["memory_key"],
        "user": "Remember the eggs",
        "reply": second["reply"],
        "ts": last["ts"],
        "session_id": "shopping",
        "stored": "vault",
    }
    assert [item["key"] for item in client.get("/v1/memories?limit=1").json()["items"]] == [
        second["memory_key"]
    ]


PROTECTED = [
    ("POST", "/v1/chat", {"message": "hello"}),
    ("GET", "/v1/memories", None),
]


@pytest.mark.parametrize("authorization", common.BAD_AUTHORIZATIONS)
def test_every_route_but_health_needs_the_token(
    alden: ServiceProcess, vault_client: httpx.Client, authorization: str | None
) -> None:
    before = len(vault_records(vault_client))
    common.assert_only_health_is_open(alden, authorization, PROTECTED)
    assert len(vault_records(vault_client)) == before


MALFORMED = [
    ("POST", "/v1/chat", JSON, b"{not json", 400),
    ("POST", "/v1/chat", JSON, b"[" * 100_000 + b"]" * 100_000, 400),
    ("POST", "/v1/chat", {"content-type": "text/plain"}, b'{"message": "hi"}', 400, "bad_request"),
    ("POST", "/v1/chat", JSON, b"", 422),
    ("POST", "/v1/chat", JSON, b"{}", 422),
    ("POST", "/v1/chat", JSON, b'{"message": ""}', 422),
    ("POST", "/v1/chat", JSON, b'{"message": 42}', 422),
    ("POST", "/v1/chat", JSON, b'{"message": null}', 422),
    ("POST", "/v1/chat", JSON, b'{"message": "hi", "session_id": "../x"}', 422),
    ("POST", "/v1/chat", JSON, b'{"message": "hi", "session_id": ""}', 422),
    ("POST", "/v1/chat", JSON, b'{"message": "hi", "session_id": 7}', 422),
    ("POST", "/v1/chat", JSON, b'{"message": "hi", "extra": 1}', 422),
    ("POST", "/v1/chat", JSON, b'{"message": "' + b"x" * (MAX_MESSAGE_CHARS + 1) + b'"}', 422),
    ("GET", "/v1/memories?limit=0", {}, None, 422),
    ("GET", "/v1/memories?limit=many", {}, None, 422),
    ("GET", "/v1/chat", {}, None, 405),
    ("DELETE", "/v1/memories", {}, None, 405),
    ("POST", "/v1/chat/", JSON, b'{"message": "hi"}', 404),
    ("GET", "/v1/memories/", {}, None, 404),
    ("GET", "/v1//memories", {}, None, 404),
    ("GET", "/v1/nothing", {}, None, 404),
]


@pytest.mark.parametrize("case", MALFORMED, ids=common.malformed_id)
def test_malformed_requests_get_their_4xx(client: httpx.Client, case: tuple[Any, ...]) -> None:
    common.assert_refused(client, *case)


def test_body_size_limit_is_1_mib(client: httpx.Client) -> None:
    big = b'{"message": "' + b"a" * common.MIB + b'"}'
    common.assert_too_large(client, "POST", "/v1/chat", big)
    common.assert_too_large(client, "POST", "/v1/chat", common.chunks_over_1_mib())


def test_still_healthy_after_the_abuse(alden: ServiceProcess) -> None:
    common.assert_still_healthy(alden)
    assert health(alden)["memory_mode"] == "vault"


# --- without the Vault ---------------------------------------------------------------------


def test_without_a_vault_configured_it_works_in_memory_only_mode(tmp_path: Path) -> None:
    with run_service(MODULE, tmp_path, env=alden_env(None)) as alden, alden.client() as client:
        assert health(alden)["memory_mode"] == "memory-only"
        first = chat(client, "Our cat is named Pixel")
        assert first["memory_mode"] == "memory-only"
        answer = chat(client, "What does Pixel eat?")
        assert answer["recalled"] == ["Our cat is named Pixel"]
        items = client.get("/v1/memories").json()["items"]
        assert [item["stored"] for item in items] == ["memory", "memory"]


def test_vault_outage_memory_only_then_resync_without_loss_or_doubles(tmp_path: Path) -> None:
    key = generate_key()
    vault_dir = tmp_path / "vault-data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The default resync interval (1 s): the 5 s promise is checked as shipped.
    env = alden_env(url)
    del env["HEARTHLINK_ALDEN_RESYNC_INTERVAL"]
    with run_service(MODULE, tmp_path / "alden-data", env=env) as alden, alden.client() as client:
        with vault(vault_dir, key, port=port) as first_vault:
            wait_for(lambda: health(alden)["memory_mode"] == "vault", timeout=10)
            before = chat(client, "The spare key is under the blue flowerpot")
            assert before["memory_mode"] == "vault"
            assert first_vault.stop() in (0, -signal.SIGTERM)

        # From the first failed request on, Alden says it is memory-only.
        during = [chat(client, f"Outage note number {n} about the flowerpot") for n in range(3)]
        assert [answer["memory_mode"] for answer in during] == ["memory-only"] * 3
        assert health(alden)["memory_mode"] == "memory-only"
        assert health(alden)["pending_memories"] == 3
        # It keeps recalling, from memory.
        assert "The spare key is under the blue flowerpot" in during[0]["recalled"]
        stored = {
            item["key"]: item["stored"] for item in client.get("/v1/memories").json()["items"]
        }
        assert [stored[answer["memory_key"]] for answer in during] == ["pending"] * 3

        with vault(vault_dir, key, port=port) as second_vault, second_vault.client() as vc:
            back = time.monotonic()
            # By itself, with no request to Alden: poll only the Vault and /health.
            wait_for(
                lambda: (
                    health(alden)["memory_mode"] == "vault"
                    and health(alden)["pending_memories"] == 0
                ),
                timeout=10,
                interval=0.05,
                what="Alden to resync",
            )
            assert time.monotonic() - back < 5.0
            records = vault_records(vc)
            expected = [before, *during]
            assert set(records) == {answer["memory_key"] for answer in expected}
            assert all(record["version"] == 1 for record in records.values())
            for answer in expected:
                assert records[answer["memory_key"]]["value"]["reply"] == answer["reply"]
            assert chat(client, "after the outage")["memory_mode"] == "vault"
        assert "Traceback" not in alden.output()


def test_vault_down_at_start_then_up(tmp_path: Path) -> None:
    port = free_port()
    env = alden_env(f"http://127.0.0.1:{port}")
    with run_service(MODULE, tmp_path / "alden", env=env) as alden, alden.client() as client:
        wait_for(lambda: health(alden)["memory_mode"] == "memory-only", timeout=10)
        buffered = chat(client, "Written while no Vault ever answered")
        with vault(tmp_path / "vault", generate_key(), port=port) as v, v.client() as vc:
            wait_for(lambda: health(alden)["pending_memories"] == 0, timeout=10)
            assert set(vault_records(vc)) == {buffered["memory_key"]}


# --- the language model responder -------------------------------------------------------------


def test_llm_endpoint_gets_the_message_and_recalled_memories(tmp_path: Path) -> None:
    replies = iter(["Noted, I will remember the tortoise.", "Your tortoise is called Gerald."])

    def completions(path: str, body: object) -> tuple[int, object]:
        return 200, {"choices": [{"message": {"role": "assistant", "content": next(replies)}}]}

    with JsonServer(completions) as llm:
        env = alden_env(
            None,
            HEARTHLINK_LLM_URL=f"{llm.url}/v1",
            HEARTHLINK_LLM_API_KEY="sk-test",
            HEARTHLINK_LLM_MODEL="tiny-model",
        )
        with run_service(MODULE, tmp_path, env=env) as alden, alden.client() as client:
            assert chat(client, "My tortoise is named Gerald")["reply"] == (
                "Noted, I will remember the tortoise."
            )
            answer = chat(client, "What is my tortoise called?")
            assert answer["reply"] == "Your tortoise is called Gerald."
            assert answer["recalled"] == ["My tortoise is named Gerald"]
    request = llm.requests[-1]
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert isinstance(request.body, dict)
    assert request.body["model"] == "tiny-model"
    system, user = request.body["messages"]
    assert system["role"] == "system"
    assert "My tortoise is named Gerald" in system["content"]
    assert user == {"role": "user", "content": "What is my tortoise called?"}


def test_llm_failure_is_502_and_slowness_504_and_nothing_is_stored(tmp_path: Path) -> None:
    gate = threading.Event()

    def completions(path: str, body: object) -> tuple[int, object]:
        assert isinstance(body, dict)
        if body["messages"][-1]["content"] == "slow":
            gate.wait(timeout=10)
            return 200, {"choices": [{"message": {"content": "late"}}]}
        if body["messages"][-1]["content"] == "garbled":
            return 200, {"unexpected": True}
        return 500, {"error": "overloaded"}

    with JsonServer(completions) as llm:
        env = alden_env(None, HEARTHLINK_LLM_URL=llm.url, HEARTHLINK_LLM_TIMEOUT="0.5")
        try:
            with run_service(MODULE, tmp_path, env=env) as alden, alden.client() as client:
                assert_error(client.post("/v1/chat", json={"message": "fail"}), 502)
                assert_error(client.post("/v1/chat", json={"message": "garbled"}), 502)
                assert_error(client.post("/v1/chat", json={"message": "slow"}), 504, "timeout")
                assert client.get("/v1/memories").json() == {"items": []}
        finally:
            gate.set()
    assert llm.paths() == ["/chat/completions"] * 3


# --- lifecycle -------------------------------------------------------------------------------


def test_runs_as_a_script_and_stops_within_two_seconds_of_sigterm(tmp_path: Path) -> None:
    with run_service(f"{MODULE}.__main__", tmp_path, as_script=True) as alden:
        common.assert_sigterm_stops_it_within_two_seconds(alden)
    assert (tmp_path / "alden").is_dir()


def test_sigterm_with_the_vault_away_still_exits_within_two_seconds(tmp_path: Path) -> None:
    # A Vault address that accepts connections but never answers: the worst case.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        env = alden_env(url, HEARTHLINK_ALDEN_VAULT_TIMEOUT="0.3")
        with run_service(MODULE, tmp_path, env=env) as alden, alden.client() as c:
            wait_for(lambda: health(alden)["memory_mode"] == "memory-only", timeout=10)
            chat(c, "buffered while the Vault hangs")
            common.assert_sigterm_stops_it_within_two_seconds(alden)
            assert "could not be written to the Vault" in alden.output()
