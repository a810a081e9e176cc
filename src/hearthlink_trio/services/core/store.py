"""Core's sessions, messages and turns, kept in SQLite (``<data_dir>/core/core.db``).

Turn-taking is round robin over a session's participants, starting with the first: a
session counts the turns taken, and the next speaker is ``participants[turns % n]``. A
turn is taken by a stored message, or passed on (:meth:`CoreStore.pass_turn`) when an
agent whose turn it is cannot answer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hearthlink_trio._util import utc_now
from hearthlink_trio.services.common.database import open_database

if TYPE_CHECKING:
    from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    participants TEXT NOT NULL,
    created_at TEXT NOT NULL,
    turns INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    author TEXT NOT NULL,
    content TEXT NOT NULL,
    ts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages(session_id, id);
"""


class SessionNotFound(LookupError):
    """No session has this id."""


class NotAParticipant(PermissionError):
    """The author is not one of the session's participants."""


class OutOfTurn(Exception):
    """The author is a participant, but another one is next."""

    def __init__(self, expected: str) -> None:
        super().__init__(f"it is {expected}'s turn")
        self.expected = expected


@dataclass(frozen=True)
class Session:
    id: str
    title: str
    participants: tuple[str, ...]
    created_at: str
    turns: int
    message_count: int

    @property
    def next_participant(self) -> str:
        return self.participants[self.turns % len(self.participants)]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "participants": list(self.participants),
            "created_at": self.created_at,
            "next_participant": self.next_participant,
            "message_count": self.message_count,
        }


@dataclass(frozen=True)
class Message:
    id: int
    author: str
    content: str
    ts: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "author": self.author, "content": self.content, "ts": self.ts}


class CoreStore:
    """Sessions and their messages. Every write is one transaction.

    Every method blocks on SQLite: call them off the event loop (from a worker thread). A
    lock keeps two threads from using the one connection at once, so each method is one
    atomic step (a post's turn check and its insert included).
    """

    def __init__(self, path: Path) -> None:
        self._mutex = threading.Lock()
        self._conn = open_database(path)
        with self._conn:
            self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._mutex:
            self._conn.close()

    def create_session(self, title: str, participants: list[str]) -> Session:
        session = Session(
            id=uuid.uuid4().hex,
            title=title,
            participants=tuple(participants),
            created_at=utc_now(),
            turns=0,
            message_count=0,
        )
        with self._mutex, self._conn:
            self._conn.execute(
                "INSERT INTO sessions (id, title, participants, created_at) VALUES (?, ?, ?, ?)",
                (session.id, title, json.dumps(participants), session.created_at),
            )
        return session

    _SELECT_SESSIONS = """
        SELECT s.id, s.title, s.participants, s.created_at, s.turns,
               (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id)
        FROM sessions s
    """

    def list_sessions(self) -> list[Session]:
        with self._mutex:
            rows = self._conn.execute(self._SELECT_SESSIONS + " ORDER BY s.rowid").fetchall()
        return [_session(row) for row in rows]

    def get_session(self, session_id: str) -> Session:
        """The session; SessionNotFound if there is none."""
        with self._mutex:
            return self._get(session_id)

    def _get(self, session_id: str) -> Session:
        row = self._conn.execute(
            self._SELECT_SESSIONS + " WHERE s.id = ?", (session_id,)
        ).fetchone()
        if row is None:
            raise SessionNotFound(session_id)
        return _session(row)

    def messages(self, session_id: str) -> list[Message]:
        """The session's messages, oldest first; SessionNotFound if there is no session."""
        with self._mutex:
            self._get(session_id)
            rows = self._conn.execute(
                "SELECT id, author, content, ts FROM messages WHERE session_id = ? ORDER BY id",
                (session_id,),
            ).fetchall()
        return [Message(*row) for row in rows]

    def post(self, session_id: str, author: str, content: str) -> tuple[Message, Session]:
        """Store ``author``'s message if it is their turn, and pass the turn on.

        Returns:
            the stored message and the session after it.

        Raises:
            SessionNotFound, NotAParticipant, OutOfTurn.
        """
        with self._mutex:
            with self._conn:
                session = self._get(session_id)
                if author not in session.participants:
                    raise NotAParticipant(author)
                if author != session.next_participant:
                    raise OutOfTurn(session.next_participant)
                ts = utc_now()
                cursor = self._conn.execute(
                    "INSERT INTO messages (session_id, author, content, ts) VALUES (?, ?, ?, ?)",
                    (session_id, author, content, ts),
                )
                self._advance(session_id, session.turns)
            after = self._get(session_id)
        assert cursor.lastrowid is not None
        return Message(cursor.lastrowid, author, content, ts), after

    def pass_turn(self, session_id: str, turns: int) -> Session:
        """Skip the turn numbered ``turns`` (if it is still the current one)."""
        with self._mutex:
            with self._conn:
                self._advance(session_id, turns)
            return self._get(session_id)

    def _advance(self, session_id: str, turns: int) -> None:
        self._conn.execute(
            "UPDATE sessions SET turns = turns + 1 WHERE id = ? AND turns = ?",
            (session_id, turns),
        )


def _session(row: sqlite3.Row | tuple[Any, ...]) -> Session:
    session_id, title, participants, created_at, turns, count = row
    return Session(session_id, title, tuple(json.loads(participants)), created_at, turns, count)
