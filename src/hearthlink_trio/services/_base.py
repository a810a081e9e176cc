"""The foundation every Hearthlink service is built on.

One place for what all four services share (SPEC §7): the ``--host/--port`` command line,
``GET /health``, bearer-token auth, the ``{"error", "detail"}`` JSON error shape for every
error (404 and 405 included), the 1 MiB body limit (chunked or not), name validation, state
under ``$HEARTHLINK_DATA_DIR/<name>/``, a start-up log line and a clean exit on SIGTERM.

A service module builds its routes on an :class:`fastapi.APIRouter` made by
:func:`protected_router` and calls :func:`serve` from its ``main``.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Header, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hearthlink_trio import __version__
from hearthlink_trio._util import utc_now

if TYPE_CHECKING:
    import sqlite3

    import httpx

#: Names of namespaces, keys, plugins, actions and session ids (SPEC §7).
NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"
#: A path parameter holding a name; anything else is answered 422.
Name = Annotated[str, PathParam(pattern=NAME_PATTERN)]
#: Largest accepted request body, chunked or not (SPEC §7).
MAX_BODY_BYTES = 1024 * 1024
#: Longest message, in characters, Core accepts and Alden answers (one limit for both, so
#: every message Core takes can get a reply).
MAX_MESSAGE_CHARS = 32 * 1024
#: Exit status meaning "my configuration is wrong, restarting will not help" (SPEC §5.3).
EX_CONFIG = 78
#: How long uvicorn lets open requests finish after SIGTERM (SPEC §7 wants exit within 2 s).
GRACEFUL_SHUTDOWN_SECONDS = 1
#: Modules that would be imported although no service uses them, each import guarded by
#: its importer (which carries on when it fails): ``rich`` and ``pygments`` (httpx's
#: command-line client), ``trio`` (httpcore's trio backend: services run on asyncio under
#: uvicorn), ``h2`` (HTTP/2) and ``pydantic.v1`` (imported by FastAPI only to refuse v1
#: models). About 10 MiB of RSS per service, a fifth of the budget (SPEC §9).
UNUSED_OPTIONAL_MODULES = ("rich", "pygments", "trio", "h2", "pydantic.v1")

ERROR_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    429: "rate_limited",
    500: "internal",
    502: "bad_gateway",
    503: "unavailable",
    504: "timeout",
}

log = logging.getLogger("hearthlink.service")


class ApiError(Exception):
    """Raise from a route to answer ``{"error": code, "detail": detail}`` with ``status``."""

    def __init__(self, status: int, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code or ERROR_CODES.get(status, "error")


class ConfigurationError(Exception):
    """The service cannot start with the environment it was given (exit status 78)."""


def error_response(status: int, detail: str, *, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": code or ERROR_CODES.get(status, "error"), "detail": detail}, status_code=status
    )


def api_token() -> str:
    token = os.environ.get("HEARTHLINK_API_TOKEN", "")
    if not token:
        raise ConfigurationError("HEARTHLINK_API_TOKEN is not set; the service refuses to run open")
    return token


def service_data_dir(name: str) -> Path:
    """``$HEARTHLINK_DATA_DIR/<name>/``, created owner-only."""
    base = os.environ.get("HEARTHLINK_DATA_DIR")
    if not base:
        raise ConfigurationError("HEARTHLINK_DATA_DIR is not set")
    path = Path(base).expanduser() / name
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def env_number(name: str, default: float, *, minimum: float = 0.0) -> float:
    """The number in environment variable ``name`` (``default`` when unset or empty).

    Raises:
        ConfigurationError: the value is not a finite number >= ``minimum`` (exit 78).
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum or value == float("inf"):
        raise ConfigurationError(f"{name}={raw!r}: expected a number >= {minimum:g}")
    return value


def open_database(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open (creating) a service's SQLite database in WAL mode.

    Writes go through ``with conn:`` (one transaction, committed or rolled back); every
    statement waits up to 5 s for a lock instead of failing at once.

    Raises:
        ConfigurationError: the file cannot be opened as a database (exit 78).
    """
    # Imported here: a service without a database (Alden) saves the library's ~1 MiB.
    import sqlite3

    try:
        conn = sqlite3.connect(path, timeout=5.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        raise ConfigurationError(f"cannot open database {path}: {exc}") from exc
    return conn


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


def skip_unused_optional_imports() -> None:
    """Make :data:`UNUSED_OPTIONAL_MODULES` unimportable in this (service) process.

    Their importers guard these imports and carry on cleanly when they fail; a module that
    is already loaded is left alone. Call it before anything imports httpx or declares a
    route.
    """
    for module in UNUSED_OPTIONAL_MODULES:
        sys.modules.setdefault(module, None)  # type: ignore[arg-type]


def _make_auth(token: str) -> Callable[..., Awaitable[None]]:
    expected = f"Bearer {token}".encode()

    async def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        # Constant-time comparison of the whole header, so timing says nothing of the token.
        if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
            raise ApiError(401, "missing or wrong bearer token")

    return require_token


class BodyLimitMiddleware:
    """Answer 413 for bodies over ``limit`` bytes, whether announced or chunked.

    A declared ``Content-Length`` over the limit is refused before the body is read; a
    chunked body is counted as it streams and refused once it passes the limit.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await error_response(400, "invalid Content-Length")(scope, receive, send)
                    return
                if declared > self.limit:
                    await self._too_large(scope, receive, send)
                    return
        received = 0
        started = False
        answered = False

        async def counting_receive() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Answer 413 here: FastAPI turns any error of a body read into its own
                    # 400, so the exception alone would not reach the handler below.
                    if not started and not answered:
                        answered = True
                        await self._too_large(scope, receive, send)
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # the 413 is out; the app's answer to the aborted read is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started and not answered:
                await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, f"request body is larger than {self.limit} bytes")
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


#: The ``detail`` of the 400 for a body not declared as JSON.
NOT_JSON_DETAIL = "the body must be UTF-8 JSON (Content-Type: application/json)"


def is_json_content_type(content_type: str) -> bool:
    """``application/json`` (or ``application/*+json``), with no charset or a UTF-8 one."""
    media_type, *params = content_type.split(";")
    media_type = media_type.strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return False
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


def create_app(
    name: str,
    *,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    health_extra: Callable[[], dict[str, Any]] | None = None,
) -> FastAPI:
    """A FastAPI app with the shared behaviour of every service.

    Args:
        name: the service name (``vault``); ``/health`` reports ``<name>-api``.
        lifespan: the service's own start-up/shut-down context.
        health_extra: fields added to the ``/health`` body (Alden's ``memory_mode``).
    """
    app = FastAPI(
        title=f"{name}-api",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    # SPEC §7: a trailing slash is a 404, never a redirect.
    app.router.redirect_slashes = False

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.detail, code=exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error_response(exc.status_code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return error_response(400, "the body is not valid JSON")
        content_type = request.headers.get("content-type", "")
        has_body = request.headers.get("content-length", "0") != "0" or (
            "transfer-encoding" in request.headers
        )
        body_errors = any(tuple(err.get("loc", ()))[:1] == ("body",) for err in errors)
        if body_errors and has_body and not is_json_content_type(content_type):
            # FastAPI hands a body that is not declared JSON to validation as bytes, which
            # would read "Input should be a valid dictionary": say what is wrong instead.
            return error_response(400, NOT_JSON_DETAIL)
        problems = []
        for err in errors:
            where = ".".join(str(part) for part in err.get("loc", ()))
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(422, "; ".join(problems) or "invalid request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never a traceback on the wire; the log gets the type only (values may be secret).
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return error_response(500, "internal error")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "healthy",
            "service": f"{name}-api",
            "version": __version__,
            "timestamp": utc_now(),
        }
        if health_extra is not None:
            body.update(health_extra())
        return body

    app.add_middleware(BodyLimitMiddleware)
    app.state.require_token = _make_auth(api_token())
    return app


def auth_dependency(app: FastAPI) -> Any:
    """The dependency to put on every protected route or router of ``app``."""
    return Depends(app.state.require_token)


def parse_args(name: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=name, description=f"The Hearthlink {name} service")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    return parser.parse_args(argv)


def serve(name: str, build: Callable[[], FastAPI], argv: Sequence[str] | None = None) -> int:
    """Parse ``--host/--port``, build the app and run it under uvicorn until SIGTERM.

    Returns the process exit status: 0 after SIGTERM/SIGINT, 78 (EX_CONFIG) when the
    environment is wrong (the message goes to stderr).
    """
    import uvicorn

    args = parse_args(name, argv)
    logging.basicConfig(level=logging.INFO, format=f"{name}: %(levelname)s %(message)s")
    skip_unused_optional_imports()
    try:
        app = build()
    except ConfigurationError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr, flush=True)
        return EX_CONFIG
    log.info("%s-api %s starting on http://%s:%d", name, __version__, args.host, args.port)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=False,
        server_header=False,
        ws="none",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    server.run()
    # A lifespan that failed at start-up leaves ``started`` unset: report it as an error.
    return 0 if server.started else 1
