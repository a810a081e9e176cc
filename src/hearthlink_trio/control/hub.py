"""The event stream's fan-out: every subscriber of ``GET /v1/events`` gets its own buffer.

The supervisor publishes from its own tasks (state changes, probe results, output pumps) and
must never wait for a reader: :meth:`EventHub.publish` is synchronous, puts the event in
each interested subscriber's bounded buffer and returns. A subscriber whose buffer is full
(its reader is that far behind) is dropped on the spot: it gets no more events, its stream
ends with a :class:`~hearthlink_trio.control.stream.Dropped` line, and the supervisor says so
in its log. The events are the typed ones of :mod:`hearthlink_trio.control.stream`.

The hub also keeps the last :data:`RECENT_EVENTS` state changes and supervisor lines (never
probe results or output lines: those are many, and the log files keep the output), so a
client that was not listening can ask what changed lately (``GET /v1/events/recent``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from hearthlink_trio.control.stream import Output, StateChange, StreamEvent, SupervisorLine

__all__ = ["RECENT_EVENTS", "SUBSCRIBER_BUFFER", "EventHub", "EventLogHandler", "Subscription"]

#: Events a subscriber may have waiting before it counts as too slow and is dropped.
SUBSCRIBER_BUFFER = 1000
#: How many recent state changes and supervisor lines the hub keeps.
RECENT_EVENTS = 500


@dataclass(eq=False)
class Subscription:
    """One reader's view of the stream: its filters, its buffer, and why it was dropped."""

    service: str | None
    types: frozenset[str] | None
    send: trio.MemorySendChannel[StreamEvent]
    receive: trio.MemoryReceiveChannel[StreamEvent]
    #: Cancelled when the subscriber is dropped, so a reader waiting on its peer stops.
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    dropped: str | None = None

    def wants(self, event: StreamEvent) -> bool:
        if self.types is not None and event.type not in self.types:
            return False
        return self.service is None or event.service == self.service


class EventHub:
    """Fans published events out to every :class:`Subscription`.

    Args:
        buffer: how many events each subscriber may have waiting.
        on_drop: told (from the publishing task) each time a subscriber is dropped.
    """

    def __init__(
        self,
        *,
        buffer: int = SUBSCRIBER_BUFFER,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self._buffer = buffer
        self._subscribers: list[Subscription] = []
        self._on_drop = on_drop
        #: Why the hub was closed (the supervisor exits), once it is.
        self._closed: str | None = None
        self._recent: deque[StateChange | SupervisorLine] = deque(maxlen=RECENT_EVENTS)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(
        self, *, service: str | None = None, types: Iterable[str] | None = None
    ) -> Subscription:
        """A new subscription; end it with :meth:`unsubscribe`."""
        send, receive = trio.open_memory_channel[StreamEvent](self._buffer)
        sub = Subscription(
            service=service,
            types=None if types is None else frozenset(types),
            send=send,
            receive=receive,
        )
        if self._closed is None:
            self._subscribers.append(sub)
        else:
            send.close()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)
        sub.send.close()
        sub.receive.close()

    def close(self, message: str) -> None:
        """End every subscription now (the supervisor is exiting): each gets a last
        ``supervisor`` event saying ``message`` if its buffer has room for it, and its
        stream ends. Later subscriptions end at once."""
        self._closed = message
        last = SupervisorLine(event="exiting", message=message, level="info")
        for sub in self._subscribers:
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                sub.send.send_nowait(last)
            sub.send.close()
        self._subscribers.clear()

    def recent(self, seconds: float) -> list[StateChange | SupervisorLine]:
        """The kept state changes and supervisor lines of the last ``seconds``, oldest
        first."""
        since = time.time() - seconds
        return [event for event in self._recent if event.ts >= since]

    def publish(self, event: StreamEvent) -> None:
        """Give ``event`` to every subscriber that wants it; never blocks."""
        if isinstance(event, StateChange | SupervisorLine):
            self._recent.append(event)
        if not self._subscribers:
            return
        for sub in list(self._subscribers):
            if sub.wants(event):
                self._offer(sub, event)

    def publish_lines(self, service: str, stream: str, lines: list[str]) -> None:
        """One ``output`` event per line of a batch a service wrote."""
        if not self._subscribers:
            return
        ts = time.time()
        for line in lines:
            self.publish(Output(service=service, stream=stream, line=line, ts=ts))

    def _offer(self, sub: Subscription, event: StreamEvent) -> None:
        try:
            sub.send.send_nowait(event)
        except trio.WouldBlock:
            self._drop(sub, f"the reader fell {self._buffer} events behind")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._subscribers.remove(sub)

    def _drop(self, sub: Subscription, reason: str) -> None:
        self._subscribers.remove(sub)
        sub.dropped = reason
        sub.send.close()
        sub.scope.cancel()
        if self._on_drop is not None:
            self._on_drop(reason)


class EventLogHandler(logging.Handler):
    """Publishes each supervisor event written to the event log as a ``supervisor`` event."""

    def __init__(self, hub: EventHub) -> None:
        super().__init__(logging.DEBUG)
        self._hub = hub

    def emit(self, record: logging.LogRecord) -> None:
        # Published even with no subscriber: the hub keeps it among the recent events.
        self._hub.publish(
            SupervisorLine(
                event=getattr(record, "event", "message"),
                message=record.getMessage(),
                level=record.levelname.lower(),
                fields=getattr(record, "fields", None) or {},
                ts=record.created,
            )
        )
