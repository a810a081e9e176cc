"""The ``{"error", "detail"}`` JSON answer every service gives for every error."""

from __future__ import annotations

from fastapi.responses import JSONResponse

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


class ApiError(Exception):
    """Raise from a route to answer ``{"error": code, "detail": detail}`` with ``status``."""

    def __init__(self, status: int, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code or ERROR_CODES.get(status, "error")


def error_response(status: int, detail: str, *, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": code or ERROR_CODES.get(status, "error"), "detail": detail}, status_code=status
    )
