"""Core's calls to the Alden agent (``POST $HEARTHLINK_ALDEN_URL/v1/chat``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hearthlink_trio.services.common.outbound import is_https, outbound_client

if TYPE_CHECKING:
    import httpx

#: The participant name Core asks for a reply when it is its turn.
AGENT = "alden"


class AgentError(Exception):
    """Alden could not give a reply; the message says why, for the ``agent_error`` field."""


class AldenClient:
    """Asks Alden for replies; the HTTP client is made at the first call."""

    def __init__(self, base_url: str, token: str, *, timeout: float) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def reply(self, message: str, session_id: str) -> str:
        """Alden's reply to ``message`` in session ``session_id``.

        Raises:
            AgentError: Alden is not configured, unreachable, too slow, answered an error or
                something else went wrong asking it (every exception but a cancellation).
        """
        try:
            return await self._reply(message, session_id)
        except AgentError:
            raise
        except Exception as exc:
            raise AgentError(f"asking alden failed: {_describe(exc)}") from None

    async def _reply(self, message: str, session_id: str) -> str:
        # httpx is imported at the first outbound call, not at start: it is ~2.5 MiB of
        # RSS and ~50 ms of start-up a service that is never asked to call out can skip.
        import httpx

        if not self._base_url:
            raise AgentError("alden is not configured (HEARTHLINK_ALDEN_URL is not set)")
        if self._client is None:
            self._client = outbound_client(timeout=self._timeout, tls=is_https(self._base_url))
        url = f"{self._base_url}/v1/chat"
        try:
            response = await self._client.post(
                url, json={"message": message, "session_id": session_id}, headers=self._headers
            )
        except httpx.TimeoutException:
            raise AgentError(f"alden did not answer within {self._timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise AgentError(f"alden could not be reached at {url}: {_reason(exc)}") from None
        if response.status_code != 200:
            raise AgentError(f"alden answered {response.status_code}: {_detail(response)}")
        try:
            reply = response.json()["reply"]
        except (ValueError, KeyError, TypeError, RecursionError):
            reply = None
        if not isinstance(reply, str):
            raise AgentError("alden answered without a reply")
        return reply

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _reason(exc: httpx.HTTPError) -> str:
    # httpx wraps the OS error; its text ("[Errno 111] Connection refused") is what helps.
    cause = exc.__context__ or exc.__cause__
    text = str(cause or exc) or type(exc).__name__
    return text


def _describe(exc: BaseException) -> str:
    """``exc`` in a line: its type and message; for a group, those of what it holds."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)[:300]
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])[:200]
    return response.reason_phrase
