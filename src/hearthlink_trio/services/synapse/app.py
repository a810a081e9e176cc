"""Synapse's HTTP API: a plugin registry and a guarded gateway to the plugins.

Routes, all behind the bearer token:

- ``POST /v1/plugins`` ``{"name", "version", "base_url", "permissions": [action, ...],
  "description"?}`` -> 201 and the plugin; 409 if the name exists; 403 if ``base_url``'s
  host is not loopback nor in ``HEARTHLINK_SYNAPSE_ALLOW``; 422 for a bad manifest.
- ``GET /v1/plugins`` -> ``{"items": [plugin, ...]}``; ``GET /v1/plugins/{name}``
- ``DELETE /v1/plugins/{name}`` -> 204
- ``POST /v1/plugins/{name}/invoke`` ``{"action", "payload"?: {...}}`` -> ``{"plugin",
  "action", "status", "result"}`` where ``status`` is the plugin's HTTP status (2xx-4xx:
  the plugin answered) and ``result`` its JSON (or text) answer. Refused before the plugin
  is reached: 404 unknown plugin, 403 action not permitted, 503 circuit open (with
  Retry-After), 429 rate limit (with Retry-After). After forwarding: 504 past the
  timeout, 502 when the plugin fails (unreachable, 5xx, answer over 1 MiB, nested too
  deeply, or holding NaN or Infinity); every 502 and 504 counts against the breaker.

A plugin is ``{"name", "version", "base_url", "permissions", "description",
"registered_at", "circuit"}``; ``circuit`` is ``closed``, ``open`` or ``half-open``.

Tunables (environment): ``HEARTHLINK_SYNAPSE_TIMEOUT`` (10 s),
``HEARTHLINK_SYNAPSE_RATE`` (50 calls/s) and ``HEARTHLINK_SYNAPSE_BURST`` (100) per plugin,
``HEARTHLINK_SYNAPSE_BREAKER_FAILURES`` (5 consecutive failures open the circuit),
``HEARTHLINK_SYNAPSE_BREAKER_RESET`` (30 s open before a trial call),
``HEARTHLINK_SYNAPSE_ALLOW`` (extra hosts, comma-separated).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, FastAPI, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from starlette.exceptions import HTTPException

from hearthlink_trio.services.common.app import create_app
from hearthlink_trio.services.common.auth import auth_dependency
from hearthlink_trio.services.common.database import run_blocking
from hearthlink_trio.services.common.errors import ApiError
from hearthlink_trio.services.common.settings import env_number, service_data_dir
from hearthlink_trio.services.common.validation import NAME_PATTERN, Name
from hearthlink_trio.services.synapse.forward import Clients, PluginFailed, forward, render
from hearthlink_trio.services.synapse.guard import BreakerOpen, CircuitBreaker, TokenBucket
from hearthlink_trio.services.synapse.registry import (
    BadBaseUrl,
    HostNotAllowed,
    Plugin,
    PluginExists,
    PluginNotFound,
    Registry,
    check_base_url,
    parse_allow_list,
)

log = logging.getLogger("hearthlink.synapse")

SERVICE = "synapse"
DEFAULT_TIMEOUT = 10.0
DEFAULT_RATE = 50.0
DEFAULT_BURST = 100.0
DEFAULT_BREAKER_FAILURES = 5
DEFAULT_BREAKER_RESET = 30.0
MAX_PERMISSIONS = 64

ActionName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


class ManifestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ActionName
    version: str = Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
    base_url: str = Field(min_length=1, max_length=2048)
    permissions: list[ActionName] = Field(max_length=MAX_PERMISSIONS)
    description: str = Field(default="", max_length=1000)

    @field_validator("permissions")
    @classmethod
    def _unique(cls, permissions: list[str]) -> list[str]:
        if len(set(permissions)) != len(permissions):
            raise ValueError("permissions must be unique")
        return permissions


class InvokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: ActionName
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("payload")
    @classmethod
    def _finite(cls, payload: dict[str, Any]) -> dict[str, Any]:
        # Python's JSON parser accepts NaN and Infinity; JSON (and the plugin) does not.
        try:
            json.dumps(payload, allow_nan=False)
        except ValueError:
            raise ValueError("payload must not hold NaN or Infinity") from None
        return payload


@dataclass(frozen=True)
class Settings:
    timeout: float
    rate: float
    burst: float
    breaker_failures: int
    breaker_reset: float
    allowed_hosts: frozenset[str]

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            timeout=env_number("HEARTHLINK_SYNAPSE_TIMEOUT", DEFAULT_TIMEOUT, minimum=0.001),
            rate=env_number("HEARTHLINK_SYNAPSE_RATE", DEFAULT_RATE),
            burst=env_number("HEARTHLINK_SYNAPSE_BURST", DEFAULT_BURST, minimum=1),
            breaker_failures=int(
                env_number(
                    "HEARTHLINK_SYNAPSE_BREAKER_FAILURES", DEFAULT_BREAKER_FAILURES, minimum=1
                )
            ),
            breaker_reset=env_number("HEARTHLINK_SYNAPSE_BREAKER_RESET", DEFAULT_BREAKER_RESET),
            allowed_hosts=parse_allow_list(os.environ.get("HEARTHLINK_SYNAPSE_ALLOW", "")),
        )


@dataclass
class Guard:
    """The in-memory protection of one registered plugin (reset when it is re-registered)."""

    bucket: TokenBucket
    breaker: CircuitBreaker


def build_app() -> FastAPI:
    """Synapse's app; registry and settings are loaded here so errors exit 78 at start."""
    settings = Settings.from_env()
    registry = Registry(service_data_dir(SERVICE) / "synapse.db")
    clients = Clients(settings.timeout)
    guards: dict[str, Guard] = {}

    def guard_of(name: str) -> Guard:
        if name not in guards:
            guards[name] = Guard(
                TokenBucket(settings.rate, settings.burst),
                CircuitBreaker(settings.breaker_failures, settings.breaker_reset),
            )
        return guards[name]

    def plugin_json(plugin: Plugin) -> dict[str, Any]:
        body = plugin.to_json()
        body["circuit"] = guard_of(plugin.name).breaker.state.value
        return body

    def lookup(name: str) -> Plugin:
        try:
            return registry.get(name)
        except PluginNotFound:
            raise ApiError(404, f"no plugin {name!r}") from None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await clients.aclose()
            registry.close()

    app = create_app(SERVICE, lifespan=lifespan)
    router = APIRouter(prefix="/v1/plugins", dependencies=[auth_dependency(app)])

    @router.post("", status_code=201)
    async def register(manifest: ManifestIn) -> dict[str, Any]:
        try:
            check_base_url(manifest.base_url, settings.allowed_hosts)
        except HostNotAllowed as exc:
            raise ApiError(403, str(exc)) from None
        except BadBaseUrl as exc:
            raise ApiError(422, str(exc)) from None
        try:
            plugin = await run_blocking(
                registry.add,
                manifest.name,
                manifest.version,
                manifest.base_url,
                manifest.permissions,
                manifest.description,
            )
        except PluginExists:
            raise ApiError(409, f"a plugin named {manifest.name!r} is registered already") from None
        guards.pop(plugin.name, None)
        return plugin_json(plugin)

    @router.get("")
    async def list_plugins() -> dict[str, Any]:
        return {"items": [plugin_json(plugin) for plugin in registry.all()]}

    @router.get("/{name}")
    async def get_plugin(name: Name) -> dict[str, Any]:
        return plugin_json(lookup(name))

    @router.delete("/{name}", status_code=204)
    async def unregister(name: Name) -> Response:
        try:
            await run_blocking(registry.remove, name)
        except PluginNotFound:
            raise ApiError(404, f"no plugin {name!r}") from None
        guards.pop(name, None)
        return Response(status_code=204)

    @router.post("/{name}/invoke")
    async def invoke(name: Name, body: InvokeIn) -> Response:
        plugin = lookup(name)
        if body.action not in plugin.permissions:
            raise ApiError(403, f"plugin {name!r} has no permission for action {body.action!r}")
        guard = guard_of(name)
        try:
            guard.breaker.before_call()
        except BreakerOpen as exc:
            raise _refusal(503, f"plugin {name!r} is failing; {exc}", exc.retry_after) from None
        wait = guard.bucket.take()
        if wait:
            guard.breaker.abandon()
            raise _refusal(429, f"rate limit of plugin {name!r} reached", wait)
        try:
            status, result = await forward(
                clients, plugin, body.action, body.payload, timeout=settings.timeout
            )
            answer = render(
                {"plugin": name, "action": body.action, "status": status, "result": result}
            )
        except TimeoutError:
            guard.breaker.failure()
            raise ApiError(
                504, f"plugin {name!r} did not answer within {settings.timeout:g}s"
            ) from None
        except PluginFailed as exc:
            guard.breaker.failure()
            raise ApiError(502, f"plugin {name!r} failed: {exc}") from None
        except anyio.get_cancelled_exc_class():
            # Cancelled (the caller went away, or shutdown): no verdict on the plugin.
            guard.breaker.abandon()
            raise
        except Exception as exc:
            # Anything else the call to the plugin raised counts against the plugin.
            guard.breaker.failure()
            log.error("invoking plugin %r failed with %s", name, type(exc).__name__)
            raise ApiError(502, f"plugin {name!r} failed: {type(exc).__name__}") from None
        guard.breaker.success()
        return answer

    app.include_router(router)
    return app


def _refusal(status: int, detail: str, retry_after: float) -> HTTPException:
    seconds = max(1, math.ceil(retry_after)) if math.isfinite(retry_after) else 60
    return HTTPException(status, detail, headers={"Retry-After": str(seconds)})
