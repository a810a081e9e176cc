"""The Vault's HTTP routes over its store, and the app factory (see ``vault.py``).

Every request to a route but ``/health`` is audited exactly once: refused (no or wrong
token: ``denied``; invalid name or body: ``rejected``) or carried out (``ok``,
``not_found``, ``integrity_error``, ``failed``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import Response

from hearthlink_trio.services.common.app import create_app
from hearthlink_trio.services.common.database import run_blocking
from hearthlink_trio.services.common.errors import ApiError
from hearthlink_trio.services.common.settings import ConfigurationError, service_data_dir
from hearthlink_trio.services.common.validation import (
    NAME_PATTERN,
    NOT_JSON_DETAIL,
    is_json_content_type,
)
from hearthlink_trio.services.vault.keys import decode_key, settle_interrupted_rotation
from hearthlink_trio.services.vault.layout import KEY_FILE, NEW_KEY_FILE
from hearthlink_trio.services.vault.store import (
    KeyMismatchError,
    RecordInfo,
    RecordIntegrityError,
    StoreError,
    VaultBusyError,
    VaultLock,
    VaultStore,
)

SERVICE = "vault"
KEY_ENV = "HEARTHLINK_VAULT_KEY"
_NAME = re.compile(NAME_PATTERN)

log = logging.getLogger("hearthlink.vault")

T = TypeVar("T")


def _valid_name(value: str) -> bool:
    # fullmatch: ``$`` alone would accept a trailing newline.
    return _NAME.fullmatch(value) is not None


def _json_response(body: Any) -> Response:
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(content=content, media_type="application/json")


def _info(info: RecordInfo) -> dict[str, Any]:
    return {
        "namespace": info.namespace,
        "key": info.key,
        "version": info.version,
        "updated_at": info.updated_at,
    }


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class VaultApi:
    """The routes, over one open :class:`VaultStore`."""

    def __init__(self, store: VaultStore, require_token: Callable[..., Awaitable[None]]) -> None:
        self.store = store
        self._require_token = require_token

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        # Every store operation commits with an fsync and appends to the audit log: it
        # runs in a worker thread, so other requests (``/health``) are served meanwhile.
        # The store's own lock orders the operations on its one connection.
        try:
            return await run_blocking(fn, *args)
        except StoreError as exc:
            log.error("store failure: %s", exc)
            raise ApiError(503, "the Vault's storage is unavailable; try again") from None

    async def _admit(
        self, request: Request, op: str, namespace: str | None, key: str | None
    ) -> None:
        """Token first, then names; a refusal is audited, then answered."""
        header = request.headers.get("authorization")
        try:
            await self._require_token(authorization=header)
        except ApiError:
            reason = "missing bearer token" if header is None else "wrong bearer token"
            await self._refuse(op, namespace, key, "denied", reason)
            raise
        for label, value in (("namespace", namespace), ("key", key)):
            if value is not None and not _valid_name(value):
                await self._refuse(op, namespace, key, "rejected", f"invalid {label}")
                raise ApiError(
                    422,
                    f"invalid {label}: a name is 1 to 128 characters of letters, digits, "
                    "'.', '_' and '-', not starting with '.'",
                )

    async def _refuse(
        self, op: str, namespace: str | None, key: str | None, outcome: str, reason: str
    ) -> None:
        # Only well-formed names go into the log; an invalid one is recorded as null.
        safe_ns = namespace if namespace is not None and _valid_name(namespace) else None
        safe_key = key if key is not None and _valid_name(key) else None
        await self._call(self.store.note, op, safe_ns, safe_key, outcome, reason)

    async def _read_value(self, request: Request, namespace: str, key: str) -> bytes:
        """The ``value`` of a ``{"value": ...}`` body as compact JSON bytes (to be sealed)."""

        async def refuse(status: int, reason: str, detail: str) -> ApiError:
            await self._refuse("put", namespace, key, "rejected", reason)
            return ApiError(status, detail)

        content_type = request.headers.get("content-type")
        if content_type is not None and not is_json_content_type(content_type):
            raise await refuse(400, "not JSON", NOT_JSON_DETAIL)
        try:
            raw = await request.body()
        except Exception:
            # Over 1 MiB (answered 413 by the body limit) or the client went away.
            await self._refuse("put", namespace, key, "rejected", "body too large or unreadable")
            raise
        if not raw.strip():
            raise await refuse(400, "empty body", 'the body is empty; send {"value": <any JSON>}')
        try:
            document = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            # UnicodeDecodeError and JSONDecodeError are ValueErrors; so is an integer too
            # long to convert. RecursionError: nesting deeper than the parser goes.
            what = "too deeply nested" if isinstance(exc, RecursionError) else "not valid JSON"
            raise await refuse(400, "malformed JSON", f"the body is {what}") from None
        if not isinstance(document, dict) or "value" not in document:
            raise await refuse(
                422, "no value", 'the body must be a JSON object {"value": <any JSON>}'
            )
        if len(document) > 1:
            extra = ", ".join(sorted(repr(name)[:40] for name in document if name != "value"))
            raise await refuse(422, "unknown fields", f"unknown field(s) in the body: {extra}")
        try:
            return json.dumps(
                document["value"], separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode()
        except (ValueError, RecursionError):
            # A number too large for a float parses as infinity, which JSON cannot hold.
            raise await refuse(
                400, "malformed JSON", "the value holds a non-finite number"
            ) from None

    async def put_memory(self, request: Request, namespace: str, key: str) -> Response:
        await self._admit(request, "put", namespace, key)
        plaintext = await self._read_value(request, namespace, key)
        info = await self._call(self.store.put, namespace, key, plaintext)
        return _json_response(_info(info))

    async def get_memory(self, request: Request, namespace: str, key: str) -> Response:
        await self._admit(request, "get", namespace, key)
        try:
            found = await self._call(self.store.get, namespace, key)
        except RecordIntegrityError:
            log.warning("record %s/%s failed authentication; not returned", namespace, key)
            raise ApiError(
                500,
                f"record {namespace}/{key} failed authentication (altered or moved "
                "ciphertext); it is not returned",
                code="integrity",
            ) from None
        if found is None:
            raise ApiError(404, f"no memory {namespace}/{key}")
        info, plaintext = found
        # The plaintext is the compact JSON this Vault sealed (authenticated just now), so
        # it is spliced in as it is rather than parsed and serialised again.
        head = json.dumps(_info(info), separators=(",", ":"), ensure_ascii=False).encode()
        content = head[:-1] + b',"value":' + plaintext + b"}"
        return Response(content=content, media_type="application/json")

    async def delete_memory(self, request: Request, namespace: str, key: str) -> Response:
        await self._admit(request, "delete", namespace, key)
        if not await self._call(self.store.delete, namespace, key):
            raise ApiError(404, f"no memory {namespace}/{key}")
        return Response(status_code=204)

    async def list_memories(self, request: Request, namespace: str) -> Response:
        await self._admit(request, "list", namespace, None)
        infos = await self._call(self.store.list_namespace, namespace)
        items = [{"key": i.key, "version": i.version, "updated_at": i.updated_at} for i in infos]
        return _json_response({"items": items})

    async def verify_audit(self, request: Request) -> Response:
        await self._admit(request, "verify", None, None)
        verdict = await self._call(self.store.verify_audit)
        body: dict[str, Any] = {"ok": verdict.ok, "entries": verdict.entries}
        if not verdict.ok:
            body["first_bad_seq"] = verdict.first_bad_seq
        return _json_response(body)


def _load_key() -> str:
    """The key of ``HEARTHLINK_VAULT_KEY``, checked to be one."""
    text = os.environ.get(KEY_ENV, "")
    if not text.strip():
        raise ConfigurationError(
            f"{KEY_ENV} is not set. The Vault needs its key: 32 random bytes in base64 "
            "(hearthlink run provides one, kept in <data_dir>/vault.key)"
        )
    try:
        decode_key(text, source=KEY_ENV)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    return text


def _open_store(directory: Path, key_text: str) -> VaultStore:
    """The store, under the key that opens it once an interrupted rotation is settled.

    The Vault lock is taken first and kept by the store, so no rotation can run between
    the settling and the opening.
    """
    try:
        lock = VaultLock.acquire(directory, purpose="start the Vault")
    except VaultBusyError as exc:
        raise ConfigurationError(str(exc)) from None
    try:
        return _settle_and_open(directory, key_text, lock)
    except BaseException:
        lock.release()
        raise


def _settle_and_open(directory: Path, key_text: str, lock: VaultLock) -> VaultStore:
    data_dir = directory.parent
    pending = (data_dir / NEW_KEY_FILE).exists()
    try:
        settled = settle_interrupted_rotation(data_dir, key_text)
    except ValueError as exc:
        raise ConfigurationError(f"cannot finish an interrupted key rotation: {exc}") from None
    if pending and not (data_dir / NEW_KEY_FILE).exists():
        which = "the new key" if settled != key_text.strip() else "the old key"
        log.warning(
            "settled an interrupted key rotation: %s opens the data and is kept in %s",
            which,
            data_dir / KEY_FILE,
        )
    key = decode_key(settled, source=KEY_ENV)
    try:
        return VaultStore.open(directory, key, lock=lock, release_lock=True)
    except KeyMismatchError:
        hint = ""
        leftover = directory.parent / NEW_KEY_FILE
        if leftover.exists():
            hint = f" A newer key, left by a key rotation, is in {leftover}."
        raise ConfigurationError(
            f"{KEY_ENV} does not match the data in {directory}: it does not decrypt the "
            "database's key check value. Nothing was changed. Start the Vault with the key "
            f"its data was written with.{hint}"
        ) from None
    except StoreError as exc:
        raise ConfigurationError(str(exc)) from None


def build_app() -> FastAPI:
    """The Vault app, its data opened and the key checked (ConfigurationError if not)."""
    key = _load_key()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            app.state.vault.store.close()

    app = create_app(SERVICE, lifespan=lifespan)
    store = _open_store(service_data_dir(SERVICE), key)
    api = VaultApi(store, app.state.require_token)
    app.state.vault = api
    memory = "/v1/memories/{namespace}/{key}"
    app.add_api_route(memory, api.put_memory, methods=["PUT"])
    app.add_api_route(memory, api.get_memory, methods=["GET"])
    app.add_api_route(memory, api.delete_memory, methods=["DELETE"], status_code=204)
    app.add_api_route("/v1/memories/{namespace}", api.list_memories, methods=["GET"])
    app.add_api_route("/v1/audit/verify", api.verify_audit, methods=["GET"])
    log.info("data in %s; audit log at entry %d", store.directory, store.audit_seq)
    return app
