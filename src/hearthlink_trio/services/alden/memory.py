"""Alden's memories and how it recalls them.

A memory is one exchange: what the user said, what Alden replied, when, and in which
session. Recall is a small, explainable ranking: an earlier exchange is relevant when its
user message shares words with the new message, rarer words counting more (inverse
document frequency over all memories), a shared session breaking ties before recency.
Common English words and one-letter words are ignored; a trailing plural ``s`` is
dropped, so "colours" matches "colour".
"""

from __future__ import annotations

import math
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: How many memories a reply draws on at most.
RECALL_LIMIT = 3

_WORD = re.compile(r"[^\W_]+")
_STOPWORDS_TEXT = """
a about after again all also am an and any are as at be because been before being but by
can could did do does doing don done for from had has have having he her here hers him his
how i if in into is it its just let me mine more most my no nor not now of off on once only
or other our ours out over own please same she should so some such tell than that the their
theirs them then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself
"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def terms(text: str) -> set[str]:
    """The words of ``text`` that count for recall, normalised."""
    found = set()
    for word in _WORD.findall(text.lower()):
        if len(word) < 2 or word in _STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        found.add(word)
    return found


@dataclass(frozen=True)
class Memory:
    """One exchange, stored in the Vault as one record under ``key``."""

    key: str
    user: str
    reply: str
    ts: str
    session_id: str | None

    def value(self) -> dict[str, Any]:
        """The Vault record's value."""
        return {
            "user": self.user,
            "reply": self.reply,
            "ts": self.ts,
            "session_id": self.session_id,
        }

    @classmethod
    def from_value(cls, key: str, value: object, *, updated_at: str = "") -> Memory | None:
        """A memory from a Vault record's value, or None if it is not one.

        Besides Alden's own records this accepts a bare string (a note stored in the
        ``alden`` namespace by someone else: it is recalled like a user message) and an
        object with only some of the fields.
        """
        if isinstance(value, str):
            return cls(key, value, "", updated_at, None) if value.strip() else None
        if not isinstance(value, dict) or not isinstance(value.get("user"), str):
            return None
        reply = value.get("reply")
        ts = value.get("ts")
        session_id = value.get("session_id")
        return cls(
            key,
            value["user"],
            reply if isinstance(reply, str) else "",
            ts if isinstance(ts, str) else updated_at,
            session_id if isinstance(session_id, str) else None,
        )


def new_key(now: datetime) -> str:
    """A fresh record key, chosen once per exchange: time-ordered and unique.

    Writing a memory again under the same key (a retry after a lost answer) replaces the
    record instead of adding one, so a memory is never stored twice.
    """
    return f"{now:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:12]}"


def recall(
    memories: Iterable[Memory],
    message: str,
    *,
    session_id: str | None = None,
    limit: int = RECALL_LIMIT,
) -> list[Memory]:
    """The memories most relevant to ``message``, best first (none that share no word)."""
    pool = list(memories)
    wanted = terms(message)
    if not wanted or not pool:
        return []
    vocabulary = [terms(memory.user) for memory in pool]
    frequency = _document_frequency(vocabulary)
    scored = []
    for memory, words in zip(pool, vocabulary, strict=True):
        shared = wanted & words
        if not shared:
            continue
        score = sum(math.log(1 + len(pool) / frequency[word]) for word in shared)
        same_session = session_id is not None and memory.session_id == session_id
        scored.append((score, same_session, memory.ts, memory.key, memory))
    scored.sort(reverse=True, key=lambda item: item[:4])
    return [item[4] for item in scored[:limit]]


def _document_frequency(vocabulary: Iterable[set[str]]) -> Mapping[str, int]:
    counts: Counter[str] = Counter()
    for words in vocabulary:
        counts.update(words)
    return counts
