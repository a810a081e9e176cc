"""The control API as a plain ASGI application (no framework: nothing heavy to import).

Routes::

    GET  /v1/health                   200 {"status": ..., "services": [ServiceStatus, ...]}
    GET  /v1/events                   200, newline-delimited JSON until the client leaves:
                                      a snapshot, then every event (?service=, ?types=)
    GET  /v1/events/recent?seconds=S  200 {"events": [...]}: the state changes and supervisor
                                      events of the last S seconds (default 60) still kept
    POST /v1/services/{name}/restart  202 {"accepted": true, "result": "<what happens>"};
    POST /v1/services/{name}/stop     404 for an unknown name
    POST /v1/services/{name}/start
    POST /v1/reload                   202 {"accepted": true, "result": "<what happens>"}
    POST /v1/shutdown                 202 {"accepted": true, ...}

Every error is ``{"error": <code>, "detail": <text>}``: 404 for an unknown route, 405 (with
``Allow``) for a wrong method, 500 if the controller itself fails; 400 for a WebSocket
upgrade, 505 for HTTP/2, 413 for a body over 64 KiB, 408 for a body that does not arrive.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import parse_qs

import trio

from hearthlink_trio.control.hub import EventHub, Subscription
from hearthlink_trio.control.stream import (
    EVENT_TYPES,
    Dropped,
    Snapshot,
    StreamEvent,
    to_json,
)

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

log = logging.getLogger("hearthlink.control")

_SERVICE_ROUTE = re.compile(r"/v1/services/([^/]+)/(restart|stop|start)")
#: The window of ``GET /v1/events/recent`` without ``?seconds=``.
DEFAULT_RECENT_SECONDS = 60.0
#: How long a dropped reader gets to take the line that says why, before it is cut off.
DROP_NOTICE_TIMEOUT = 1.0
#: The most events written in one chunk of the stream.
MAX_BATCH_EVENTS = 32
#: The largest request body read (the routes take none); a larger one is refused (413).
MAX_BODY_BYTES = 64 * 1024
#: How long a request's body may take to arrive before the request is refused (408).
BODY_TIMEOUT = 10.0

Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]


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

    def stop_service(self, name: str) -> str:
        """Stop service ``name`` and keep it stopped; returns what will happen.
        ``KeyError`` if there is none."""
        ...

    def start_service(self, name: str) -> str:
        """Start service ``name`` again after a stop; returns what will happen.
        ``KeyError`` if there is none."""
        ...

    def reload(self) -> str:
        """Re-read the config file and apply the difference (as SIGHUP); returns what will
        happen."""
        ...

    def shutdown(self) -> None:
        """Ask for a graceful stop of everything (returns at once)."""
        ...

    @property
    def events(self) -> EventHub:
        """Where ``GET /v1/events`` subscribes."""
        ...


class ControlApp:
    """The routes as a plain ASGI application (no framework: nothing to import)."""

    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await _run_lifespan(receive, send)
        elif scope["type"] == "http":
            refused = await _refuse_request(scope, receive)
            if refused == "gone":
                return
            if refused is not None:
                await _send_answer(send, refused)
                return
            if scope["path"] == "/v1/events" and scope["method"] == "GET":
                await self._events(scope, receive, send)
                return
            await _send_answer(send, self._dispatch(scope))
        elif scope["type"] == "websocket":
            await _refuse_websocket(receive, send)

    def _dispatch(self, scope: HTTPScope) -> Answer:
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
            if path == "/v1/events":
                return _method_not_allowed(method, path, "GET")
            if path == "/v1/events/recent":
                if method != "GET":
                    return _method_not_allowed(method, path, "GET")
                return self._recent(scope)
            if path == "/v1/reload":
                if method != "POST":
                    return _method_not_allowed(method, path, "POST")
                what = self._controller.reload()
                return _json(202, {"accepted": True, "action": "reload", "result": what})
            match = _SERVICE_ROUTE.fullmatch(path)
            if match is not None:
                if method != "POST":
                    return _method_not_allowed(method, path, "POST")
                return self._service_action(match.group(1), match.group(2))
        except Exception:
            # The supervisor must outlive a bug in what it reports; the caller gets a 500.
            log.exception("control API: %s %s failed", method, path)
            return _error(500, "internal", f"{method} {path} failed inside the supervisor")
        return _error(404, "not_found", f"no route for {method} {path}")

    def _recent(self, scope: HTTPScope) -> Answer:
        query = parse_qs(scope["query_string"].decode("latin-1"))
        raw = (query.get("seconds") or [str(DEFAULT_RECENT_SECONDS)])[-1]
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds < float("inf"):
            return _error(400, "bad_request", f"seconds must be a number 0 or more, not {raw!r}")
        events = [to_json(event) for event in self._controller.events.recent(seconds)]
        return _json(200, {"seconds": seconds, "events": events})

    def _service_action(self, name: str, action: str) -> Answer:
        act: Callable[[str], str]
        if action == "stop":
            act = self._controller.stop_service
        elif action == "start":
            act = self._controller.start_service
        else:
            act = self._controller.restart
        try:
            what = act(name)
        except KeyError:
            return self._unknown_service(name)
        return _json(202, {"accepted": True, "action": action, "service": name, "result": what})

    def _unknown_service(self, name: str) -> Answer:
        known = ", ".join(sorted(s["name"] for s in self._controller.health()["services"]))
        detail = f"no service named {name!r} (services: {known or 'none'})"
        return _error(404, "unknown_service", detail)

    async def _events(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """The event stream: a snapshot, then events as they come, until the client leaves
        or falls too far behind (then a last ``dropped`` line says so)."""
        query = parse_qs(scope["query_string"].decode("latin-1"))
        service = (query.get("service") or [""])[-1] or None
        types: set[str] | None = None
        if query.get("types"):
            types = {t for value in query["types"] for t in value.split(",") if t}
            unknown = types - EVENT_TYPES
            if unknown:
                known = ", ".join(sorted(EVENT_TYPES))
                detail = f"unknown event type(s) {', '.join(sorted(unknown))} (types: {known})"
                await _send_answer(send, _error(400, "bad_request", detail))
                return
        health = self._controller.health()
        if service is not None and service not in {s["name"] for s in health["services"]}:
            await _send_answer(send, self._unknown_service(service))
            return
        # Subscribed before the snapshot is taken, and both without a checkpoint between:
        # nothing that happens after the snapshot can be missed.
        sub = self._controller.events.subscribe(service=service, types=types)
        try:
            services = health["services"]
            if service is not None:
                services = [s for s in services if s["name"] == service]
            snapshot = Snapshot({**health, "services": services})
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/x-ndjson"),
                        (b"cache-control", b"no-cache"),
                    ],
                    "trailers": False,
                }
            )
            await _send_chunk(send, [snapshot])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
                await _pump(sub, send)
                nursery.cancel_scope.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._controller.events.unsubscribe(sub)


async def _pump(sub: Subscription, send: ASGISendCallable) -> None:
    """Send the subscription's events as they come, a batch of at most
    :data:`MAX_BATCH_EVENTS` per chunk: what a slow reader has not taken yet stays in its
    buffer, where falling :data:`~hearthlink_trio.control.hub.SUBSCRIBER_BUFFER` events
    behind drops it with its last line, rather than in one chunk it may never finish."""
    with sub.scope:
        async for event in sub.receive:
            batch = [event]
            while len(batch) < MAX_BATCH_EVENTS:
                try:
                    batch.append(sub.receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await _send_chunk(send, batch)
    if sub.dropped is not None:
        with trio.move_on_after(DROP_NOTICE_TIMEOUT):
            await _send_chunk(send, [Dropped(sub.dropped)])


async def _send_chunk(send: ASGISendCallable, events: Sequence[StreamEvent]) -> None:
    body = "".join(json.dumps(to_json(event), separators=(",", ":")) + "\n" for event in events)
    await send({"type": "http.response.body", "body": body.encode(), "more_body": True})


async def _cancel_on_disconnect(receive: ASGIReceiveCallable, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _send_answer(send: ASGISendCallable, answer: Answer) -> None:
    status, body, headers = answer
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


async def _refuse_request(
    scope: HTTPScope, receive: ASGIReceiveCallable
) -> Answer | Literal["gone"] | None:
    """None if the request may be acted on; else the answer refusing it, or ``"gone"`` when
    the client left before its request was whole (nothing is answered or done then).

    The API is HTTP/1.1 and takes no request body to speak of: a body is read in full
    before anything is done (a request cut short is never acted on), and one announced
    larger than :data:`MAX_BODY_BYTES`, or slower than :data:`BODY_TIMEOUT`, is refused.
    """
    if not scope["http_version"].startswith("1."):
        detail = f"HTTP/{scope['http_version']} is not served; the control API is HTTP/1.1"
        return _error(505, "http_version_not_supported", detail)
    headers = dict(scope["headers"])
    try:
        declared = int(headers.get(b"content-length", b"0"))
    except ValueError:
        declared = 0  # h11 refuses a malformed length before the application sees it
    if declared > MAX_BODY_BYTES:
        detail = (
            f"a request body of {declared} bytes; the control API takes at most {MAX_BODY_BYTES}"
        )
        return _error(413, "body_too_large", detail)
    if not declared and b"transfer-encoding" not in headers:
        return None
    received = 0
    with trio.move_on_after(BODY_TIMEOUT):
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return "gone"  # http.disconnect
            received += len(message["body"])
            if received > MAX_BODY_BYTES:
                detail = f"a request body over {MAX_BODY_BYTES} bytes"
                return _error(413, "body_too_large", detail)
            if not message["more_body"]:
                return None
    return _error(408, "body_timeout", f"the request body did not arrive in {BODY_TIMEOUT:g}s")


async def _refuse_websocket(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Answer a WebSocket upgrade with the API's JSON error, as a plain HTTP answer."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    status, body, _ = _error(
        400,
        "websocket_not_supported",
        "the control API is plain HTTP/1.1; GET /v1/events streams events",
    )
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


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


def _json(status: int, payload: Any) -> Answer:
    return status, json.dumps(payload).encode(), []


def _error(status: int, code: str, detail: str) -> Answer:
    return _json(status, {"error": code, "detail": detail})


def _method_not_allowed(method: str, path: str, allowed: str) -> Answer:
    status, body, _ = _error(405, "method_not_allowed", f"{path} accepts {allowed}, not {method}")
    return status, body, [(b"allow", allowed.encode())]
