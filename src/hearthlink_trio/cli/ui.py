"""``hearthlink ui``: a live full-screen view of a running supervisor (Textual).

A separate process and a client of the control API only: it follows ``GET /v1/events``
(the snapshot fills the table, each event changes one row or adds an output line), asks
``GET /v1/health`` every few seconds for what events do not carry (CPU, RSS), and POSTs
restart/stop/start. When no supervisor answers it says so and keeps trying; the
supervisor never depends on it. ``q`` quits the view, never the supervisor.

A service's output pane starts with its last lines from its log file (a quiet service
shows what it said before the view opened), then follows the stream. The log files have
no timestamps, so the view of all services (``l``) starts with each service's last lines
as one block, the blocks ordered by when each file was last written (the most recent
last), and interleaves the streamed lines by their time after that.

Textual is imported by this module only, and this module only by the ``ui`` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import httpx
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Input, RichLog, Static

from hearthlink_trio.cli.logview import tail_lines
from hearthlink_trio.cli.statusview import format_duration
from hearthlink_trio.control.stream import (
    Output,
    ProbeResult,
    Snapshot,
    StateChange,
    SupervisorLine,
    parse,
)

__all__ = ["HearthlinkUI", "run_ui"]

#: Lines of output kept per service, and for the view of all services together.
KEPT_LINES = 2000
#: Lines read from each service's log file when the view connects.
HISTORY_LINES = 200
#: Seconds between two ``GET /v1/health`` (CPU and RSS, uptimes).
REFRESH_INTERVAL = 2.0
#: Seconds between two tries to reach a supervisor that does not answer.
RETRY_INTERVAL = 0.5

COLUMNS = ("NAME", "STATE", "PID", "PORT", "UPTIME", "RST", "PROBE", "CPU%", "RSS")
STATE_STYLES = {
    "failed": "bold red",
    "unhealthy": "bold red",
    "healthy": "green",
    "starting": "yellow",
    "backoff": "yellow",
    "waiting": "yellow",
    "stopping": "dim",
    "stopped": "dim",
    "completed": "dim",
}
_LIVE_STATES = frozenset({"starting", "healthy", "unhealthy"})


def run_ui(socket_path: Path, log_dir: Path | None = None) -> int:
    """Run the view until ``q``: 0 if it reached a supervisor, 1 if none ever answered."""
    result = HearthlinkUI(socket_path, log_dir).run()
    return 1 if result is None else result


class HearthlinkUI(App[int]):
    """The table of services above the output of the selected one (or of all)."""

    TITLE = "hearthlink"
    CSS = """
    #services { height: auto; max-height: 50%; }
    #output { height: 1fr; border-top: solid $accent; }
    #filter { display: none; }
    #waiting { width: 100%; height: 100%; content-align: center middle; }
    #status { height: 1; background: $boost; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "restart", "restart"),
        Binding("s", "stop_start", "stop/start"),
        Binding("l", "all_output", "all output"),
        Binding("slash", "filter", "filter"),
        Binding("escape", "clear_filter", "clear filter", show=False),
        Binding("q", "quit_view", "quit"),
    ]

    def __init__(self, socket_path: Path, log_dir: Path | None = None) -> None:
        super().__init__()
        self.socket_path = socket_path
        #: Where the services' log files are (None: the view starts with no history).
        self.log_dir = log_dir
        #: Per service: when its log file was read; streamed lines older than that are in
        #: what was read (the supervisor writes a line to the file before it streams it).
        self.history_read_at: dict[str, float] = {}
        self.connected = False
        self.ever_connected = False
        self.overall = "unknown"
        self.services: dict[str, dict[str, Any]] = {}
        self.probes: dict[str, str] = {}
        self.lines: dict[str, deque[str]] = {}
        self.all_lines: deque[str] = deque(maxlen=KEPT_LINES)
        self.show_all = False
        self.filter_text = ""
        self.selected: str | None = None
        #: Per service: the style its row has now, and when (time.time()) it got it.
        self.row_styles: dict[str, tuple[str, float]] = {}
        #: Per service: the last state event taken in.
        self.state_events: dict[str, StateChange] = {}

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(f"waiting for a supervisor on {self.socket_path}", id="waiting")
        with Vertical(id="main"):
            yield Static("", id="status")
            table: DataTable[Text] = DataTable(id="services", cursor_type="row")
            yield table
            yield RichLog(id="output", max_lines=KEPT_LINES, wrap=False, markup=False)
            yield Input(placeholder="filter the output (Enter to apply, Esc to clear)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#services", DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        self._show_connected(False)
        self.run_worker(self._follow(), exclusive=True, group="stream")
        self.set_interval(REFRESH_INTERVAL, self._refresh_health)

    def _show_connected(self, connected: bool) -> None:
        self.connected = connected
        self.query_one("#waiting").display = not connected
        self.query_one("#main").display = connected

    # -- talking to the supervisor --------------------------------------------------------

    def _client(self, *, stream: bool = False) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=os.fspath(self.socket_path))
        timeout = httpx.Timeout(5.0, read=None if stream else 5.0)
        return httpx.AsyncClient(
            transport=transport, timeout=timeout, trust_env=False, base_url="http://hearthlink"
        )

    async def _follow(self) -> None:
        """Follow the event stream; when it breaks, say so and try again."""
        while True:
            try:
                async with (
                    self._client(stream=True) as client,
                    client.stream("GET", "/v1/events") as response,
                ):
                    if response.is_success:
                        async for line in response.aiter_lines():
                            if line:
                                self.apply(json.loads(line))
            except (httpx.TransportError, ValueError):
                pass
            self._show_connected(False)
            await asyncio.sleep(RETRY_INTERVAL)

    async def _refresh_health(self) -> None:
        if not self.connected:
            return
        try:
            async with self._client() as client:
                health = (await client.get("/v1/health")).json()
        except (httpx.TransportError, ValueError):
            return
        self._load(health)

    async def _post(self, path: str) -> None:
        try:
            async with self._client() as client:
                response = await client.post(path)
                answer = response.json()
        except (httpx.TransportError, ValueError) as exc:
            self.notify(f"{path}: {exc}", severity="error")
            return
        if response.is_success:
            self.notify(f"{answer.get('service', '')} {answer['action']}: {answer['result']}")
        else:
            self.notify(str(answer.get("detail", answer)), severity="error")

    # -- events ---------------------------------------------------------------------------

    def apply(self, line: Mapping[str, Any]) -> None:
        """Take one line of the stream into the view."""
        event = parse(line)
        if isinstance(event, Snapshot):
            self._load(dict(event.health), replace=True)
            self._load_history()
            self._show_connected(True)
            self.ever_connected = True
            self.query_one("#services", DataTable).focus()
        elif isinstance(event, StateChange):
            service = self.services.get(event.service)
            if service is None:
                return
            self.state_events[event.service] = event
            if event.state == "starting" and event.previous != "starting":
                service["started_at"] = event.ts
            service.update(
                state=event.state,
                status=event.status,
                pid=event.pid,
                error_message=event.error_message,
                restart_count=event.restart_count,
                notify_status=event.notify_status,
            )
            if event.state not in _LIVE_STATES:
                self.probes.pop(event.service, None)
                service["cpu_percent"] = service["rss_bytes"] = None
            self._render_row(event.service)
        elif isinstance(event, ProbeResult):
            name = event.service
            if event.ok:
                self.probes[name] = f"ok {event.latency_ms:.0f}ms"
                if name in self.services:
                    self.services[name]["last_health_check"] = event.ts
            else:
                self.probes[name] = "fail"
            self._render_row(name)
        elif isinstance(event, Output):
            if event.ts >= self.history_read_at.get(event.service, 0.0):
                self._add_line(event.service, event.line)
        elif isinstance(event, SupervisorLine) and event.event in ("reloaded", "shutdown"):
            self.run_worker(self._refresh_health(), group="refresh")

    def _load(self, health: dict[str, Any], *, replace: bool = False) -> None:
        self.overall = str(health.get("status", "unknown"))
        services = {s["name"]: s for s in health.get("services", [])}
        table = self.query_one("#services", DataTable)
        if replace or list(services) != list(self.services):
            table.clear()
            self.services = services
            self.row_styles.clear()
            for name in services:
                table.add_row(*self._cells(name), key=name)
                self._note_style(name)
            if self.selected not in services:
                self.selected = next(iter(services), None)
            self._render_output()
        else:
            self.services = services
            for name in services:
                self._render_row(name)
        self._render_status()

    def _render_status(self) -> None:
        healthy = sum(1 for s in self.services.values() if s.get("state") == "healthy")
        view = "all services" if self.show_all else (self.selected or "-")
        shown = f"output: {view}" + (f"  filter: {self.filter_text}" if self.filter_text else "")
        self.query_one("#status", Static).update(
            f" {self.overall} ({healthy}/{len(self.services)} healthy)   {shown}"
        )

    def _cells(self, name: str) -> list[Text]:
        service = self.services[name]
        state = str(service.get("state") or service.get("status") or "?")
        style = STATE_STYLES.get(state, "")
        now = time.time()
        started = service.get("started_at")
        uptime = (
            format_duration(now - float(started))
            if started is not None and state in _LIVE_STATES
            else "-"
        )
        cpu = service.get("cpu_percent")
        rss = service.get("rss_bytes")
        notified = service.get("notify_status")
        values = [
            name,
            f"{state}: {notified}" if notified else state,
            _text(service.get("pid")),
            _text(service.get("port")),
            uptime,
            _text(service.get("restart_count")),
            self.probes.get(name) or _age(service.get("last_health_check"), now),
            "-" if cpu is None else f"{float(cpu):.1f}",
            "-" if rss is None else _size(int(rss)),
        ]
        return [Text(value, style=style) for value in values]

    def _render_row(self, name: str) -> None:
        if name not in self.services:
            return
        table = self.query_one("#services", DataTable)
        for column, cell in zip(COLUMNS, self._cells(name), strict=True):
            table.update_cell(name, column, cell)
        self._note_style(name)
        if name == self.selected:
            self._render_status()

    def _note_style(self, name: str) -> None:
        state = str(self.services[name].get("state") or "")
        style = STATE_STYLES.get(state, "")
        if self.row_styles.get(name, ("", 0.0))[0] != style or name not in self.row_styles:
            self.row_styles[name] = (style, time.time())

    def row_style(self, name: str) -> str:
        """The style of service ``name``'s row ("bold red", "green"…)."""
        return self.row_styles.get(name, ("", 0.0))[0]

    # -- output ---------------------------------------------------------------------------

    def _load_history(self) -> None:
        """Start every service's output (and the view of all) with its log file's last
        lines, anew at each (re)connection."""
        self.lines.clear()
        self.all_lines.clear()
        self.history_read_at.clear()
        if self.log_dir is None:
            self._render_output()
            return
        blocks: list[tuple[float, str, list[str]]] = []
        for name in self.services:
            path = self.log_dir / f"{name}.log"
            self.history_read_at[name] = time.time()
            try:
                written = path.stat().st_mtime
                lines = tail_lines(path, HISTORY_LINES)
            except OSError:  # no output yet, or a log dir this user cannot read
                continue
            self.lines[name] = deque(lines, maxlen=KEPT_LINES)
            blocks.append((written, name, lines))
        for _, name, lines in sorted(blocks):
            self.all_lines.extend(f"{name} | {line}" for line in lines)
        self._render_output()

    def _add_line(self, service: str, line: str) -> None:
        self.lines.setdefault(service, deque(maxlen=KEPT_LINES)).append(line)
        tagged = f"{service} | {line}"
        self.all_lines.append(tagged)
        if self.show_all:
            self._write(tagged)
        elif service == self.selected:
            self._write(line)

    def _write(self, line: str) -> None:
        if self.filter_text and self.filter_text not in line:
            return
        self.query_one("#output", RichLog).write(Text(line))

    def _render_output(self) -> None:
        log = self.query_one("#output", RichLog)
        log.clear()
        shown = self.all_lines if self.show_all else self.lines.get(self.selected or "", ())
        for line in shown:
            self._write(line)
        self._render_status()

    def output_lines(self) -> list[str]:
        """The lines the output pane shows now (for tests and for the curious)."""
        log = self.query_one("#output", RichLog)
        return [strip.text for strip in log.lines]

    # -- keys -----------------------------------------------------------------------------

    def on_data_table_row_highlighted(self, message: DataTable.RowHighlighted) -> None:
        name = message.row_key.value
        if name is not None and name != self.selected:
            self.selected = name
            if not self.show_all:
                self._render_output()
            self._render_status()

    def action_restart(self) -> None:
        if self.connected and self.selected:
            self.run_worker(self._post(f"/v1/services/{self.selected}/restart"), group="post")

    def action_stop_start(self) -> None:
        if not (self.connected and self.selected):
            return
        state = self.services.get(self.selected, {}).get("state")
        action = "start" if state == "stopped" else "stop"
        self.run_worker(self._post(f"/v1/services/{self.selected}/{action}"), group="post")

    def action_all_output(self) -> None:
        self.show_all = not self.show_all
        self._render_output()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.filter_text
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = False
        self.filter_text = ""
        self._render_output()
        with contextlib.suppress(Exception):
            self.query_one("#services", DataTable).focus()

    def on_input_submitted(self, message: Input.Submitted) -> None:
        self.filter_text = message.value
        message.input.display = False
        self._render_output()
        self.query_one("#services", DataTable).focus()

    def action_quit_view(self) -> None:
        self.exit(0 if self.ever_connected else 1)


def _text(value: object) -> str:
    return "-" if value is None else str(value)


def _age(ts: object, now: float) -> str:
    return "-" if ts is None else f"{format_duration(now - float(str(ts)))} ago"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "K", "M"):
        if value < 1024:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}G"
