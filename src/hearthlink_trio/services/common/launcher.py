"""The one command line every service runs under: ``--host H --port P``, then uvicorn.

A service's ``__main__`` is three lines: ``sys.exit(launch("<name>", "<its app module>"))``.
The app module is imported only after the unused optional imports are trimmed, and its
``build_app()`` builds the app (raising ConfigurationError when the environment is
wrong). This module imports nothing heavy itself.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hearthlink_trio import __version__
from hearthlink_trio.errors import EX_CONFIG
from hearthlink_trio.services.common.settings import ConfigurationError

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

#: How long uvicorn lets open requests finish after SIGTERM (a service exits within 2 s).
GRACEFUL_SHUTDOWN_SECONDS = 1
#: Modules that would be imported although no service uses them, each import guarded by
#: its importer (which carries on when it fails): ``rich`` and ``pygments`` (httpx's
#: command-line client), ``trio`` (httpcore's trio backend: services run on asyncio under
#: uvicorn), ``h2`` (HTTP/2) and ``pydantic.v1`` (imported by FastAPI only to refuse v1
#: models), ``watchfiles`` (uvicorn's ``--reload``) and ``python_multipart`` (or its old
#: name ``multipart``: Starlette's form parser; no service takes a form). About 11 MiB of
#: RSS per service, a fifth of the memory budget.
UNUSED_OPTIONAL_MODULES = (
    "rich",
    "pygments",
    "trio",
    "h2",
    "pydantic.v1",
    "watchfiles",
    "python_multipart",
    "multipart",
)

#: Where a socket passed by the supervisor is (as systemd's SD_LISTEN_FDS_START).
LISTEN_FD = 3

log = logging.getLogger("hearthlink.service")


def skip_unused_optional_imports() -> None:
    """Make :data:`UNUSED_OPTIONAL_MODULES` unimportable in this (service) process.

    Their importers guard these imports and carry on cleanly when they fail; a module that
    is already loaded is left alone. Call it before anything imports httpx or declares a
    route.
    """
    for module in UNUSED_OPTIONAL_MODULES:
        sys.modules.setdefault(module, None)  # type: ignore[arg-type]


def parse_args(name: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=name, description=f"The Hearthlink {name} service")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    return parser.parse_args(argv)


def launch(
    name: str, app_module: str, argv: Sequence[str] | None = None, *, umask: int | None = None
) -> int:
    """Run service ``name`` until SIGTERM; returns the process exit status.

    Args:
        name: the service name, which prefixes its log lines.
        app_module: the module whose ``build_app()`` builds the service's app.
        argv: the command line (default: ``sys.argv[1:]``).
        umask: set before anything is created (the Vault's files are owner-only).

    Returns:
        0 after SIGTERM/SIGINT; 78 (EX_CONFIG) when the environment is wrong (the message
        goes to stderr); 1 when the app failed while starting up.
    """
    if umask is not None:
        os.umask(umask)
    args = parse_args(name, argv)
    logging.basicConfig(level=logging.INFO, format=f"{name}: %(levelname)s %(message)s")
    skip_unused_optional_imports()
    try:
        app: FastAPI = importlib.import_module(app_module).build_app()
    except ConfigurationError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr, flush=True)
        return EX_CONFIG
    return _serve(name, app, args.host, args.port)


def passed_socket() -> socket.socket | None:
    """The listening socket the supervisor passed (fd 3), or None.

    Taken only when ``LISTEN_FDS`` is set and ``LISTEN_PID`` is this very process (a
    variable inherited by a child of the service is not for the child); the variables are
    removed then, as sd_listen_fds does, so the service's own children do not see them.
    """
    if os.environ.get("LISTEN_FDS") != "1" or os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    for var in ("LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID"):
        os.environ.pop(var, None)
    try:
        return socket.socket(fileno=LISTEN_FD)
    except OSError:
        return None  # not a socket after all: bind as without one


def _serve(name: str, app: FastAPI, host: str, port: int) -> int:
    import uvicorn

    sock = passed_socket()
    how = "on the socket passed by the supervisor" if sock is not None else "binding"
    log.info("%s-api %s starting on http://%s:%d (%s)", name, __version__, host, port, how)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        server_header=False,
        ws="none",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        lifespan="on",
    )
    server = uvicorn.Server(config) if sock is None else _draining_server(config)
    server.run(sockets=None if sock is None else [sock])
    # A lifespan that failed at start-up leaves ``started`` unset: report it as an error.
    return 0 if server.started else 1


#: On a socket the supervisor holds, how long a stopping service keeps reading what the
#: connections it has accepted already carry, before the idle ones are closed.
ACCEPTED_DRAIN_SECONDS = 0.1


def _draining_server(config: uvicorn.Config) -> uvicorn.Server:
    """A server that, when it stops, first stops accepting and gives the connections it
    accepted a moment to deliver their requests. uvicorn closes a connection with no request
    under way at once; one accepted a moment before the stop, its request still in flight,
    would be closed unanswered, while the held socket keeps every connection it has not
    accepted for the next process."""
    import asyncio

    import uvicorn

    class DrainingServer(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in self.servers:
                server.close()
            await asyncio.sleep(ACCEPTED_DRAIN_SECONDS)
            await super().shutdown(sockets)

    return DrainingServer(config)
