"""Core against its real process over HTTP, calling a real Alden (and one that fails)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hearthlink_trio.services.common.validation import MAX_MESSAGE_CHARS
from tests.e2e.services import common
from tests.e2e.services.common import JSON
from tests.helpers import JsonServer, ServiceProcess, assert_error, run_service, start_refused

MODULE = "hearthlink_trio.services.core"
ALDEN = "hearthlink_trio.services.alden"


@pytest.fixture(scope="module")
def alden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A real Alden, memory-only (its Vault paths are tested with Alden)."""
    with run_service(ALDEN, tmp_path_factory.mktemp("core-alden")) as service:
        yield service


@pytest.fixture(scope="module")
def core(
    tmp_path_factory: pytest.TempPathFactory, alden: ServiceProcess
) -> Iterator[ServiceProcess]:
    env = {"HEARTHLINK_ALDEN_URL": alden.url}
    with run_service(MODULE, tmp_path_factory.mktemp("core"), env=env) as service:
        yield service


@pytest.fixture
def client(core: ServiceProcess) -> Iterator[httpx.Client]:
    with core.client() as c:
        yield c


def new_session(client: httpx.Client, *participants: str, title: str = "t") -> dict[str, Any]:
    response = client.post(
        "/v1/sessions", json={"title": title, "participants": list(participants)}
    )
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


def post(client: httpx.Client, session_id: str, author: str, content: str) -> httpx.Response:
    return client.post(
        f"/v1/sessions/{session_id}/messages", json={"author": author, "content": content}
    )


def messages(client: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/sessions/{session_id}/messages")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# --- sessions ---------------------------------------------------------------------------


def test_health_is_open_and_has_the_spec_shape(core: ServiceProcess) -> None:
    common.assert_open_health(core, "core-api")
    assert "core-api" in core.output()


def test_create_get_and_list_sessions(client: httpx.Client) -> None:
    session = new_session(client, "ann", "bob", title="Planning")
    assert set(session) == {
        "id",
        "title",
        "participants",
        "created_at",
        "next_participant",
        "message_count",
    }
    assert session["title"] == "Planning"
    assert session["participants"] == ["ann", "bob"]
    assert session["next_participant"] == "ann"
    assert session["message_count"] == 0
    assert session["created_at"].endswith("Z")
    assert client.get(f"/v1/sessions/{session['id']}").json() == session
    listed = client.get("/v1/sessions").json()["items"]
    assert session in listed
    other = new_session(client, "x")
    ids = [item["id"] for item in client.get("/v1/sessions").json()["items"]]
    assert ids.index(session["id"]) < ids.index(other["id"])
    assert_error(client.get("/v1/sessions/0123456789abcdef"), 404, "not_found")
    assert_error(client.get("/v1/sessions/0123456789abcdef/messages"), 404, "not_found")
    assert_error(post(client, "0123456789abcdef", "ann", "hi"), 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": "t"},
        {"participants": ["a"]},
        {"title": "", "participants": ["a"]},
        {"title": "   ", "participants": ["a"]},
        {"title": "t" * 201, "participants": ["a"]},
        {"title": 5, "participants": ["a"]},
        {"title": "t", "participants": []},
        {"title": "t", "participants": "ann"},
        {"title": "t", "participants": ["ann", "ann"]},
        {"title": "t", "participants": [".."]},
        {"title": "t", "participants": ["a b"]},
        {"title": "t", "participants": [""]},
        {"title": "t", "participants": [7]},
        {"title": "t", "participants": [f"p{n}" for n in range(33)]},
        {"title": "t", "participants": ["a"], "extra": True},
    ],
)
def test_invalid_sessions_are_refused(client: httpx.Client, body: dict[str, Any]) -> None:
    count = len(client.get("/v1/sessions").json()["items"])
    assert_error(client.post("/v1/sessions", json=body), 422, "validation_error")
    assert len(client.get("/v1/sessions").json()["items"]) == count


# --- turns -------------------------------------------------------------------------------


def test_round_robin_turns_409_out_of_turn_403_outsider(client: httpx.Client) -> None:
    session = new_session(client, "ann", "bob")
    sid = session["id"]
    first = post(client, sid, "ann", "hello bob")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["author"] == "ann"
    assert body["content"] == "hello bob"
    assert body["ts"].endswith("Z")
    assert body["next_participant"] == "bob"
    assert "reply" not in body and "agent_error" not in body

    out_of_turn = post(client, sid, "ann", "me again")
    assert_error(out_of_turn, 409, "conflict")
    assert "bob" in out_of_turn.json()["detail"]
    assert_error(post(client, sid, "carol", "let me in"), 403, "forbidden")
    assert post(client, sid, "bob", "hi ann").status_code == 201
    assert post(client, sid, "ann", "bye").json()["next_participant"] == "bob"

    items = messages(client, sid)
    assert [(m["author"], m["content"]) for m in items] == [
        ("ann", "hello bob"),
        ("bob", "hi ann"),
        ("ann", "bye"),
    ]
    assert all(set(m) == {"id", "author", "content", "ts"} for m in items)
    assert items[0]["id"] == body["id"]
    assert client.get(f"/v1/sessions/{sid}").json()["message_count"] == 3


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"author": "ann"},
        {"content": "x"},
        {"author": "ann", "content": ""},
        {"author": "ann", "content": 3},
        {"author": "a/b", "content": "x"},
        {"author": "ann", "content": "x" * (MAX_MESSAGE_CHARS + 1)},
        {"author": "ann", "content": "x", "extra": 1},
    ],
)
def test_invalid_messages_are_refused(client: httpx.Client, body: dict[str, Any]) -> None:
    sid = new_session(client, "ann")["id"]
    assert_error(client.post(f"/v1/sessions/{sid}/messages", json=body), 422)
    assert messages(client, sid) == []


def test_concurrent_posts_take_one_turn(client: httpx.Client, core: ServiceProcess) -> None:
    sid = new_session(client, "ann", "bob")["id"]
    statuses: list[int] = []
    start = threading.Barrier(4)

    def attempt(n: int) -> None:
        with core.client() as own:
            start.wait(timeout=10)
            statuses.append(post(own, sid, "ann", f"attempt {n}").status_code)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(statuses) == [201, 409, 409, 409]
    assert len(messages(client, sid)) == 1


# --- Alden taking its turn ----------------------------------------------------------------------


def test_alden_takes_its_turn(client: httpx.Client, alden: ServiceProcess) -> None:
    sid = new_session(client, "user", "alden")["id"]
    answer = post(client, sid, "user", "My tea is Darjeeling")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["author"] == "user"
    assert body["next_participant"] == "user"
    assert "agent_error" not in body
    reply = body["reply"]
    assert reply["author"] == "alden"
    assert "Darjeeling" in reply["content"]
    assert set(reply) == {"id", "author", "content", "ts"}

    second = post(client, sid, "user", "Which tea do I like? Darjeeling?").json()
    assert "My tea is Darjeeling" in second["reply"]["content"]
    assert [m["author"] for m in messages(client, sid)] == ["user", "alden", "user", "alden"]
    assert client.get(f"/v1/sessions/{sid}").json()["message_count"] == 4
    # Alden got the session id with the message.
    with alden.client() as ac:
        remembered = ac.get("/v1/memories").json()["items"]
    assert {m["session_id"] for m in remembered if "Darjeeling" in m["user"]} == {sid}


def test_the_longest_message_core_takes_gets_a_reply_from_alden(client: httpx.Client) -> None:
    sid = new_session(client, "user", "alden")["id"]
    longest = "word " * (MAX_MESSAGE_CHARS // 5) + "x" * (MAX_MESSAGE_CHARS % 5)
    assert len(longest) == MAX_MESSAGE_CHARS
    answer = post(client, sid, "user", longest)
    assert answer.status_code == 201, answer.text
    assert "agent_error" not in answer.json()
    assert answer.json()["reply"]["author"] == "alden"
    assert_error(post(client, sid, "user", longest + "x"), 422, "validation_error")
    assert [m["author"] for m in messages(client, sid)] == ["user", "alden"]


def test_alden_between_two_people(client: httpx.Client) -> None:
    sid = new_session(client, "ann", "alden", "bob")["id"]
    body = post(client, sid, "ann", "Good morning").json()
    assert body["reply"]["author"] == "alden"
    assert body["next_participant"] == "bob"
    assert_error(post(client, sid, "alden", "I speak for myself"), 409)
    assert post(client, sid, "bob", "Morning!").json()["next_participant"] == "ann"
    assert [m["author"] for m in messages(client, sid)] == ["ann", "alden", "bob"]


def test_alden_failures_are_reported_and_the_turn_passes_on(tmp_path: Path) -> None:
    gate = threading.Event()
    mode = {"now": "error"}

    def fake_alden(path: str, body: object) -> tuple[int, object]:
        if mode["now"] == "slow":
            gate.wait(timeout=10)
            return 200, {"reply": "too late"}
        if mode["now"] == "noreply":
            return 200, {"something": "else"}
        if mode["now"] == "garbage":
            return 200, b"\xff{not json"
        if mode["now"] == "deep":
            return 200, b"[" * 100_000 + b"]" * 100_000
        if mode["now"] == "deep-error":
            return 500, b"[" * 100_000 + b"]" * 100_000
        return 503, {"error": "unavailable", "detail": "alden is restarting"}

    with JsonServer(fake_alden) as server:
        env = {"HEARTHLINK_ALDEN_URL": server.url, "HEARTHLINK_CORE_AGENT_TIMEOUT": "0.5"}
        try:
            with run_service(MODULE, tmp_path, env=env) as core, core.client() as client:
                sid = new_session(client, "ann", "alden", "bob")["id"]
                failed = post(client, sid, "ann", "one")
                assert failed.status_code == 201
                body = failed.json()
                assert "alden answered 503: alden is restarting" in body["agent_error"]
                assert "reply" not in body
                assert body["next_participant"] == "bob"

                mode["now"] = "slow"
                assert post(client, sid, "bob", "two").status_code == 201
                slow = post(client, sid, "ann", "three").json()
                assert "did not answer within 0.5s" in slow["agent_error"]
                assert slow["next_participant"] == "bob"

                mode["now"] = "noreply"
                assert post(client, sid, "bob", "four").status_code == 201
                assert "without a reply" in post(client, sid, "ann", "five").json()["agent_error"]

                # Garbage, and JSON nested too deeply to decode, are no reply either.
                for now in ("garbage", "deep", "deep-error"):
                    mode["now"] = now
                    assert post(client, sid, "bob", f"bob {now}").status_code == 201
                    odd = post(client, sid, "ann", f"ann {now}")
                    assert odd.status_code == 201, odd.text
                    assert odd.json()["agent_error"], now
                    assert odd.json()["next_participant"] == "bob"
                gate.set()
                server.__exit__(None, None, None)

                assert post(client, sid, "bob", "six").status_code == 201
                down = post(client, sid, "ann", "seven").json()
                assert "alden could not be reached" in down["agent_error"]
                assert down["next_participant"] == "bob"
                # Every message stayed; no reply was invented.
                assert [m["content"] for m in messages(client, sid)] == [
                    "one",
                    "two",
                    "three",
                    "four",
                    "five",
                    "bob garbage",
                    "ann garbage",
                    "bob deep",
                    "ann deep",
                    "bob deep-error",
                    "ann deep-error",
                    "six",
                    "seven",
                ]
        finally:
            gate.set()


def test_alden_url_with_an_invalid_port_is_an_agent_error(tmp_path: Path) -> None:
    env = {"HEARTHLINK_ALDEN_URL": "http://127.0.0.1:99999"}
    with run_service(MODULE, tmp_path, env=env) as core, core.client() as client:
        sid = new_session(client, "ann", "alden")["id"]
        for content in ("one", "two"):
            answer = post(client, sid, "ann", content)
            assert answer.status_code == 201, answer.text
            body = answer.json()
            assert "port must be 0-65535" in body["agent_error"]
            assert "reply" not in body
            assert body["next_participant"] == "ann"
        assert [m["content"] for m in messages(client, sid)] == ["one", "two"]
        common.assert_still_healthy(core)


def test_sessions_persist_and_alden_unconfigured_is_reported(tmp_path: Path) -> None:
    with run_service(MODULE, tmp_path) as core, core.client() as client:
        sid = new_session(client, "user", "alden", title="kept")["id"]
        body = post(client, sid, "user", "anyone there?").json()
        assert "HEARTHLINK_ALDEN_URL" in body["agent_error"]
        assert body["next_participant"] == "user"
        assert core.stop() in (0, -signal.SIGTERM)
    assert (tmp_path / "core" / "core.db").exists()
    with run_service(MODULE, tmp_path) as core, core.client() as client:
        session = client.get(f"/v1/sessions/{sid}").json()
        assert (session["title"], session["next_participant"], session["message_count"]) == (
            "kept",
            "user",
            1,
        )
        assert [m["content"] for m in messages(client, sid)] == ["anyone there?"]
        assert_error(post(client, sid, "alden", "out of turn"), 409)


# --- auth and malformed requests -----------------------------------------------------------------


@pytest.mark.parametrize("authorization", common.BAD_AUTHORIZATIONS)
def test_every_route_but_health_needs_the_token(
    core: ServiceProcess, client: httpx.Client, authorization: str | None
) -> None:
    sid = new_session(client, "ann")["id"]
    count = len(client.get("/v1/sessions").json()["items"])
    protected = [
        ("POST", "/v1/sessions", {"title": "t", "participants": ["a"]}),
        ("GET", "/v1/sessions", None),
        ("GET", f"/v1/sessions/{sid}", None),
        ("POST", f"/v1/sessions/{sid}/messages", {"author": "ann", "content": "x"}),
        ("GET", f"/v1/sessions/{sid}/messages", None),
    ]
    common.assert_only_health_is_open(core, authorization, protected)
    assert len(client.get("/v1/sessions").json()["items"]) == count
    assert messages(client, sid) == []


MALFORMED = [
    ("POST", "/v1/sessions", JSON, b"{not json", 400),
    ("POST", "/v1/sessions", JSON, b'{"title": "\xff"}', 400),
    ("POST", "/v1/sessions", JSON, b"[" * 100_000 + b"]" * 100_000, 400),
    ("POST", "/v1/sessions", {"content-type": "text/plain"}, b"{}", 400, "bad_request"),
    ("POST", "/v1/sessions", JSON, b"", 422),
    ("POST", "/v1/sessions", JSON, b"[]", 422),
    ("PUT", "/v1/sessions", JSON, b"{}", 405),
    ("DELETE", "/v1/sessions/abc", {}, None, 405),
    ("PUT", "/v1/sessions/abc/messages", JSON, b"{}", 405),
    ("GET", "/v1/sessions/", {}, None, 404),
    ("POST", "/v1/sessions/", JSON, b"{}", 404),
    ("GET", "/v1/sessions//messages", {}, None, 404),
    ("GET", "/v1/sessions/abc/messages/", {}, None, 404),
    ("GET", "/v1/sessions/abc/other", {}, None, 404),
    ("GET", "/v1/sessions/.x", {}, None, 422),
    ("GET", "/v1/sessions/%2E%2E/messages", {}, None, 422),
    ("GET", "/v1/sessions/" + "n" * 129, {}, None, 422),
    ("POST", "/v1/sessions/.x/messages", JSON, b'{"author": "a", "content": "b"}', 422),
    ("GET", "/v1/nothing", {}, None, 404),
]


@pytest.mark.parametrize("case", MALFORMED, ids=common.malformed_id)
def test_malformed_requests_get_their_4xx(client: httpx.Client, case: tuple[Any, ...]) -> None:
    common.assert_refused(client, *case)


def test_a_body_not_declared_json_is_400_saying_so(client: httpx.Client) -> None:
    common.assert_not_json_is_400(client, "POST", "/v1/sessions", b'{"title": "t"}')


def test_body_size_limit_is_1_mib_chunked_or_not(client: httpx.Client) -> None:
    big = b'{"title": "' + b"a" * common.MIB + b'", "participants": ["a"]}'
    common.assert_too_large(client, "POST", "/v1/sessions", big)
    common.assert_too_large(client, "POST", "/v1/sessions", common.chunks_over_1_mib())


def test_still_healthy_after_the_abuse(core: ServiceProcess) -> None:
    common.assert_still_healthy(core)


# --- lifecycle ----------------------------------------------------------------------------------


def test_runs_as_a_script_and_stops_within_two_seconds_of_sigterm(tmp_path: Path) -> None:
    with run_service(f"{MODULE}.__main__", tmp_path, as_script=True) as core:
        common.assert_sigterm_stops_it_within_two_seconds(core)


def test_unusable_data_dir_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "core.db").write_bytes(b"this is not a database" * 100)
    refused = start_refused(MODULE, tmp_path)
    assert refused.returncode == 78, refused.stderr
    assert "core.db" in refused.stderr
