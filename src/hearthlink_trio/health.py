"""The health probe (SPEC §5.1): one shared HTTP client for every service's probes."""

from __future__ import annotations

import json
from types import TracebackType

import httpx
import trio

#: Connections kept open beyond one per service (restarts briefly need a second).
SPARE_CONNECTIONS = 8


def _reason(exc: httpx.TransportError) -> str:
    text = str(exc)
    for known in ("Connection refused", "Connection reset by peer", "Name or service not known"):
        if known in text:
            return known
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return text or "Connection refused"
    return text or type(exc).__name__


class Prober:
    """Probes ``/health`` URLs. A probe passes on HTTP 200 with a JSON body whose
    ``status`` is ``"healthy"``, within the timeout.
    """

    def __init__(self, *, services: int, timeout: float) -> None:
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            trust_env=False,  # HTTP_PROXY must not send loopback probes to a proxy
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=services + SPARE_CONNECTIONS,
                max_keepalive_connections=services + SPARE_CONNECTIONS,
            ),
            headers={"User-Agent": "hearthlink-probe"},
        )

    async def __aenter__(self) -> Prober:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await self._client.aclose()

    async def probe(self, url: str) -> str | None:
        """None if healthy, else a short reason (``Connection refused``, ``HTTP 503``…)."""
        with trio.move_on_after(self.timeout):
            try:
                response = await self._client.get(url)
            except httpx.TransportError as exc:
                return _reason(exc)
            if response.status_code != 200:
                return f"HTTP {response.status_code}"
            ctype = response.headers.get("content-type", "")
            if not ctype.startswith("application/json"):
                return f"not JSON (Content-Type {ctype or 'missing'})"
            try:
                body = json.loads(response.content)
            except ValueError:
                return "invalid JSON body"
            status = body.get("status") if isinstance(body, dict) else None
            if status != "healthy":
                return f"status {status!r}"
            return None
        return f"timed out after {self.timeout:g}s"
