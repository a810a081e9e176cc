"""Core's HTTP API: sessions, messages and round-robin turns, with Alden taking its turn.

Routes, all behind the bearer token:

- ``POST /v1/sessions`` ``{"title", "participants"}`` -> 201 and the session
- ``GET /v1/sessions`` -> ``{"items": [session, ...]}`` (oldest first)
- ``GET /v1/sessions/{id}`` -> the session (404 if unknown)
- ``POST /v1/sessions/{id}/messages`` ``{"author", "content"}`` -> 201 and the stored
  message; 403 if the author is no participant, 409 if it is not their turn. When the
  next participant is ``alden``, Core asks Alden before answering: its stored reply is
  under ``"reply"``, or, if Alden could not answer, ``"agent_error"`` says why and the
  turn passes on to the participant after Alden.
- ``GET /v1/sessions/{id}/messages`` -> ``{"items": [{"id", "author", "content", "ts"}]}``

A session is ``{"id", "title", "participants", "created_at", "next_participant",
"message_count"}``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from hearthlink_trio.services.common.app import create_app
from hearthlink_trio.services.common.auth import api_token, auth_dependency
from hearthlink_trio.services.common.database import run_blocking
from hearthlink_trio.services.common.errors import ApiError
from hearthlink_trio.services.common.settings import env_number, service_data_dir
from hearthlink_trio.services.common.validation import MAX_MESSAGE_CHARS, NAME_PATTERN, Name
from hearthlink_trio.services.core.agent import AGENT, AgentError, AldenClient
from hearthlink_trio.services.core.store import (
    CoreStore,
    NotAParticipant,
    OutOfTurn,
    Session,
    SessionNotFound,
)

SERVICE = "core"
#: Seconds Core waits for Alden's reply (``HEARTHLINK_CORE_AGENT_TIMEOUT``).
DEFAULT_AGENT_TIMEOUT = 30.0
MAX_PARTICIPANTS = 32
MAX_TITLE = 200

ParticipantName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=MAX_TITLE)
    participants: list[ParticipantName] = Field(min_length=1, max_length=MAX_PARTICIPANTS)

    @field_validator("title")
    @classmethod
    def _title_not_blank(cls, title: str) -> str:
        if not title.strip():
            raise ValueError("must not be blank")
        return title

    @field_validator("participants")
    @classmethod
    def _participants_unique(cls, participants: list[str]) -> list[str]:
        if len(set(participants)) != len(participants):
            raise ValueError("participants must be unique")
        return participants


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    author: ParticipantName
    content: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)


@dataclass
class _Held:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    #: Tasks holding or waiting for ``lock``.
    users: int = 0


class SessionLocks:
    """One lock per session, kept only while a task holds or waits for it.

    A post, and Alden's reply to it, happen as one step under the session's lock, so no
    other post of that session can slip in between and break the round robin. A session
    nobody is posting to has no lock, so the table does not grow with the sessions.
    """

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}

    def __len__(self) -> int:
        return len(self._held)

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        # No await between the lookup and the count (one event loop thread), so a lock
        # is never dropped while another task is about to wait for it.
        held = self._held.get(session_id)
        if held is None:
            held = self._held[session_id] = _Held()
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if held.users == 0:
                del self._held[session_id]


def build_app() -> FastAPI:
    """Core's app; the database is opened here so a bad data dir fails at start (78)."""
    store = CoreStore(service_data_dir(SERVICE) / "core.db")
    alden = AldenClient(
        os.environ.get("HEARTHLINK_ALDEN_URL", ""),
        api_token(),
        timeout=env_number("HEARTHLINK_CORE_AGENT_TIMEOUT", DEFAULT_AGENT_TIMEOUT, minimum=0.01),
    )
    locks = SessionLocks()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await alden.aclose()
            store.close()

    app = create_app(SERVICE, lifespan=lifespan)
    app.state.session_locks = locks
    router = APIRouter(prefix="/v1/sessions", dependencies=[auth_dependency(app)])

    async def lookup(session_id: str) -> Session:
        try:
            return await run_blocking(store.get_session, session_id)
        except SessionNotFound:
            raise ApiError(404, f"no session {session_id!r}") from None

    @router.post("", status_code=201)
    async def create_session(body: SessionIn) -> dict[str, Any]:
        session = await run_blocking(store.create_session, body.title, body.participants)
        return session.to_json()

    @router.get("")
    async def list_sessions() -> dict[str, Any]:
        sessions = await run_blocking(store.list_sessions)
        return {"items": [session.to_json() for session in sessions]}

    @router.get("/{session_id}")
    async def get_session(session_id: Name) -> dict[str, Any]:
        return (await lookup(session_id)).to_json()

    @router.get("/{session_id}/messages")
    async def list_messages(session_id: Name) -> dict[str, Any]:
        try:
            messages = await run_blocking(store.messages, session_id)
        except SessionNotFound:
            raise ApiError(404, f"no session {session_id!r}") from None
        return {"items": [message.to_json() for message in messages]}

    @router.post("/{session_id}/messages", status_code=201)
    async def post_message(session_id: Name, body: MessageIn) -> dict[str, Any]:
        await lookup(session_id)
        async with locks.hold(session_id):
            try:
                message, session = await run_blocking(
                    store.post, session_id, body.author, body.content
                )
            except NotAParticipant:
                raise ApiError(
                    403, f"{body.author!r} is not a participant of this session"
                ) from None
            except OutOfTurn as exc:
                raise ApiError(409, f"it is {exc.expected}'s turn, not {body.author}'s") from None
            answer = message.to_json()
            if session.next_participant == AGENT:
                alden_turn = session.turns
                replied = False
                try:
                    reply_text = await alden.reply(body.content, session_id)
                    reply, session = await run_blocking(store.post, session_id, AGENT, reply_text)
                    replied = True
                    answer["reply"] = reply.to_json()
                except AgentError as exc:
                    answer["agent_error"] = str(exc)
                finally:
                    # Whatever happened (an error, a cancellation), the turn never stays
                    # with Alden without a stored reply.
                    if not replied:
                        # Shielded: after a cancellation the turn must still be passed
                        # on, and the thread's short write is awaited to its end.
                        with anyio.CancelScope(shield=True):
                            session = await run_blocking(store.pass_turn, session_id, alden_turn)
            answer["next_participant"] = session.next_participant
        return answer

    app.include_router(router)
    return app
