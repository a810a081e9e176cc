"""The httpx client for calls to other services, plugins or an LLM endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx


def is_https(url: str) -> bool:
    """Whether ``url`` is an ``https`` URL (the scheme in any case: ``HTTPS://`` too)."""
    try:
        return urlsplit(url).scheme == "https"
    except ValueError:
        return False


def outbound_client(*, timeout: float, tls: bool = False) -> httpx.AsyncClient:
    """An httpx client for calls to other services, plugins or an LLM endpoint.

    Proxy variables of the environment are ignored (``trust_env=False``: these calls are
    local), redirects are not followed, and ``timeout`` bounds every phase of a request.

    Args:
        timeout: seconds for connect, read, write and pool each.
        tls: verify certificates against the CA bundle, for ``https`` URLs (decide it with
            :func:`is_https`). Without it the client has an SSL context with no trusted CA
            (every https call fails, nothing is trusted by accident), which saves the
            ~1 MiB and 40 ms the bundle costs.
    """
    import ssl

    import httpx

    verify: ssl.SSLContext | bool = True if tls else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout), trust_env=False, follow_redirects=False, verify=verify
    )
