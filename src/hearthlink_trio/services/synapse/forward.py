"""Synapse's calls to plugins: one POST per invocation, its answer capped and decoded."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import Response

from hearthlink_trio.services.common.outbound import is_https, outbound_client

if TYPE_CHECKING:
    import httpx

    from hearthlink_trio.services.synapse.registry import Plugin

#: Largest plugin answer passed on; a bigger one is a plugin failure (502).
MAX_RESULT_BYTES = 1024 * 1024


class PluginFailed(Exception):
    """The plugin was reached (or tried) and failed; the message is the 502 detail."""


class _TooLarge(Exception):
    pass


class Clients:
    """One outbound httpx client for http plugins and one for https, made when first needed."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._clients: dict[bool, httpx.AsyncClient] = {}

    def for_url(self, url: str) -> httpx.AsyncClient:
        tls = is_https(url)
        if tls not in self._clients:
            self._clients[tls] = outbound_client(timeout=self._timeout, tls=tls)
        return self._clients[tls]

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()


async def forward(
    clients: Clients, plugin: Plugin, action: str, payload: dict[str, Any], *, timeout: float
) -> tuple[int, Any]:
    """POST ``payload`` to the plugin's action; its status and decoded answer.

    Raises:
        TimeoutError: no complete answer within ``timeout`` seconds (all phases together).
        PluginFailed: unreachable, 5xx, or an answer over :data:`MAX_RESULT_BYTES`.
    """
    # httpx is imported at the first outbound call, not at start: it is ~2.5 MiB of
    # RSS and ~50 ms of start-up a service that is never asked to call out can skip.
    import httpx

    url = plugin.action_url(action)
    client = clients.for_url(url)
    try:
        with anyio.fail_after(timeout):
            async with client.stream("POST", url, json=payload) as response:
                raw = await _read_capped(response)
    except httpx.TimeoutException:
        raise TimeoutError from None
    except httpx.HTTPError as exc:
        raise PluginFailed(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    except _TooLarge:
        raise PluginFailed(f"answer larger than {MAX_RESULT_BYTES} bytes") from None
    try:
        result = _decode(raw)
    except RecursionError:
        raise PluginFailed("answer nested too deeply") from None
    if response.status_code >= 500:
        detail = result.get("detail") if isinstance(result, dict) else result
        raise PluginFailed(f"answered {response.status_code}: {str(detail)[:200]}")
    return response.status_code, result


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESULT_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def render(body: dict[str, Any]) -> Response:
    """``body`` as the JSON response, serialized here so a bad plugin answer is a 502.

    Raises:
        PluginFailed: the answer holds NaN or Infinity, or is nested too deeply to encode.
    """
    try:
        content = json.dumps(body, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:
        raise PluginFailed("answer nested too deeply") from None
    except ValueError:
        raise PluginFailed("answer holds NaN or Infinity, which JSON does not allow") from None
    return Response(content, media_type="application/json")


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")
