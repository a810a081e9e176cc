"""The synchronous client of the control API, used by ``status``, ``restart``, ``stop``,
``start``, ``wait``, ``status --watch`` and ``mcp``."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import h11

from hearthlink_trio.control.errors import ControlError, NotRunning, UnknownService

#: How often ``wait`` tries again to reach a supervisor that is still starting.
STARTING_RETRY_SECONDS = 0.05
#: States in which a waited-for service counts as ready (a task that completed, too).
READY_STATES = frozenset({"healthy", "completed"})
#: Bytes asked of the socket at a time.
READ_SIZE = 65536
#: What a request that broke off raises: the socket's errors, or an answer that is not HTTP.
_BROKEN = (OSError, h11.ProtocolError)


@dataclass(frozen=True)
class WaitResult:
    """What :meth:`ControlClient.wait_ready` found.

    ``ready`` is True when every waited-for service was ready; otherwise ``laggards`` maps
    each service that was not to its state (and error message, where it has one), and
    ``gave_up`` is True when one of them had given up (``failed``) rather than the time
    running out.
    """

    ready: bool
    services: tuple[str, ...]
    laggards: dict[str, str]
    gave_up: bool = False

    def describe(self) -> str:
        """One line for a person: the laggards with their state and error, or, when all
        were ready, their names."""
        if self.ready:
            return ", ".join(self.services) or "no services"
        return "; ".join(f"{name} ({why})" for name, why in self.laggards.items())


class ControlClient:
    """A synchronous client of the control API at ``socket_path``.

    Every method makes one request with ``timeout`` seconds to answer.

    Raises (from every method):
        NotRunning: the socket is absent or refuses connections.
        UnknownService: the named service does not exist (``restart``).
        ControlError: anything else (timeout, a broken answer, a server error).
    """

    def __init__(
        self, socket_path: Path, *, timeout: float = 5.0, data_dir: Path | None = None
    ) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        # The default socket is <data_dir>/run/hearthlink.sock: name the data dir in messages.
        if data_dir is None and socket_path.parent.name == "run":
            data_dir = socket_path.parent.parent
        self.data_dir = data_dir

    def health(self) -> dict[str, Any]:
        """``GET /v1/health``: the overall status and every service's status."""
        return self._request("GET", "/v1/health")

    def restart(self, name: str) -> dict[str, Any]:
        """``POST /v1/services/{name}/restart``; returns once the restart is accepted."""
        return self._request("POST", _service_path(name, "restart"))

    def stop_service(self, name: str) -> dict[str, Any]:
        """``POST /v1/services/{name}/stop``: stop it and keep it stopped."""
        return self._request("POST", _service_path(name, "stop"))

    def start_service(self, name: str) -> dict[str, Any]:
        """``POST /v1/services/{name}/start``: start a service stopped by hand again."""
        return self._request("POST", _service_path(name, "start"))

    def reload(self) -> dict[str, Any]:
        """``POST /v1/reload``: re-read the config file (as SIGHUP)."""
        return self._request("POST", "/v1/reload")

    def recent_events(self, seconds: float) -> list[dict[str, Any]]:
        """``GET /v1/events/recent``: the state changes and supervisor events of the last
        ``seconds`` that the supervisor still keeps, oldest first."""
        answer = self._request("GET", f"/v1/events/recent?{urlencode({'seconds': seconds})}")
        events: list[dict[str, Any]] = answer.get("events", [])
        return events

    def events(
        self, *, service: str | None = None, types: Iterable[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """``GET /v1/events``: the snapshot, then each event as it comes, until the
        supervisor goes away (the iterator ends) or the caller stops iterating."""
        params: dict[str, str] = {}
        if service is not None:
            params["service"] = service
        if types is not None:
            params["types"] = ",".join(types)
        query = f"?{urlencode(params)}" if params else ""
        connection = self._connection(read_timeout=None)
        try:
            response = self._send(connection, "GET", f"/v1/events{query}")
            if response.status != 200:
                self._decode(response.status, response.read())
            while True:
                try:
                    line = response.readline()
                except _BROKEN:
                    return  # the supervisor went away mid-stream
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            connection.close()

    def wait_ready(self, names: Sequence[str] = (), *, timeout: float) -> WaitResult:
        """Wait until the named services (else all) are healthy, a task completed.

        Follows the event stream (no polling): the snapshot says where each service is,
        then every state change is applied as it comes. With no names, services not
        selected for this run and services stopped by hand are not waited for. A name that
        is not a service but has replicas (``web`` for ``web-1`` and ``web-2``) means them
        all. Returns early, not ready, as soon as a waited-for service has given up
        (``failed``): it does not start again by itself. A supervisor that is starting (it
        holds the data dir's lock, its socket is not there yet) is waited for too.

        Raises:
            NotRunning: no supervisor answers, or it went away while waiting.
            UnknownService: a name matches no service.
            ControlError: anything else.
        """
        # The event schema is loaded by the commands that read a stream only.
        from hearthlink_trio.control.stream import StateChange, parse

        deadline = time.monotonic() + timeout
        connection = self._connect_while_starting(deadline)
        try:
            response = self._send(connection, "GET", "/v1/events?types=state")
            if response.status != 200:
                self._decode(response.status, response.read())
            snapshot = self._next_event(response)
            if snapshot is None or snapshot.get("type") != "snapshot":
                raise ControlError("the supervisor's event stream did not start with a snapshot")
            services: dict[str, dict[str, Any]] = {s["name"]: s for s in snapshot["services"]}
            targets = _wait_targets(names, services)
            while True:
                laggards = {
                    name: _why_not_ready(services[name])
                    for name in targets
                    if services[name].get("state") not in READY_STATES
                }
                if not laggards:
                    return WaitResult(True, targets, {})
                if any(services[name].get("state") == "failed" for name in laggards):
                    return WaitResult(False, targets, laggards, gave_up=True)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return WaitResult(False, targets, laggards)
                assert connection.sock is not None, "the connection was opened above"
                connection.sock.settimeout(remaining)
                try:
                    event = self._next_event(response)
                except TimeoutError:
                    return WaitResult(False, targets, laggards)
                if event is None:
                    raise NotRunning("the supervisor stopped while waiting for its services")
                change = parse(event)
                if isinstance(change, StateChange) and change.service in services:
                    services[change.service].update(
                        state=change.state, error_message=change.error_message
                    )
        finally:
            connection.close()

    def _connect_while_starting(self, deadline: float) -> _UnixConnection:
        """A connection for a stream read until ``deadline``; while a supervisor holds the
        data dir's lock but has no control socket yet (it is starting), tried again."""
        while True:
            try:
                return self._connection(read_timeout=max(deadline - time.monotonic(), 0.001))
            except ControlError:
                starting = self.data_dir is not None and _lock_holder(self.data_dir) is not None
                if not starting or time.monotonic() >= deadline:
                    raise
            time.sleep(STARTING_RETRY_SECONDS)

    @staticmethod
    def _next_event(response: _Response) -> dict[str, Any] | None:
        """The next JSON line of a stream; None once it ends. TimeoutError passes through."""
        while True:
            try:
                line = response.readline()
            except TimeoutError:
                raise
            except _BROKEN:
                return None  # the supervisor went away mid-stream
            if not line:
                return None
            if line.strip():
                event: dict[str, Any] = json.loads(line)
                return event

    def shutdown(self) -> dict[str, Any]:
        """``POST /v1/shutdown``; returns once the stop is accepted, not when it is done."""
        return self._request("POST", "/v1/shutdown")

    def wait_gone(self, timeout: float, *, interval: float = 0.1) -> bool:
        """Poll until no supervisor answers any more; False if one still does at ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.health()
            except NotRunning:
                return True
            except ControlError:
                # Mid-shutdown the server may drop a request: that is not "gone" yet.
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def _connection(self, *, read_timeout: float | None) -> _UnixConnection:
        connection = _UnixConnection(os.fspath(self.socket_path), self.timeout, read_timeout)
        try:
            connection.connect()
        except OSError as exc:
            connection.close()
            raise self._connect_error(exc) from exc
        return connection

    def _send(self, connection: _UnixConnection, method: str, path: str) -> _Response:
        try:
            return connection.request(method, path)
        except TimeoutError as exc:
            raise self._connect_error(exc) from exc
        except _BROKEN as exc:
            raise ControlError(f"talking to the supervisor on {self.socket_path}: {exc}") from exc

    def _request(self, method: str, path: str) -> dict[str, Any]:
        connection = self._connection(read_timeout=self.timeout)
        try:
            response = self._send(connection, method, path)
            try:
                body = response.read()
            except _BROKEN as exc:
                raise ControlError(
                    f"talking to the supervisor on {self.socket_path}: {exc}"
                ) from exc
            return self._decode(response.status, body)
        finally:
            connection.close()

    def _connect_error(self, exc: BaseException) -> ControlError:
        where = f" for data dir {self.data_dir}" if self.data_dir is not None else ""
        if isinstance(exc, FileNotFoundError):
            holder = _lock_holder(self.data_dir) if self.data_dir is not None else None
            if holder is not None:
                return ControlError(
                    f"the supervisor (pid {holder}) running{where} has no control socket at "
                    f"{self.socket_path} (deleted?); it creates it again within a few seconds"
                )
            reason = f"no control socket at {self.socket_path}"
        elif isinstance(exc, ConnectionRefusedError):
            reason = (
                f"control socket {self.socket_path} refuses connections; "
                "a previous run probably crashed"
            )
        elif isinstance(exc, TimeoutError):
            return ControlError(
                f"the supervisor on {self.socket_path} did not answer within {self.timeout:g}s"
            )
        else:
            return ControlError(f"cannot connect to {self.socket_path}: {exc}")
        return NotRunning(f"no hearthlink supervisor is running{where} ({reason})")

    def _decode(self, status: int, body: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise ControlError(
                f"the supervisor answered {status} with a body that is not JSON"
            ) from exc
        if not isinstance(payload, dict):
            raise ControlError(f"the supervisor answered {status} with {payload!r}")
        if 200 <= status < 300:
            return payload
        detail = str(payload.get("detail", payload))
        if payload.get("error") == "unknown_service":
            raise UnknownService(detail)
        raise ControlError(f"the supervisor answered {status}: {detail}")


def _service_path(name: str, action: str) -> str:
    # Percent-encoded: a name with a space or a non-ASCII letter is asked about (and
    # answered "no service named …") rather than failing to make a request line.
    return f"/v1/services/{quote(name, safe='')}/{action}"


def _wait_targets(names: Sequence[str], services: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """The services :meth:`ControlClient.wait_ready` waits for, in the supervisor's order."""
    if not names:
        return tuple(
            name
            for name, status in services.items()
            if status.get("selected", True) and status.get("state") != "stopped"
        )
    chosen: list[str] = []
    for name in names:
        if name in services:
            found = [name]
        else:
            found = [
                s for s in services if s.rpartition("-")[0] == name and s[len(name) + 1 :].isdigit()
            ]
        if not found:
            known = ", ".join(services) or "none"
            raise UnknownService(f"no service named {name!r} (services: {known})")
        chosen.extend(n for n in found if n not in chosen)
    return tuple(chosen)


def _why_not_ready(status: dict[str, Any]) -> str:
    state = str(status.get("state") or status.get("status") or "unknown")
    error = status.get("error_message")
    return f"{state}: {error}" if error else state


def _lock_holder(data_dir: Path) -> str | None:
    """The pid in the data dir's lock file if a supervisor holds the lock, else None."""
    import fcntl

    try:
        fd = os.open(data_dir / "run" / "supervisor.lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


class _UnixConnection:
    """One HTTP/1.1 request and its answer over the supervisor's Unix socket.

    h11 speaks the protocol over a plain socket: the commands that only ask one thing
    answer without importing an HTTP stack (and its async backends), nor the standard
    library's client (which loads the email parser and ssl for its headers and https).
    """

    def __init__(self, path: str, connect_timeout: float, read_timeout: float | None) -> None:
        self._path = path
        self.timeout = connect_timeout
        self._read_timeout = read_timeout
        self.sock: socket.socket | None = None
        self._protocol = h11.Connection(h11.CLIENT)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
            sock.settimeout(self._read_timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, method: str, target: str) -> _Response:
        """Send the request (no body) and read up to the answer's status and headers.

        Raises:
            OSError: the socket failed (TimeoutError: no answer in time).
            h11.ProtocolError: the answer is not HTTP/1.1.
        """
        assert self.sock is not None, "connect() first"
        headers = [("Host", "hearthlink")]
        if method == "POST":
            headers.append(("Content-Length", "0"))
        data = self._protocol.send(h11.Request(method=method, target=target, headers=headers))
        data = (data or b"") + (self._protocol.send(h11.EndOfMessage()) or b"")
        self.sock.sendall(data)
        while True:
            event = self.next_event()
            if isinstance(event, h11.Response):
                return _Response(self, event.status_code)
            if not isinstance(event, h11.InformationalResponse):
                raise h11.RemoteProtocolError(f"the answer began with {type(event).__name__}")

    def next_event(self) -> h11.Event:
        """The next event of the answer, read from the socket as it is needed."""
        assert self.sock is not None, "connect() first"
        while True:
            event = self._protocol.next_event()
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:  # only after the answer's end, where nothing reads on
                raise h11.RemoteProtocolError("read past the end of the answer")
            self._protocol.receive_data(self.sock.recv(READ_SIZE))


class _Response:
    """The body of an answer, read whole or a line at a time."""

    def __init__(self, connection: _UnixConnection, status: int) -> None:
        self.status = status
        self._connection = connection
        self._buffer = b""
        self._ended = False

    def read(self) -> bytes:
        """The rest of the body."""
        while self._more():
            pass
        body, self._buffer = self._buffer, b""
        return body

    def readline(self) -> bytes:
        """The next line of the body with its newline; the rest without one at the end;
        b"" once the body has ended."""
        while b"\n" not in self._buffer and self._more():
            pass
        cut = self._buffer.find(b"\n") + 1 or len(self._buffer)
        line, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return line

    def _more(self) -> bool:
        """Read the next piece of the body into the buffer; False once the body has ended."""
        if self._ended:
            return False
        event = self._connection.next_event()
        if isinstance(event, h11.Data):
            self._buffer += event.data
            return True
        self._ended = True  # EndOfMessage, or the connection closed where a body may end
        return False
