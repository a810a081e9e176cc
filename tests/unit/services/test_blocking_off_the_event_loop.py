"""A store's blocking write never holds up the other requests: it runs off the event loop.

Each service's real app is driven in process (``httpx.ASGITransport``), with its store's
write made to block on a ``threading.Event``: while that write is held, ``/health`` must
still answer; once released, the write completes.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

from hearthlink_trio.services.vault.keys import generate_key
from tests.helpers import TOKEN
from tests.unit.services.asgi import app_client

#: Bound of every wait in these tests; none is expected to come near it.
WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class Case:
    service: str
    store: str  # "module:Class.method" of the blocking write
    method: str
    url: str
    body: dict[str, Any]
    check_url: str  # a GET whose answer shows the write completed
    written: Callable[[dict[str, Any]], bool]


CASES = [
    Case(
        "vault",
        "hearthlink_trio.services.vault.store:VaultStore.put",
        "PUT",
        "/v1/memories/notes/first",
        {"value": {"text": "hello"}},
        "/v1/memories/notes/first",
        lambda body: body["value"] == {"text": "hello"},
    ),
    Case(
        "core",
        "hearthlink_trio.services.core.store:CoreStore.create_session",
        "POST",
        "/v1/sessions",
        {"title": "planning", "participants": ["ana", "ben"]},
        "/v1/sessions",
        lambda body: [s["title"] for s in body["items"]] == ["planning"],
    ),
    Case(
        "synapse",
        "hearthlink_trio.services.synapse.registry:Registry.add",
        "POST",
        "/v1/plugins",
        {"name": "echo", "version": "1", "base_url": "http://127.0.0.1:9/", "permissions": []},
        "/v1/plugins",
        lambda body: [p["name"] for p in body["items"]] == ["echo"],
    ),
]


class HeldWrite:
    """Wraps a store method so that each call blocks until :meth:`release` (bounded)."""

    def __init__(self, original: Callable[..., Any]) -> None:
        self.original = original
        self.entered = threading.Event()
        self.released = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        # Bounded, so that a write run on the event loop (the defect) delays the test
        # instead of hanging it; the test then fails on its assertions.
        self.released.wait(WAIT_SECONDS)
        return self.original(*args, **kwargs)


@pytest.mark.parametrize("case", CASES, ids=[case.service for case in CASES])
def test_health_answers_while_a_store_write_is_blocked(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEARTHLINK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HEARTHLINK_API_TOKEN", TOKEN)
    monkeypatch.setenv("HEARTHLINK_VAULT_KEY", generate_key())
    module_name, _, attribute = case.store.partition(":")
    class_name, _, method_name = attribute.partition(".")
    store_class = getattr(importlib.import_module(module_name), class_name)
    held = HeldWrite(getattr(store_class, method_name))

    def held_method(*args: Any, **kwargs: Any) -> Any:  # a function, so it binds ``self``
        return held(*args, **kwargs)

    monkeypatch.setattr(store_class, method_name, held_method)
    app = importlib.import_module(f"hearthlink_trio.services.{case.service}.app").build_app()

    async def scenario() -> None:
        async with app_client(app, TOKEN) as client:
            answers: dict[str, httpx.Response] = {}

            async def write() -> None:
                answers["write"] = await client.request(case.method, case.url, json=case.body)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(write)
                assert await anyio.to_thread.run_sync(held.entered.wait, WAIT_SECONDS)
                with anyio.fail_after(WAIT_SECONDS):
                    health = await client.get("/health")
                write_was_held = "write" not in answers
                held.released.set()
            assert health.status_code == 200
            assert write_was_held, "/health was only answered after the blocked write ended"
            assert answers["write"].is_success, answers["write"].text
            check = await client.get(case.check_url)
            assert check.status_code == 200
            assert case.written(check.json())

    anyio.run(scenario)
