"""Where Alden's replies come from: an OpenAI-compatible chat endpoint, or offline.

``HEARTHLINK_LLM_URL`` set (e.g. ``http://127.0.0.1:11434/v1`` for a local server):
replies come from ``POST <url>/chat/completions`` with ``HEARTHLINK_LLM_MODEL`` (default
``gpt-4o-mini``), ``HEARTHLINK_LLM_API_KEY`` as bearer token when set, and
``HEARTHLINK_LLM_TIMEOUT`` seconds (default 60). The recalled memories go into the system
prompt. Otherwise the built-in offline responder answers: deterministically, from the
message and the recalled memories alone.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol

from hearthlink_trio.services.common.outbound import is_https, outbound_client
from hearthlink_trio.services.common.settings import env_number

if TYPE_CHECKING:
    from collections.abc import Sequence

    import httpx

    from hearthlink_trio.services.alden.memory import Memory

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_LLM_TIMEOUT = 60.0
#: Longest reply kept (and stored in the Vault); a longer one is cut.
MAX_REPLY_CHARS = 64 * 1024
_QUOTE_CHARS = 200

SYSTEM_PROMPT = (
    "You are Alden, a warm and concise personal assistant with a long-term memory. "
    "Use what the user told you earlier when it helps; do not invent memories."
)


class ResponderError(Exception):
    """No reply could be made; ``status`` is 502 (the endpoint failed) or 504 (too slow)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class Responder(Protocol):
    async def reply(self, message: str, recalled: Sequence[Memory]) -> str: ...

    async def aclose(self) -> None: ...


def _quote(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _QUOTE_CHARS:
        text = text[: _QUOTE_CHARS - 1] + "…"
    return f"“{text}”"


class OfflineResponder:
    """A deterministic reply built from the message and what it recalls."""

    async def reply(self, message: str, recalled: Sequence[Memory]) -> str:
        if not recalled:
            return f"I'm Alden (offline mode). I've noted {_quote(message)} and will remember it."
        memories = "; ".join(_quote(memory.user) for memory in recalled)
        return (
            f"I'm Alden (offline mode). On {_quote(message)}, I remember you told me: {memories}."
        )

    async def aclose(self) -> None:
        return None


class LlmResponder:
    """Replies from an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, url: str, *, model: str, api_key: str, timeout: float) -> None:
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else f"{url}/chat/completions"
        self.model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_env(cls) -> LlmResponder | None:
        url = os.environ.get("HEARTHLINK_LLM_URL", "").strip()
        if not url:
            return None
        return cls(
            url,
            model=os.environ.get("HEARTHLINK_LLM_MODEL", "").strip() or DEFAULT_MODEL,
            api_key=os.environ.get("HEARTHLINK_LLM_API_KEY", "").strip(),
            timeout=env_number("HEARTHLINK_LLM_TIMEOUT", DEFAULT_LLM_TIMEOUT, minimum=0.01),
        )

    def messages(self, message: str, recalled: Sequence[Memory]) -> list[dict[str, str]]:
        system = SYSTEM_PROMPT
        if recalled:
            lines = "\n".join(f"- {memory.user}" for memory in recalled)
            system += f"\n\nWhat the user told you earlier (most relevant first):\n{lines}"
        return [{"role": "system", "content": system}, {"role": "user", "content": message}]

    async def reply(self, message: str, recalled: Sequence[Memory]) -> str:
        # httpx is imported at the first outbound call, not at start: it is ~2.5 MiB of
        # RSS and ~50 ms of start-up a service that is never asked to call out can skip.
        import httpx

        if self._client is None:
            self._client = outbound_client(timeout=self._timeout, tls=is_https(self.url))
        body = {"model": self.model, "messages": self.messages(message, recalled)}
        try:
            response = await self._client.post(self.url, json=body, headers=self._headers)
        except httpx.TimeoutException:
            raise ResponderError(
                504, f"the language model did not answer within {self._timeout:g}s"
            ) from None
        except httpx.HTTPError as exc:
            raise ResponderError(
                502, f"cannot reach the language model at {self.url}: {exc or type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise ResponderError(502, f"the language model answered {response.status_code}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise ResponderError(502, "the language model's answer has no message content")
        return content[:MAX_REPLY_CHARS]

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
