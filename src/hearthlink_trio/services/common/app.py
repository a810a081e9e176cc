"""The FastAPI app every service starts from.

:func:`create_app` gives a service what all four share: ``GET /health``, the
``{"error", "detail"}`` JSON shape for every error (404 and 405 included, never a
traceback), the body limit, no redirect for a trailing slash, and the bearer-token
dependency (:func:`~hearthlink_trio.services.common.auth.auth_dependency`) for the other
routes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hearthlink_trio import __version__
from hearthlink_trio._util import utc_now
from hearthlink_trio.services.common.auth import api_token, make_auth
from hearthlink_trio.services.common.body_limit import BodyLimitMiddleware
from hearthlink_trio.services.common.errors import ApiError, error_response
from hearthlink_trio.services.common.validation import NOT_JSON_DETAIL, is_json_content_type

log = logging.getLogger("hearthlink.service")


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
    # A trailing slash is a 404, never a redirect.
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
    app.state.require_token = make_auth(api_token())
    return app
