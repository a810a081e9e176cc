"""The request body limit of every service: 1 MiB, whether announced or chunked."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hearthlink_trio.services.common.errors import error_response

#: Largest accepted request body, chunked or not.
MAX_BODY_BYTES = 1024 * 1024


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
