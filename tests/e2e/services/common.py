"""Checks the four services' tests share: what the common foundation promises every service.

Each service's test module calls these with its own routes and bodies, so a reader sees there
what is checked, and here how.
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import TOKEN, ServiceProcess, assert_error, health_ok, run_service

VAULT = "hearthlink_trio.services.vault"
JSON = {"content-type": "application/json"}
MIB = 1024 * 1024
#: A timestamp as the services write it: UTC, milliseconds, ``Z`` (``_util.utc_now``).
UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

#: ``Authorization`` headers that must not open a protected route (None: no header at all).
BAD_AUTHORIZATIONS = [
    None,
    "",
    f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}",
    f"bearer {TOKEN}",
    f"Basic {TOKEN}",
    TOKEN,
    f"Bearer  {TOKEN}",
]


@contextlib.contextmanager
def vault(data_dir: Path, key: str, *, port: int | None = None) -> Iterator[ServiceProcess]:
    """A running Vault on ``data_dir`` under ``key``."""
    with run_service(VAULT, data_dir, env={"HEARTHLINK_VAULT_KEY": key}, port=port) as service:
        yield service


def assert_open_health(service: ServiceProcess, name: str) -> dict[str, Any]:
    """``/health`` answers without a token, in the shape every service shares; its body."""
    with service.client(token=None) as anonymous:
        response = anonymous.get("/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["status"] == "healthy"
    assert body["service"] == name
    assert body["version"] == "0.1.0"
    assert body["timestamp"].endswith(("Z", "+00:00"))
    return body


def assert_only_health_is_open(
    service: ServiceProcess, authorization: str | None, protected: list[tuple[str, str, Any]]
) -> None:
    """With ``authorization``, each ``(method, url, JSON body)`` is 401; ``/health`` is 200."""
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(base_url=service.url, headers=headers, trust_env=False) as intruder:
        for method, url, body in protected:
            assert_error(intruder.request(method, url, json=body), 401, "unauthorized")
        assert intruder.get("/health").status_code == 200


def malformed_id(case: tuple[Any, ...]) -> str:
    """A test id for a case of :func:`assert_refused`: method, url (cut short) and status."""
    method, url, _headers, _content, status = case[:5]
    return f"{method} {url[:40]} {status}"


def assert_refused(
    client: httpx.Client,
    method: str,
    url: str,
    headers: dict[str, str],
    content: bytes | None,
    status: int,
    code: str | None = None,
) -> None:
    """The request gets a JSON error with ``status`` (and error ``code`` if given)."""
    assert_error(client.request(method, url, headers=headers, content=content), status, code)


def assert_not_json_is_400(client: httpx.Client, method: str, url: str, content: bytes) -> None:
    """``content`` sent as ``text/plain`` is a 400 saying the body must be JSON (no 415)."""
    response = client.request(method, url, content=content, headers={"content-type": "text/plain"})
    assert_error(response, 400, "bad_request")
    assert "Content-Type: application/json" in response.json()["detail"]


def assert_too_large(
    client: httpx.Client, method: str, url: str, content: bytes | Iterator[bytes]
) -> None:
    """``content`` is refused with 413: bytes go with a Content-Length, an iterator chunked."""
    assert_error(client.request(method, url, content=content, headers=JSON), 413)


def chunks_over_1_mib(
    first: bytes = b"", fill: bytes = b" ", last: bytes = b"{}"
) -> Iterator[bytes]:
    """17 chunks of 64 KiB of ``fill`` (1 MiB + 64 KiB) between ``first`` and ``last``."""
    if first:
        yield first
    for _ in range(17):
        yield fill * 65536
    yield last


def assert_still_healthy(service: ServiceProcess) -> None:
    """The service answers ``/health``, still runs, and has logged no traceback."""
    assert health_ok(f"{service.url}/health")
    assert service.proc.poll() is None
    assert "Traceback" not in service.output()


def assert_sigterm_stops_it_within_two_seconds(service: ServiceProcess) -> None:
    """SIGTERM ends the service, cleanly, in under 2 s (it is killed after 10 s)."""
    stopping = time.monotonic()
    assert service.stop(signal.SIGTERM, timeout=10) in (0, -signal.SIGTERM)
    assert time.monotonic() - stopping < 2.0
