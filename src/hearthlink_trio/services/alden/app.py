"""Alden's HTTP API: chat with memory.

Routes, all but ``/health`` behind the bearer token:

- ``GET /health`` adds ``"memory_mode": "vault"|"memory-only"`` and
  ``"pending_memories"`` (exchanges waiting for the Vault).
- ``POST /v1/chat`` ``{"message", "session_id"?}`` -> ``{"reply", "memory_mode",
  "recalled": [earlier user messages the reply drew on], "memory_key"}``; 502/504 when
  the language model endpoint fails or is too slow (nothing is stored then).
- ``GET /v1/memories`` (``?limit=N``, default 100, newest N) -> ``{"items": [{"key",
  "user", "reply", "ts", "session_id", "stored": "vault"|"pending"|"memory"}]}``, oldest
  first.

Environment: ``HEARTHLINK_VAULT_URL`` (unset: memory-only for good),
``HEARTHLINK_ALDEN_VAULT_TIMEOUT`` (2 s per Vault call), ``HEARTHLINK_ALDEN_RESYNC_INTERVAL``
(1 s between attempts while the Vault is away) and the ``HEARTHLINK_LLM_*`` variables of
:mod:`.responder`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from hearthlink_trio._util import utc_now
from hearthlink_trio.services.alden.memory import Memory, new_key, recall
from hearthlink_trio.services.alden.responder import (
    LlmResponder,
    OfflineResponder,
    Responder,
    ResponderError,
)
from hearthlink_trio.services.alden.sync import MemoryBook
from hearthlink_trio.services.alden.vault_client import VaultClient
from hearthlink_trio.services.common.app import create_app
from hearthlink_trio.services.common.auth import api_token, auth_dependency
from hearthlink_trio.services.common.errors import ApiError
from hearthlink_trio.services.common.settings import env_number, service_data_dir
from hearthlink_trio.services.common.validation import MAX_MESSAGE_CHARS, NAME_PATTERN

SERVICE = "alden"
DEFAULT_VAULT_TIMEOUT = 2.0
DEFAULT_RESYNC_INTERVAL = 1.0
#: Seconds the last write of buffered memories may take on shutdown (exit within 2 s).
SHUTDOWN_FLUSH_SECONDS = 0.5


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    session_id: Annotated[str, StringConstraints(pattern=NAME_PATTERN)] | None = None


def build_app() -> FastAPI:
    """Alden's app; settings are read here so a bad one exits 78 at start."""
    service_data_dir(SERVICE)
    token = api_token()
    vault_url = os.environ.get("HEARTHLINK_VAULT_URL", "").strip()
    vault = (
        VaultClient(
            vault_url,
            token,
            timeout=env_number(
                "HEARTHLINK_ALDEN_VAULT_TIMEOUT", DEFAULT_VAULT_TIMEOUT, minimum=0.01
            ),
        )
        if vault_url
        else None
    )
    interval = env_number("HEARTHLINK_ALDEN_RESYNC_INTERVAL", DEFAULT_RESYNC_INTERVAL, minimum=0.01)
    responder: Responder = LlmResponder.from_env() or OfflineResponder()
    book = MemoryBook(vault)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(book.run, interval)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
        await book.flush(SHUTDOWN_FLUSH_SECONDS)
        await responder.aclose()
        if vault is not None:
            await vault.aclose()

    app = create_app(
        SERVICE,
        lifespan=lifespan,
        health_extra=lambda: {
            "memory_mode": book.mode.value,
            "pending_memories": book.pending_count,
        },
    )
    router = APIRouter(prefix="/v1", dependencies=[auth_dependency(app)])

    @router.post("/chat")
    async def chat(body: ChatIn) -> dict[str, Any]:
        await book.refresh()
        recalled = recall(book.memories(), body.message, session_id=body.session_id)
        try:
            reply = await responder.reply(body.message, recalled)
        except ResponderError as exc:
            raise ApiError(exc.status, str(exc)) from None
        key = new_key(datetime.now(UTC))
        memory = Memory(key, body.message, reply, utc_now(), body.session_id)
        await book.remember(memory)
        return {
            "reply": reply,
            "memory_mode": book.mode.value,
            "recalled": [earlier.user for earlier in recalled],
            "memory_key": memory.key,
        }

    @router.get("/memories")
    async def memories(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        await book.refresh()
        items = []
        for memory in book.memories()[-limit:]:
            item = memory.value()
            item["key"] = memory.key
            item["stored"] = book.stored_where(memory.key)
            items.append(item)
        return {"items": items}

    app.include_router(router)
    return app
