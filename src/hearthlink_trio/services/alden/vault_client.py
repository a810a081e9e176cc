"""Alden's side of the Vault API: its memories live in namespace ``alden``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hearthlink_trio.services.alden.memory import Memory
from hearthlink_trio.services.common.outbound import is_https, outbound_client

if TYPE_CHECKING:
    import httpx

NAMESPACE = "alden"

log = logging.getLogger("hearthlink.alden")


class VaultUnavailable(Exception):
    """The Vault cannot be used now (down, too slow, refusing, failing): retry later."""


class RecordRejected(Exception):
    """The Vault refused this one record for good (4xx); retrying it will not help."""


@dataclass(frozen=True)
class Listing:
    key: str
    version: int
    updated_at: str


class VaultClient:
    """Reads and writes Alden's records; every failure of the Vault is VaultUnavailable."""

    def __init__(self, base_url: str, token: str, *, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        # httpx is imported at the first outbound call, not at start: it is ~2.5 MiB of
        # RSS and ~50 ms of start-up a service that is never asked to call out can skip.
        import httpx

        if self._client is None:
            self._client = outbound_client(timeout=self._timeout, tls=is_https(self.base_url))
        url = f"{self.base_url}{path}"
        try:
            response = await self._client.request(method, url, headers=self._headers, **kwargs)
        except httpx.TimeoutException:
            raise VaultUnavailable(f"no answer from {url} within {self._timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise VaultUnavailable(f"cannot reach {url}: {exc or type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise VaultUnavailable(
                f"the Vault refused Alden's token ({response.status_code});"
                " is HEARTHLINK_API_TOKEN the same for both?"
            )
        if response.status_code == 429 or (
            response.status_code >= 500 and not _is_integrity_error(response)
        ):
            raise VaultUnavailable(f"the Vault answered {response.status_code}")
        return response

    async def ping(self) -> None:
        response = await self._request("GET", "/health")
        if response.status_code != 200:
            raise VaultUnavailable(f"the Vault's /health answered {response.status_code}")

    async def list(self) -> list[Listing]:
        response = await self._request("GET", f"/v1/memories/{NAMESPACE}")
        try:
            if response.status_code != 200:
                raise ValueError(response.status_code)
            return [
                Listing(str(item["key"]), int(item["version"]), str(item["updated_at"]))
                for item in response.json()["items"]
            ]
        except (ValueError, KeyError, TypeError):
            raise VaultUnavailable(
                f"unexpected answer to the listing ({response.status_code})"
            ) from None

    async def get(self, listing: Listing) -> Memory | None:
        """The memory in record ``listing.key``; None if gone or not a memory."""
        response = await self._request("GET", f"/v1/memories/{NAMESPACE}/{listing.key}")
        if _is_integrity_error(response):
            # The Vault keeps serving the other records when one fails its check.
            log.warning(
                "Vault record %s/%s failed its integrity check; skipped", NAMESPACE, listing.key
            )
            return None
        if response.status_code != 200:
            return None
        try:
            value = response.json()["value"]
        except (ValueError, KeyError, TypeError):
            return None
        return Memory.from_value(listing.key, value, updated_at=listing.updated_at)

    async def put(self, memory: Memory) -> int:
        """Store ``memory`` under its key; the record's version."""
        response = await self._request(
            "PUT", f"/v1/memories/{NAMESPACE}/{memory.key}", json={"value": memory.value()}
        )
        if response.status_code != 200:
            raise RecordRejected(f"the Vault refused record {memory.key}: {response.status_code}")
        try:
            return int(response.json()["version"])
        except (ValueError, KeyError, TypeError):
            return 0


def _is_integrity_error(response: httpx.Response) -> bool:
    """The Vault's answer for one record that fails authentication."""
    if response.status_code != 500:
        return False
    try:
        return bool(response.json().get("error") == "integrity")
    except (ValueError, AttributeError):
        return False
