"""hypercorn held to HTTP/1.1: the control API never switches a connection to HTTP/2.

hypercorn answers an ``Upgrade: h2c`` request with ``101 Switching Protocols`` and takes a
connection that opens with the HTTP/2 preface (``PRI * HTTP/2.0``) as HTTP/2, whatever the
application speaks. The control API is HTTP/1.1 (its clients, ``curl --unix-socket``
included, speak nothing else), so a connection here stays HTTP/1.1: an upgrade is ignored,
as HTTP/1.1 lets a server do (the request is answered as a plain one), and the preface
reaches the application as a request of version 2.0, which it refuses with a 505.

Imported only by the server, when it starts: hypercorn is not loaded by the thin clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import TCPServer

if TYPE_CHECKING:
    import h11


class Http11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol without its switch to HTTP/2."""

    async def _check_protocol(self, event: h11.Request) -> None:
        # hypercorn's own check sends the 101 and raises to hand the connection to its
        # HTTP/2 protocol; here every request stays an HTTP/1.1 request.
        return None


class Http11Server(TCPServer):
    """hypercorn's connection handler, serving every connection as HTTP/1.1 only."""

    @property
    def protocol(self) -> ProtocolWrapper:
        return self._wrapper

    @protocol.setter
    def protocol(self, wrapper: ProtocolWrapper) -> None:
        # The wrapper picks HTTP/1.1 for a plain socket; its protocol is swapped for the
        # one that never switches, built from the same parts.
        wrapper.protocol = Http11Protocol(
            wrapper.app,
            wrapper.config,
            wrapper.context,
            wrapper.task_group,
            wrapper.state,
            wrapper.ssl,
            wrapper.client,
            wrapper.server,
            wrapper.send,
        )
        self._wrapper = wrapper
