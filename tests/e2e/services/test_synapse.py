"""Synapse against its real process over HTTP, with plugin servers started by the tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.services import common
from tests.e2e.services.common import JSON
from tests.helpers import (
    TOKEN,
    JsonServer,
    ServiceProcess,
    assert_error,
    free_port,
    run_service,
    start_refused,
    wait_for,
)

MODULE = "hearthlink_trio.services.synapse"
TIMEOUT = 1.0
BREAKER_RESET = 0.4
#: Tunables of the shared Synapse: a short timeout and breaker reset, default rate limit.
SHARED_ENV = {
    "HEARTHLINK_SYNAPSE_TIMEOUT": str(TIMEOUT),
    "HEARTHLINK_SYNAPSE_BREAKER_RESET": str(BREAKER_RESET),
}


#: Deeper than pydantic serializes (255 levels), shallower than Python's JSON decoder stops.
NESTED = 300


class Plugin:
    """A plugin server whose answers the test steers: ``mode`` per action path."""

    def __init__(self) -> None:
        self.mode: dict[str, str] = {}
        self.gate = threading.Event()
        self.server = JsonServer(self._answer)

    def _answer(self, path: str, body: object) -> tuple[int, object]:
        mode = self.mode.get(path, "echo")
        if mode == "fail":
            return 500, {"detail": "plugin exploded"}
        if mode == "slow":
            self.gate.wait(timeout=10)
            return 200, {"late": True}
        if mode == "missing":
            return 404, {"detail": "no such thing"}
        if mode == "text":
            return 200, b"plain words"
        if mode == "huge":
            return 200, b'"' + b"x" * (1024 * 1024 + 10) + b'"'
        if mode == "deep":
            return 200, b"[" * 100_000 + b"]" * 100_000
        if mode == "nested":
            return 200, b"[" * NESTED + b"]" * NESTED
        if mode == "nan":
            return 200, b'{"x": NaN}'
        return 200, {"echo": body, "path": path}

    def calls(self, path: str) -> int:
        return self.server.paths().count(path)

    def __enter__(self) -> Plugin:
        self.server.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.gate.set()
        self.server.__exit__(*exc_info)


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with run_service(MODULE, tmp_path_factory.mktemp("synapse"), env=SHARED_ENV) as service:
        yield service


@pytest.fixture
def client(synapse: ServiceProcess) -> Iterator[httpx.Client]:
    with synapse.client() as c:
        yield c


@pytest.fixture(scope="module")
def plugin() -> Iterator[Plugin]:
    with Plugin() as server:
        yield server


def register(
    client: httpx.Client, name: str, base_url: str, permissions: list[str], **extra: Any
) -> httpx.Response:
    manifest = {"name": name, "version": "1.0.0", "base_url": base_url, "permissions": permissions}
    manifest.update(extra)
    return client.post("/v1/plugins", json=manifest)


def invoke(client: httpx.Client, name: str, action: str, payload: Any = None) -> httpx.Response:
    body: dict[str, Any] = {"action": action}
    if payload is not None:
        body["payload"] = payload
    return client.post(f"/v1/plugins/{name}/invoke", json=body)


# --- basics ---------------------------------------------------------------------------


def test_health_is_open_and_has_the_spec_shape(synapse: ServiceProcess) -> None:
    common.assert_open_health(synapse, "synapse-api")
    assert "synapse-api" in synapse.output()


def test_register_list_get_and_delete(client: httpx.Client, plugin: Plugin) -> None:
    created = register(client, "notes", plugin.server.url, ["save", "load"], description="d")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "notes"
    assert body["version"] == "1.0.0"
    assert body["base_url"] == plugin.server.url
    assert body["permissions"] == ["save", "load"]
    assert body["description"] == "d"
    assert body["registered_at"].endswith("Z")
    assert body["circuit"] == "closed"

    assert_error(register(client, "notes", plugin.server.url, []), 409, "conflict")
    assert client.get("/v1/plugins/notes").json() == body
    assert "notes" in [item["name"] for item in client.get("/v1/plugins").json()["items"]]

    deleted = client.delete("/v1/plugins/notes")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_error(client.delete("/v1/plugins/notes"), 404, "not_found")
    assert_error(client.get("/v1/plugins/notes"), 404, "not_found")
    assert_error(invoke(client, "notes", "save"), 404, "not_found")
    assert "notes" not in [item["name"] for item in client.get("/v1/plugins").json()["items"]]
    # Registering no longer connects to anything: a closed port is fine.
    assert register(client, "notes", f"http://127.0.0.1:{free_port()}", ["save"]).status_code == 201
    assert plugin.server.requests == []


# --- where a plugin may live ------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:9",
        "http://127.5.6.7:9/prefix/",
        "http://localhost:9",
        "http://LOCALHOST.:9",
        "http://[::1]:9",
        "http://[::ffff:127.0.0.1]:9",
        "https://localhost/",
    ],
)
def test_loopback_base_urls_are_accepted(client: httpx.Client, base_url: str) -> None:
    response = register(client, "loopback", base_url, ["a"])
    assert response.status_code == 201, response.text
    assert response.json()["base_url"] == base_url
    assert client.delete("/v1/plugins/loopback").status_code == 204


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1@evil.example/",
        "http://127.0.0.1:80@evil.example/",
        "http://evil.example/",
        "http://localhost.evil.example/",
        "http://127.0.0.1.evil.example/",
        "http://10.0.0.1/",
        "http://0.0.0.0:9/",
        "http://[::]:9/",
        "http://[::ffff:10.0.0.1]/",
        "http://2130706433/",
    ],
)
def test_other_hosts_are_refused_at_registration(client: httpx.Client, base_url: str) -> None:
    response = register(client, "outside", base_url, ["a"])
    assert_error(response, 403, "forbidden")
    assert "HEARTHLINK_SYNAPSE_ALLOW" in response.json()["detail"]
    assert_error(client.get("/v1/plugins/outside"), 404)


@pytest.mark.parametrize(
    "base_url",
    [
        "ftp://127.0.0.1/",
        "file:///etc/passwd",
        "127.0.0.1:9",
        "http://",
        "http:///path",
        "http://user@127.0.0.1:9/",
        "http://user:pw@localhost:9/",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1:0/",
        "http://127.0.0.1:port/",
        "http://127.0.0.1:9/?q=1",
        "http://127.0.0.1:9/#frag",
        "http://127.0.0.1:9/\nx",
        "http://127.0.0.1:9/ x",
        "",
    ],
)
def test_malformed_base_urls_are_refused(client: httpx.Client, base_url: str) -> None:
    assert_error(register(client, "malformed", base_url, ["a"]), 422, "validation_error")


@pytest.mark.parametrize(
    "manifest",
    [
        {},
        {"name": "x", "version": "1", "base_url": "http://127.0.0.1:9"},
        {"name": "x", "version": "1", "permissions": []},
        {"name": ".x", "version": "1", "base_url": "http://127.0.0.1:9", "permissions": []},
        {"name": "x", "version": "", "base_url": "http://127.0.0.1:9", "permissions": []},
        {"name": "x", "version": "1 0", "base_url": "http://127.0.0.1:9", "permissions": []},
        {"name": "x", "version": 1, "base_url": "http://127.0.0.1:9", "permissions": []},
        {"name": "x", "version": "1", "base_url": "http://127.0.0.1:9", "permissions": "a"},
        {"name": "x", "version": "1", "base_url": "http://127.0.0.1:9", "permissions": ["a", "a"]},
        {"name": "x", "version": "1", "base_url": "http://127.0.0.1:9", "permissions": [".."]},
        {"name": "x", "version": "1", "base_url": "http://127.0.0.1:9", "permissions": ["a/b"]},
        {"name": "x", "version": "1", "base_url": "http://127.0.0.1:9", "permissions": [], "x": 1},
        {"name": "x", "version": "1", "base_url": 7, "permissions": []},
    ],
)
def test_invalid_manifests_are_refused(client: httpx.Client, manifest: dict[str, Any]) -> None:
    assert_error(client.post("/v1/plugins", json=manifest), 422, "validation_error")
    assert_error(client.get("/v1/plugins/x"), 404)


def test_allow_list_and_per_plugin_rate_limit(tmp_path: Path) -> None:
    env = {
        "HEARTHLINK_SYNAPSE_ALLOW": "plugins.example.test, 10.1.2.3",
        "HEARTHLINK_SYNAPSE_RATE": "0.001",
        "HEARTHLINK_SYNAPSE_BURST": "3",
    }
    with run_service(MODULE, tmp_path, env=env) as service, service.client() as client:
        assert register(client, "far", "http://plugins.example.test:9/", []).status_code == 201
        assert register(client, "ip", "http://10.1.2.3/", []).status_code == 201
        assert_error(register(client, "no", "http://other.example.test/", []), 403)
        assert_error(register(client, "no", "http://127.0.0.1@other.example.test/", []), 403)

        with Plugin() as first, Plugin() as second:
            assert register(client, "first", first.server.url, ["go"]).status_code == 201
            assert register(client, "second", second.server.url, ["go"]).status_code == 201
            for _ in range(3):
                assert invoke(client, "first", "go").status_code == 200
            refused = invoke(client, "first", "go")
            assert_error(refused, 429, "rate_limited")
            assert int(refused.headers["retry-after"]) >= 1
            assert first.calls("/go") == 3
            # The bucket is per plugin: the second one still has its burst.
            assert invoke(client, "second", "go").status_code == 200
            assert second.calls("/go") == 1
            # Re-registering a plugin starts it with a fresh bucket.
            assert client.delete("/v1/plugins/first").status_code == 204
            assert register(client, "first", first.server.url, ["go"]).status_code == 201
            assert invoke(client, "first", "go").status_code == 200


# --- invocation ----------------------------------------------------------------------------


def test_invoke_forwards_the_payload_and_wraps_the_answer(
    client: httpx.Client, plugin: Plugin
) -> None:
    assert register(client, "echo", f"{plugin.server.url}/base/", ["greet"]).status_code == 201
    payload = {"who": "world", "n": [1, 2.5, None, True], "deep": {"ü": "✓"}}
    response = invoke(client, "echo", "greet", payload)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "plugin": "echo",
        "action": "greet",
        "status": 200,
        "result": {"echo": payload, "path": "/base/greet"},
    }
    seen = plugin.server.requests[-1]
    assert (seen.method, seen.path, seen.body) == ("POST", "/base/greet", payload)
    assert seen.headers["Content-Type"] == "application/json"
    # The Hearthlink token stays inside Hearthlink.
    assert TOKEN not in str(seen.headers)
    # The payload defaults to an empty object.
    assert invoke(client, "echo", "greet").json()["result"]["echo"] == {}


def test_plugin_answers_other_than_json_objects(client: httpx.Client, plugin: Plugin) -> None:
    assert register(client, "shapes", plugin.server.url, ["missing", "text"]).status_code == 201
    plugin.mode.update({"/missing": "missing", "/text": "text"})
    missing = invoke(client, "shapes", "missing")
    assert missing.status_code == 200
    assert missing.json()["status"] == 404
    assert missing.json()["result"] == {"detail": "no such thing"}
    assert invoke(client, "shapes", "text").json()["result"] == "plain words"


def test_refused_invocations_never_reach_the_plugin(client: httpx.Client, plugin: Plugin) -> None:
    assert register(client, "guarded", plugin.server.url, ["allowed"]).status_code == 201
    before = len(plugin.server.requests)
    assert_error(invoke(client, "guarded", "forbidden"), 403, "forbidden")
    assert_error(invoke(client, "guarded", ".."), 422)
    assert_error(invoke(client, "guarded", "a/b"), 422)
    assert_error(invoke(client, "guarded", "allowed", [1, 2]), 422)
    assert_error(invoke(client, "guarded", "allowed", "text"), 422)
    bad_json = b'{"action": "allowed", "payload": {"x": NaN}}'
    response = client.post("/v1/plugins/guarded/invoke", content=bad_json, headers=JSON)
    assert_error(response, 422)
    assert_error(client.post("/v1/plugins/guarded/invoke", json={"payload": {}}), 422)
    assert_error(invoke(client, "nobody", "allowed"), 404)
    assert len(plugin.server.requests) == before


def test_failing_unreachable_and_oversized_plugins_are_502(
    client: httpx.Client, plugin: Plugin
) -> None:
    assert register(client, "broken", plugin.server.url, ["fail", "huge"]).status_code == 201
    plugin.mode.update({"/fail": "fail", "/huge": "huge"})
    failed = invoke(client, "broken", "fail")
    assert_error(failed, 502, "bad_gateway")
    assert "500" in failed.json()["detail"]
    assert "plugin exploded" in failed.json()["detail"]
    assert_error(invoke(client, "broken", "huge"), 502, "bad_gateway")

    down = f"http://127.0.0.1:{free_port()}"
    assert register(client, "down", down, ["ping"]).status_code == 201
    unreachable = invoke(client, "down", "ping")
    assert_error(unreachable, 502, "bad_gateway")
    assert down in unreachable.json()["detail"]


def test_deep_or_nan_answers_are_502_and_open_the_breaker(client: httpx.Client) -> None:
    with Plugin() as odd:
        odd.mode.update({"/deep": "deep", "/nan": "nan", "/nested": "nested"})
        assert register(client, "odd", odd.server.url, ["deep", "nan", "nested"]).status_code == 201
        # NaN is not JSON: never silently passed on as null.
        nan = invoke(client, "odd", "nan")
        assert_error(nan, 502, "bad_gateway")
        assert "NaN" in nan.json()["detail"]
        # Nested, but within what JSON encodes: passed on unchanged (and closing the count).
        nested = invoke(client, "odd", "nested")
        assert nested.status_code == 200, nested.text
        result = nested.json()["result"]
        for _ in range(NESTED - 1):
            assert isinstance(result, list) and len(result) == 1
            result = result[0]
        assert result == []
        # Nested too deeply to decode: a plugin failure, and five in a row open the circuit.
        for _ in range(5):
            deep = invoke(client, "odd", "deep")
            assert_error(deep, 502, "bad_gateway")
            assert "nested too deeply" in deep.json()["detail"]
        assert client.get("/v1/plugins/odd").json()["circuit"] == "open"
        assert_error(invoke(client, "odd", "deep"), 503, "unavailable")
        assert odd.calls("/deep") == 5
        assert client.delete("/v1/plugins/odd").status_code == 204


def test_slow_plugin_is_504_after_the_timeout(client: httpx.Client) -> None:
    with Plugin() as slow:
        slow.mode["/wait"] = "slow"
        assert register(client, "sleepy", slow.server.url, ["wait"]).status_code == 201
        started = time.monotonic()
        response = invoke(client, "sleepy", "wait")
        elapsed = time.monotonic() - started
        assert_error(response, 504, "timeout")
        assert TIMEOUT <= elapsed < TIMEOUT + 2
        assert slow.calls("/wait") == 1


def test_circuit_breaker_opens_half_opens_and_closes(client: httpx.Client) -> None:
    with Plugin() as flaky:
        flaky.mode["/act"] = "fail"
        assert register(client, "flaky", flaky.server.url, ["act"]).status_code == 201

        def circuit() -> str:
            state: str = client.get("/v1/plugins/flaky").json()["circuit"]
            return state

        for _ in range(5):
            assert_error(invoke(client, "flaky", "act"), 502)
        assert circuit() == "open"
        refused = invoke(client, "flaky", "act")
        assert_error(refused, 503, "unavailable")
        assert int(refused.headers["retry-after"]) >= 1
        assert flaky.calls("/act") == 5

        # Half-open: one trial; it fails, so the circuit opens again at once.
        wait_for(lambda: circuit() == "half-open", timeout=10, what="half-open")
        assert_error(invoke(client, "flaky", "act"), 502)
        assert flaky.calls("/act") == 6
        assert_error(invoke(client, "flaky", "act"), 503)
        assert flaky.calls("/act") == 6

        # Half-open again: while the (slow) trial runs, other calls are refused.
        wait_for(lambda: circuit() == "half-open", timeout=10, what="half-open")
        flaky.mode["/act"] = "slow"
        results: list[httpx.Response] = []
        trial = threading.Thread(target=lambda: results.append(invoke(client, "flaky", "act")))
        trial.start()
        try:
            wait_for(lambda: flaky.calls("/act") == 7, timeout=10, what="the trial call")
            assert_error(invoke(client, "flaky", "act"), 503)
        finally:
            flaky.gate.set()
            trial.join(timeout=10)
        assert results[0].status_code == 200, results[0].text
        assert circuit() == "closed"
        flaky.mode["/act"] = "echo"
        assert invoke(client, "flaky", "act").status_code == 200
        assert flaky.calls("/act") == 8


# --- auth and malformed requests ----------------------------------------------------------

PROTECTED = [
    (
        "POST",
        "/v1/plugins",
        {"name": "p", "version": "1", "base_url": "http://127.0.0.1:9", "permissions": []},
    ),
    ("GET", "/v1/plugins", None),
    ("GET", "/v1/plugins/authp", None),
    ("DELETE", "/v1/plugins/authp", None),
    ("POST", "/v1/plugins/authp/invoke", {"action": "a", "payload": {}}),
]


@pytest.mark.parametrize("authorization", common.BAD_AUTHORIZATIONS)
def test_every_route_but_health_needs_the_token(
    synapse: ServiceProcess, client: httpx.Client, plugin: Plugin, authorization: str | None
) -> None:
    if client.get("/v1/plugins/authp").status_code == 404:
        assert register(client, "authp", plugin.server.url, ["a"]).status_code == 201
    before = len(plugin.server.requests)
    common.assert_only_health_is_open(synapse, authorization, PROTECTED)
    assert client.get("/v1/plugins/authp").status_code == 200
    assert_error(client.get("/v1/plugins/p"), 404)
    assert len(plugin.server.requests) == before


MALFORMED = [
    ("POST", "/v1/plugins", JSON, b"{not json", 400),
    ("POST", "/v1/plugins", JSON, b'{"name": "\xff"}', 400),
    ("POST", "/v1/plugins", JSON, b"[" * 100_000 + b"]" * 100_000, 400),
    ("POST", "/v1/plugins", {"content-type": "text/plain"}, b"{}", 400, "bad_request"),
    ("POST", "/v1/plugins", {}, b'{"name": "x"}', 400, "bad_request"),
    ("POST", "/v1/plugins", JSON, b"", 422),
    ("POST", "/v1/plugins", JSON, b"null", 422),
    ("PUT", "/v1/plugins", JSON, b"{}", 405),
    ("PATCH", "/v1/plugins/x", JSON, b"{}", 405),
    ("GET", "/v1/plugins/x/invoke", {}, None, 405),
    ("GET", "/v1/plugins/", {}, None, 404),
    ("POST", "/v1/plugins/", JSON, b"{}", 404),
    ("GET", "/v1/plugins//invoke", {}, None, 404),
    ("POST", "/v1/plugins/x/invoke/", JSON, b"{}", 404),
    ("GET", "/v1/plugins/.x", {}, None, 422),
    ("DELETE", "/v1/plugins/..", {}, None, 404),
    ("DELETE", "/v1/plugins/%2E%2E", {}, None, 422),
    ("GET", "/v1/plugins/" + "n" * 129, {}, None, 422),
    ("GET", "/v1/nothing", {}, None, 404),
    ("GET", "/", {}, None, 404),
]


@pytest.mark.parametrize("case", MALFORMED, ids=common.malformed_id)
def test_malformed_requests_get_their_4xx(client: httpx.Client, case: tuple[Any, ...]) -> None:
    common.assert_refused(client, *case)


def test_body_size_limit_is_1_mib_chunked_or_not(client: httpx.Client) -> None:
    big = b'{"name": "big", "description": "' + b"a" * common.MIB + b'"}'
    common.assert_too_large(client, "POST", "/v1/plugins", big)
    common.assert_too_large(client, "POST", "/v1/plugins", common.chunks_over_1_mib())


def test_still_healthy_after_the_abuse(synapse: ServiceProcess) -> None:
    common.assert_still_healthy(synapse)


# --- lifecycle ---------------------------------------------------------------------------------


def test_runs_as_a_script_stops_on_sigterm_and_keeps_its_registry(tmp_path: Path) -> None:
    with run_service(f"{MODULE}.__main__", tmp_path, as_script=True) as script:
        with script.client() as client:
            assert register(client, "kept", "http://127.0.0.1:9", ["a"]).status_code == 201
        common.assert_sigterm_stops_it_within_two_seconds(script)
    assert (tmp_path / "synapse" / "synapse.db").exists()
    with run_service(MODULE, tmp_path) as service, service.client() as client:
        plugins = client.get("/v1/plugins").json()["items"]
        assert [(p["name"], p["permissions"]) for p in plugins] == [("kept", ["a"])]


def test_bad_tunable_is_a_configuration_error(tmp_path: Path) -> None:
    refused = start_refused(MODULE, tmp_path, HEARTHLINK_SYNAPSE_TIMEOUT="soon")
    assert refused.returncode == 78
    assert "HEARTHLINK_SYNAPSE_TIMEOUT" in refused.stderr
