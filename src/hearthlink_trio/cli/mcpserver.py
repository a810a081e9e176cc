"""``hearthlink mcp``: a Model Context Protocol server on stdio for the running supervisor.

A client of the control API like ``status``, built on the official ``mcp`` SDK (imported by
this command only). Its tools are ``status``, ``logs``, ``events``, ``restart``, ``stop``,
``start`` and ``wait``; what goes wrong on the way (no supervisor, an unknown service, a
bad regex) comes back as a tool error for the model to read, never as a crash of the
server. It serves only the supervisor of its own config's data dir and opens no network
port. Nothing it returns carries a secret: the API token's and the declared secrets'
values, taken where the supervisor took them (its environment, else the data dir's files,
never creating one), are replaced by ``***`` in every answer.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from hearthlink_trio import __version__
from hearthlink_trio.cli.logview import tail_lines
from hearthlink_trio.config import Config
from hearthlink_trio.control.client import ControlClient
from hearthlink_trio.control.errors import ControlError
from hearthlink_trio.process.procfs import proc_environ
from hearthlink_trio.supervisor.secrets import TOKEN_VARIABLE, load_secrets

__all__ = ["build_server"]

#: Most lines one ``logs`` call returns.
MAX_LOG_LINES = 1000
#: With a filter, how many of the last lines of the log file are searched.
FILTER_SCAN_LINES = 10_000
#: Longest window the ``events`` tool looks back (the supervisor keeps its last 500 anyway).
MAX_EVENT_SECONDS = 86_400.0
#: Longest ``wait`` one call may ask for.
MAX_WAIT_SECONDS = 600.0

#: What a service's name (a replica's too) looks like; nothing else names a log file.
_LOG_NAME = re.compile(r"[a-z][a-z0-9_-]*")

#: The ``service`` argument of the tools (module level: the SDK resolves the annotations).
ServiceName = Annotated[str, Field(description="The service's name, as `status` lists it.")]

INSTRUCTIONS = (
    "Tools for the hearthlink supervisor that runs this project's services on this machine. "
    "Start with `status` to see every service's state; use `logs` to read a service's output "
    "(with `pattern` to grep it), `events` for what changed lately, `restart`/`stop`/`start` "
    "to act on one service and `wait` to block until services are healthy after a change."
)


class _Masker:
    """Replaces every secret value of the running supervisor by ``***``: those it took from
    its environment (read from ``/proc/<its pid>/environ``), else those of the data dir's
    files."""

    def __init__(self, config: Config | None, client: ControlClient) -> None:
        self._config = config
        self._client = client

    def _environ(self, config: Config) -> Mapping[str, str]:
        """The secrets' variables as the supervisor was started with them (a variable set
        there wins over its file, for the supervisor and so here); without a supervisor,
        this process's environment."""
        try:
            pid = self._client.health().get("pid")
        except ControlError:
            pid = None
        if not isinstance(pid, int):
            return os.environ
        return proc_environ(pid, TOKEN_VARIABLE, *config.secret_variables())

    def text(self, text: str) -> str:
        if self._config is None:
            raise ToolError(
                "the config file has errors (hearthlink check shows them), so the secrets to "
                "mask in log lines are unknown; fix the config first"
            )
        try:
            # Read again at every call: the supervisor may have made a file since, or a
            # service replaced one (a rotated key). create=False: never make a secret here.
            secrets = load_secrets(self._config, self._environ(self._config), create=False)
        except (OSError, ValueError) as exc:
            raise ToolError(f"cannot read the secrets to mask in log lines: {exc}") from exc
        return secrets.redact(text)

    def value(self, value: Any) -> Any:
        """``value`` (JSON-able) with secrets masked in every string inside it."""
        if self._config is None:
            return value  # only the supervisor's answers come here, masked at the source
        masked: Any = json.loads(self.text(json.dumps(value)))
        return masked


def _tool_error(exc: ControlError) -> ToolError:
    return ToolError(str(exc))


def build_server(client: ControlClient, config: Config | None, log_dir: Path) -> MCPServer:
    """The MCP server with its tools, talking to the supervisor through ``client``.

    ``config`` (None if the file does not load) names the services and their secrets;
    ``log_dir`` is where the services' log files are.
    """
    server: MCPServer = MCPServer(
        "hearthlink", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )
    masker = _Masker(config, client)
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(annotations=read_only)
    def status() -> dict[str, Any]:
        """Every service's status in the running supervisor: overall `status` (starting,
        healthy, degraded, stopping), and per service its `state` (waiting, starting,
        healthy, unhealthy, backoff, failed, stopping, stopped, completed), pid, port,
        restart_count, error_message and memory_bytes. Call it first to see what runs."""
        try:
            return dict(masker.value(client.health()))
        except ControlError as exc:
            raise _tool_error(exc) from exc

    @server.tool(annotations=read_only)
    def logs(
        service: ServiceName,
        lines: Annotated[
            int,
            Field(ge=1, le=MAX_LOG_LINES, description="How many of the last lines to return."),
        ] = 50,
        pattern: Annotated[
            str | None,
            Field(
                description="A Python regular expression: return only the last lines that "
                f"match it (searched in the last {FILTER_SCAN_LINES} lines of the log)."
            ),
        ] = None,
    ) -> str:
        """The last lines a service wrote (stdout and stderr, from its log file, oldest
        first), optionally only those matching a regex. Secret values are masked as ***."""
        if not _LOG_NAME.fullmatch(service):
            # Checked before any path is built from it, config or not.
            raise ToolError(f"{service!r} is not a service name")
        if config is not None and service not in config.names:
            replicas = [svc.name for svc in config.group(service)]
            if replicas:
                raise ToolError(f"{service} runs as {', '.join(replicas)}: name one of them")
            raise ToolError(f"no service named {service!r} (services: {', '.join(config.names)})")
        regex = None
        if pattern is not None:
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise ToolError(f"pattern {pattern!r} is not a valid regex: {exc}") from exc
        path = log_dir / f"{service}.log"
        try:
            found = tail_lines(path, FILTER_SCAN_LINES if regex else lines)
        except FileNotFoundError:
            raise ToolError(f"no log yet for {service} ({path})") from None
        except OSError as exc:
            raise ToolError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if regex is not None:
            found = [line for line in found if regex.search(line)][-lines:]
        if not found:
            return f"(no lines{' matching ' + repr(pattern) if regex else ''} in {path})"
        return masker.text("\n".join(found))

    @server.tool(annotations=read_only)
    def events(
        seconds: Annotated[
            float,
            Field(gt=0, le=MAX_EVENT_SECONDS, description="How far back to look, in seconds."),
        ] = 60.0,
    ) -> dict[str, Any]:
        """What changed in the last `seconds`: every state change of a service (`state`,
        `previous`, `error_message`, `restart_count`) and the supervisor's own log events
        (restarts, crashes, reloads), oldest first. Returns at once: it reads the events the
        supervisor keeps (its last 500), not a live stream."""
        try:
            recent = client.recent_events(seconds)
        except ControlError as exc:
            raise _tool_error(exc) from exc
        return {"seconds": seconds, "events": masker.value(recent)}

    def act(action: str, service: str) -> str:
        requests = {
            "restart": client.restart,
            "stop": client.stop_service,
            "start": client.start_service,
        }
        try:
            answer = requests[action](service)
        except ControlError as exc:
            raise _tool_error(exc) from exc
        return f"{action.capitalize()} of {service} requested: {answer.get('result', 'accepted')}"

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, open_world_hint=False))
    def restart(service: ServiceName) -> str:
        """Restart one service now (stopped with its stop signal, then started again; a
        failed one gets its restart count reset). Returns once the supervisor accepted it;
        follow with `wait` to know when it is healthy again."""
        return act("restart", service)

    @server.tool(annotations=ToolAnnotations(destructive_hint=True, open_world_hint=False))
    def stop(service: ServiceName) -> str:
        """Stop one service and keep it stopped (not restarted, not counted as a failure;
        its dependents keep running) until `start` or `restart`."""
        return act("stop", service)

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, open_world_hint=False))
    def start(service: ServiceName) -> str:
        """Start one service again after `stop` (or one left out of this run)."""
        return act("start", service)

    @server.tool(annotations=read_only)
    def wait(
        services: Annotated[
            tuple[str, ...],
            Field(
                description="Names to wait for; empty: every service (less those stopped "
                "by hand or not selected). A replicated service's name means all replicas."
            ),
        ] = (),
        timeout: Annotated[
            float,
            Field(ge=0, le=MAX_WAIT_SECONDS, description="Give up after this many seconds."),
        ] = 60.0,
    ) -> dict[str, Any]:
        """Block until the named services are healthy (a task: completed). Returns `ready`
        true, or false with `laggards` (each one's state and error) at the timeout or as
        soon as one has given up (`gave_up`: state failed; it will not start by itself)."""
        try:
            result = client.wait_ready(services, timeout=timeout)
        except ControlError as exc:
            raise _tool_error(exc) from exc
        answer = {
            "ready": result.ready,
            "services": list(result.services),
            "laggards": result.laggards,
            "gave_up": result.gave_up,
            "summary": result.describe(),
        }
        return dict(masker.value(answer))

    return server
