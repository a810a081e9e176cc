"""Listening sockets the supervisor holds for its services (``socket = true``).

The supervisor binds a service's ``host:port`` once, before any of its processes starts,
and keeps it for the whole run. Every process of the service (each replica, each restart)
gets the same listening socket as its fd 3, with ``LISTEN_FDS=1``, ``LISTEN_FDNAMES`` and
``LISTEN_PID`` as systemd passes sockets (see ``spawn``). Connections that arrive while no
process accepts wait in the socket's backlog instead of being refused.

Nothing here imports trio: the sockets are bound before the first services are started,
while the supervisor is still loading.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass

from hearthlink_trio.config import Config, Service
from hearthlink_trio.process.procfs import port_holder

#: The file descriptor a passed socket gets in the service (as systemd's SD_LISTEN_FDS_START).
LISTEN_FD = 3


@dataclass(frozen=True)
class Address:
    """Where a held socket listens; a reload that keeps it keeps the socket."""

    host: str
    port: int


def address_of(service: Service) -> Address | None:
    """The address the supervisor holds for ``service``, or None (no ``socket = true``)."""
    if not service.socket or service.port is None:
        return None
    return Address("127.0.0.1" if service.host == "localhost" else service.host, service.port)


def bind_listening(address: Address) -> socket.socket:
    """A TCP socket bound to ``address`` and listening with the largest backlog allowed.

    SO_REUSEADDR as the services bind themselves: connections of a previous run still in
    TIME_WAIT do not make the port busy. The socket is not inheritable; the spawn passes it
    to the service processes explicitly.

    Raises:
        OSError: it cannot be bound; its message names the port's holder when one is found.
    """
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.host, address.port))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        holder = port_holder(address.port)
        raise OSError(exc.errno, f"{reason} (held by {holder})" if holder else reason) from None
    return sock


def _all(service: Service) -> bool:
    return True


class HeldSockets:
    """The listening sockets of a run, one per service table with ``socket = true`` (its
    replicas share it)."""

    def __init__(self) -> None:
        self._by_group: dict[str, tuple[Address, socket.socket]] = {}

    def fd_for(self, service: Service) -> int | None:
        """The listening socket's fd for a process of ``service``, or None."""
        held = self._by_group.get(service.group or service.name)
        if held is None or held[0] != address_of(service):
            return None
        return held[1].fileno()

    def bind(self, config: Config, required: Callable[[Service], bool] = _all) -> list[str]:
        """Hold the sockets ``config`` asks for: keep each one whose address is unchanged,
        bind the new ones, close those no longer asked for. Returns one line per socket
        that could not be bound (``Port P unavailable for NAME service: reason``), for the
        tables with a ``required`` service (the others, not started by this run, are held
        if their port is free, and bind it themselves later otherwise)."""
        wanted: dict[str, tuple[Address, Service]] = {}
        needed: set[str] = set()
        for service in config.services:
            address = address_of(service)
            if address is not None:
                wanted.setdefault(service.group or service.name, (address, service))
                if required(service):
                    needed.add(service.group or service.name)
        for group in list(self._by_group):
            if group not in wanted or wanted[group][0] != self._by_group[group][0]:
                self._by_group.pop(group)[1].close()
        problems = []
        for group, (address, service) in wanted.items():
            if group in self._by_group:
                continue
            try:
                self._by_group[group] = (address, bind_listening(address))
            except OSError as exc:
                if group in needed:
                    problems.append(
                        f"Port {address.port} unavailable for {service.name} service: "
                        f"{exc.strerror}"
                    )
        return problems

    def groups(self) -> dict[str, Address]:
        """The service tables whose socket is held, with its address."""
        return {group: address for group, (address, _) in self._by_group.items()}

    def close(self) -> None:
        for _, sock in self._by_group.values():
            with contextlib.suppress(OSError):
                sock.close()
        self._by_group.clear()
