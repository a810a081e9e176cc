"""The synchronous client of the control API, used by ``status``, ``restart`` and ``stop``."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hearthlink_trio.control.errors import ControlError, NotRunning, UnknownService

if TYPE_CHECKING:
    import httpx


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
        return self._request("POST", f"/v1/services/{name}/restart")

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

    def _request(self, method: str, path: str) -> dict[str, Any]:
        # Connecting once first sorts out "not running" cleanly, and spares httpcore's sync
        # Unix-socket connect, which leaks its socket when the connection is refused
        # (httpcore 1.0.9, _backends/sync.py), that case but for a supervisor that dies in
        # between.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(self.timeout)
            try:
                probe.connect(os.fspath(self.socket_path))
            except OSError as exc:
                raise self._connect_error(exc) from exc
        import httpx  # only the CLI's client needs it, never the supervisor

        transport = httpx.HTTPTransport(uds=os.fspath(self.socket_path))
        try:
            with httpx.Client(transport=transport, timeout=self.timeout, trust_env=False) as client:
                response = client.request(method, f"http://hearthlink{path}")
        except httpx.ConnectError as exc:
            raise self._connect_error(_os_error(exc) or exc) from exc
        except httpx.TimeoutException as exc:
            raise self._connect_error(TimeoutError()) from exc
        except httpx.TransportError as exc:
            raise ControlError(f"talking to the supervisor on {self.socket_path}: {exc}") from exc
        return self._decode(response)

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

    def _decode(self, response: httpx.Response) -> dict[str, Any]:
        try:
            payload = response.json()
        except ValueError as exc:
            raise ControlError(
                f"the supervisor answered {response.status_code} with a body that is not JSON"
            ) from exc
        if not isinstance(payload, dict):
            raise ControlError(f"the supervisor answered {response.status_code} with {payload!r}")
        if response.is_success:
            return payload
        detail = str(payload.get("detail", payload))
        if payload.get("error") == "unknown_service":
            raise UnknownService(detail)
        raise ControlError(f"the supervisor answered {response.status_code}: {detail}")


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


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError at the root of an httpx exception chain, if there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
