"""Alden's recall ranking and memory records, without a process."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from hearthlink_trio.services.alden.memory import Memory, new_key, recall, terms
from hearthlink_trio.services.common.validation import NAME_PATTERN


def memory(key: str, user: str, *, session_id: str | None = None, ts: str = "") -> Memory:
    return Memory(key, user, "", ts or f"2025-01-01T00:00:{key.zfill(2)}Z", session_id)


def test_terms_drop_stopwords_short_words_and_plural_s() -> None:
    assert terms("What is MY favourite colours, Ana? I like glass & 3D") == {
        "favourite",
        "colour",
        "ana",
        "like",
        "glass",
        "3d",
    }
    assert terms("the a I you") == set()


def test_rare_shared_words_rank_first_and_unrelated_are_left_out() -> None:
    pool = [
        memory("1", "I went to the market on Monday"),
        memory("2", "The market sells fresh figs"),
        memory("3", "Figs give me hiccups"),
        memory("4", "Monday is laundry day"),
    ]
    assert [m.key for m in recall(pool, "Where can I buy figs at the market?")] == ["2", "3", "1"]
    assert recall(pool, "telescope") == []
    assert recall(pool, "the and of") == []
    assert recall([], "figs") == []


def test_same_session_then_recency_break_ties() -> None:
    pool = [
        memory("1", "pancakes", session_id="a"),
        memory("2", "pancakes", session_id="b"),
        memory("3", "pancakes", session_id="a"),
    ]
    assert [m.key for m in recall(pool, "pancakes", session_id="b")] == ["2", "3", "1"]
    assert [m.key for m in recall(pool, "pancakes", limit=2)] == ["3", "2"]


def test_vault_values_that_are_or_are_not_memories() -> None:
    full = Memory.from_value("k", {"user": "u", "reply": "r", "ts": "t", "session_id": "s"})
    assert full == Memory("k", "u", "r", "t", "s")
    assert full.value() == {"user": "u", "reply": "r", "ts": "t", "session_id": "s"}
    note = Memory.from_value("n", "a plain note", updated_at="2025-01-01T00:00:00Z")
    assert note == Memory("n", "a plain note", "", "2025-01-01T00:00:00Z", None)
    partial = Memory.from_value("p", {"user": "only", "session_id": 5}, updated_at="t0")
    assert partial == Memory("p", "only", "", "t0", None)
    for value in (None, 1, [], {}, {"user": 3}, "   "):
        assert Memory.from_value("x", value) is None


def test_new_keys_are_valid_names_unique_and_time_ordered() -> None:
    early = datetime(2025, 1, 1, tzinfo=UTC)
    late = datetime(2025, 1, 2, tzinfo=UTC)
    keys = [new_key(early) for _ in range(100)]
    assert len(set(keys)) == 100
    assert all(re.match(NAME_PATTERN, key) for key in keys)
    assert max(keys) < new_key(late)
