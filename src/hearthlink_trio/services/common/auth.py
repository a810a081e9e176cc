"""Bearer-token authentication: every route but ``/health`` needs the service token."""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Header

from hearthlink_trio.services.common.errors import ApiError
from hearthlink_trio.services.common.settings import ConfigurationError

if TYPE_CHECKING:
    from fastapi import FastAPI

TOKEN_ENV = "HEARTHLINK_API_TOKEN"


def api_token() -> str:
    """The token of ``$HEARTHLINK_API_TOKEN`` (ConfigurationError when unset)."""
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise ConfigurationError(f"{TOKEN_ENV} is not set; the service refuses to run open")
    return token


def make_auth(token: str) -> Callable[..., Awaitable[None]]:
    """The dependency that lets a request through only with ``Bearer <token>``."""
    expected = f"Bearer {token}".encode()

    async def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        # Constant-time comparison of the whole header, so timing says nothing of the token.
        if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
            raise ApiError(401, "missing or wrong bearer token")

    return require_token


def auth_dependency(app: FastAPI) -> Any:
    """The dependency to put on every protected route or router of ``app``."""
    return Depends(app.state.require_token)
