"""What an HTTP health answer means: one judgement for the supervisor's probe and for the
launcher's checks before the supervisor loads (this module imports no trio)."""

from __future__ import annotations

import json


def judge_answer(
    status: int, content_type: str, body: bytes, *, expected: int, json_body: bool
) -> str | None:
    """None if an answer with ``status``, ``content_type`` and ``body`` passes (HTTP
    ``expected`` and, with ``json_body``, a JSON body whose ``status`` is ``"healthy"``),
    else why not (``HTTP 503``, ``status 'starting'``…)."""
    if status != expected:
        return f"HTTP {status}"
    if not json_body:
        return None
    if not content_type.startswith("application/json"):
        return f"not JSON (Content-Type {content_type or 'missing'})"
    try:
        obj = json.loads(body)
    except ValueError:
        return "invalid JSON body"
    value = obj.get("status") if isinstance(obj, dict) else None
    if value != "healthy":
        return f"status {value!r}"
    return None
