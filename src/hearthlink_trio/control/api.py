"""The control API as a plain ASGI application (no framework: nothing heavy to import).

Routes::

    GET  /v1/health                   200 {"status": ..., "services": [ServiceStatus, ...]}
    POST /v1/services/{name}/restart  202 {"accepted": true, "result": "<what happens>"};
                                      404 for an unknown name
    POST /v1/shutdown                 202 {"accepted": true, ...}

Every error is ``{"error": <code>, "detail": <text>}``: 404 for an unknown route, 405 (with
``Allow``) for a wrong method, 500 if the controller itself fails.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

log = logging.getLogger("hearthlink.control")

_RESTART_ROUTE = re.compile(r"/v1/services/([^/]+)/restart")


class Controller(Protocol):
    """What the control API needs from the supervisor.

    The methods are called from the trio thread (inside the supervisor's ``trio.run``), so
    they may set trio events or start tasks, but must not block.
    """

    def health(self) -> dict[str, Any]:
        """The whole ``/v1/health`` object: ``{"status": ..., "services": [...]}``."""
        ...

    def restart(self, name: str) -> str:
        """Ask for a manual restart of service ``name``; returns what will happen.
        ``KeyError`` if there is none."""
        ...

    def shutdown(self) -> None:
        """Ask for a graceful stop of everything (returns at once)."""
        ...


class ControlApp:
    """The three routes as a plain ASGI application (no framework: nothing to import)."""

    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await _run_lifespan(receive, send)
        elif scope["type"] == "http":
            status, body, headers = self._dispatch(scope)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *headers,
                    ],
                    "trailers": False,
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})
        # Websockets are not offered: returning without accepting makes hypercorn refuse.

    def _dispatch(self, scope: HTTPScope) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        method, path = scope["method"], scope["path"]
        try:
            if path == "/v1/health":
                if method != "GET":
                    return _method_not_allowed(method, path, "GET")
                return _json(200, self._controller.health())
            if path == "/v1/shutdown":
                if method != "POST":
                    return _method_not_allowed(method, path, "POST")
                self._controller.shutdown()
                return _json(202, {"accepted": True, "action": "shutdown"})
            match = _RESTART_ROUTE.fullmatch(path)
            if match is not None:
                if method != "POST":
                    return _method_not_allowed(method, path, "POST")
                return self._restart(match.group(1))
        except Exception:
            # The supervisor must outlive a bug in what it reports; the caller gets a 500.
            log.exception("control API: %s %s failed", method, path)
            return _error(500, "internal", f"{method} {path} failed inside the supervisor")
        return _error(404, "not_found", f"no route for {method} {path}")

    def _restart(self, name: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        try:
            what = self._controller.restart(name)
        except KeyError:
            known = ", ".join(sorted(s["name"] for s in self._controller.health()["services"]))
            detail = f"no service named {name!r} (services: {known or 'none'})"
            return _error(404, "unknown_service", detail)
        return _json(202, {"accepted": True, "action": "restart", "service": name, "result": what})


async def _run_lifespan(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    # Nothing to set up or tear down, but answering keeps hypercorn from logging that the
    # app "does not support lifespan".
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _json(status: int, payload: Any) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    return status, json.dumps(payload).encode(), []


def _error(status: int, code: str, detail: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    return _json(status, {"error": code, "detail": detail})


def _method_not_allowed(
    method: str, path: str, allowed: str
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    status, body, _ = _error(405, "method_not_allowed", f"{path} accepts {allowed}, not {method}")
    return status, body, [(b"allow", allowed.encode())]
