"""Core's per-session locks: held one at a time, and forgotten once nobody needs them."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from hearthlink_trio.services.core.app import SessionLocks, build_app
from tests.helpers import TOKEN
from tests.unit.services.asgi import app_client


def test_the_lock_table_is_empty_after_many_sessions_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEARTHLINK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HEARTHLINK_API_TOKEN", TOKEN)
    monkeypatch.delenv("HEARTHLINK_ALDEN_URL", raising=False)
    app = build_app()

    async def scenario() -> None:
        async with app_client(app, TOKEN) as client:

            async def converse(index: int) -> None:
                body = {"title": f"s{index}", "participants": ["ana", "ben"]}
                session = (await client.post("/v1/sessions", json=body)).json()
                url = f"/v1/sessions/{session['id']}/messages"
                for author in ("ana", "ben", "ana"):
                    answer = await client.post(url, json={"author": author, "content": "hi"})
                    assert answer.status_code == 201, answer.text
                # Out of turn: refused under the lock, which is dropped all the same.
                refused = await client.post(url, json={"author": "ana", "content": "again"})
                assert refused.status_code == 409

            async with anyio.create_task_group() as tasks:
                for index in range(40):
                    tasks.start_soon(converse, index)
            assert len(app.state.session_locks) == 0

    anyio.run(scenario)


def test_a_session_lock_is_kept_while_held_or_awaited_and_dropped_after() -> None:
    locks = SessionLocks()
    order: list[str] = []

    async def scenario() -> None:
        first_in = anyio.Event()
        let_first_go = anyio.Event()

        async def first() -> None:
            async with locks.hold("s"):
                order.append("first")
                first_in.set()
                await let_first_go.wait()

        async def second() -> None:
            await first_in.wait()
            async with locks.hold("s"):
                order.append("second")

        async def cancelled_waiter(scope: anyio.CancelScope) -> None:
            with scope:
                async with locks.hold("s"):
                    order.append("never")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first)
            tasks.start_soon(second)
            await first_in.wait()
            scope = anyio.CancelScope()
            tasks.start_soon(cancelled_waiter, scope)
            for _ in range(5):
                await anyio.sleep(0)
            assert len(locks) == 1  # one lock for the session, whoever waits on it
            scope.cancel()
            let_first_go.set()
        assert order == ["first", "second"]
        assert len(locks) == 0

    anyio.run(scenario)
