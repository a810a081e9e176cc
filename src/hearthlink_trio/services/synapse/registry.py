"""Synapse's plugin registry in SQLite (``<data_dir>/synapse/synapse.db``), and the rule
for where a plugin may live."""

from __future__ import annotations

import ipaddress
import json
import sqlite3
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hearthlink_trio._util import utc_now
from hearthlink_trio.services.common.database import open_database

if TYPE_CHECKING:
    from collections.abc import Collection
    from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plugins (
    name TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    base_url TEXT NOT NULL,
    permissions TEXT NOT NULL,
    description TEXT NOT NULL,
    registered_at TEXT NOT NULL
);
"""


class BadBaseUrl(ValueError):
    """The URL is malformed for a plugin (scheme, credentials, query...)."""


class HostNotAllowed(ValueError):
    """The URL's host is neither loopback nor allowed by ``HEARTHLINK_SYNAPSE_ALLOW``."""


def parse_allow_list(raw: str) -> frozenset[str]:
    """``HEARTHLINK_SYNAPSE_ALLOW``: comma-separated host names or addresses."""
    return frozenset(_normal_host(part) for part in raw.split(",") if part.strip())


def _normal_host(host: str) -> str:
    host = host.strip().strip("[]").lower()
    return host[:-1] if host.endswith(".") else host


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 (also IPv4-mapped) or ``localhost``; no name is resolved."""
    host = _normal_host(host)
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_base_url(url: str, allowed: Collection[str]) -> None:
    """Refuse a plugin ``base_url`` that is malformed or points off this machine.

    The host is the URL's real host as an HTTP client would connect to it
    (``http://127.0.0.1@evil/`` is host ``evil``), checked without any connection.

    Raises:
        HostNotAllowed: the host is not loopback and not in ``allowed``.
        BadBaseUrl: otherwise unusable (scheme, missing host, credentials, port, query).
    """
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        # urlsplit() would silently drop tabs and newlines; such a URL is refused instead.
        raise BadBaseUrl("base_url must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise BadBaseUrl(f"base_url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise BadBaseUrl("base_url must be an http:// or https:// URL")
    if not host:
        raise BadBaseUrl("base_url has no host")
    if not (is_loopback_host(host) or _normal_host(host) in allowed):
        raise HostNotAllowed(
            f"base_url host {host!r} is not loopback (127.0.0.0/8, ::1, localhost);"
            " add it to HEARTHLINK_SYNAPSE_ALLOW to permit it"
        )
    if parts.username is not None or parts.password is not None:
        raise BadBaseUrl("base_url must not contain user info (user@ or user:password@)")
    if port == 0:
        raise BadBaseUrl("base_url port must be 1-65535")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise BadBaseUrl("base_url must not have a query or fragment")


class PluginExists(Exception):
    """A plugin with this name is registered already."""


class PluginNotFound(LookupError):
    """No plugin has this name."""


@dataclass(frozen=True)
class Plugin:
    name: str
    version: str
    base_url: str
    permissions: tuple[str, ...]
    description: str
    registered_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "base_url": self.base_url,
            "permissions": list(self.permissions),
            "description": self.description,
            "registered_at": self.registered_at,
        }

    def action_url(self, action: str) -> str:
        return f"{self.base_url.rstrip('/')}/{action}"


class Registry:
    """Registered plugins, persisted; reads are served from memory.

    :meth:`add` and :meth:`remove` block on SQLite: call them off the event loop (from a
    worker thread). A lock keeps two of them from using the connection at once.
    """

    def __init__(self, path: Path) -> None:
        self._mutex = threading.Lock()
        self._conn = open_database(path)
        with self._conn:
            self._conn.executescript(_SCHEMA)
        rows = self._conn.execute(
            "SELECT name, version, base_url, permissions, description, registered_at"
            " FROM plugins ORDER BY rowid"
        ).fetchall()
        self._plugins = {row[0]: _plugin(row) for row in rows}

    def close(self) -> None:
        with self._mutex:
            self._conn.close()

    def add(
        self, name: str, version: str, base_url: str, permissions: list[str], description: str
    ) -> Plugin:
        plugin = Plugin(name, version, base_url, tuple(permissions), description, utc_now())
        try:
            with self._mutex, self._conn:
                self._conn.execute(
                    "INSERT INTO plugins VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        version,
                        base_url,
                        json.dumps(permissions),
                        description,
                        plugin.registered_at,
                    ),
                )
        except sqlite3.IntegrityError:
            raise PluginExists(name) from None
        with self._mutex:
            self._plugins[name] = plugin
        return plugin

    def remove(self, name: str) -> None:
        with self._mutex:
            with self._conn:
                deleted = self._conn.execute("DELETE FROM plugins WHERE name = ?", (name,)).rowcount
            self._plugins.pop(name, None)
        if not deleted:
            raise PluginNotFound(name)

    def get(self, name: str) -> Plugin:
        try:
            return self._plugins[name]
        except KeyError:
            raise PluginNotFound(name) from None

    def all(self) -> list[Plugin]:
        return list(self._plugins.values())


def _plugin(row: tuple[Any, ...]) -> Plugin:
    name, version, base_url, permissions, description, registered_at = row
    return Plugin(
        name, version, base_url, tuple(json.loads(permissions)), description, registered_at
    )
