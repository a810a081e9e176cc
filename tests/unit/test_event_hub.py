"""The event stream's fan-out, the config locator, the CPU/RSS sampler: no processes."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from unittest.mock import ANY

import trio

from hearthlink_trio.config import load_config
from hearthlink_trio.config.locate import locate
from hearthlink_trio.control.hub import EventHub, EventLogHandler
from hearthlink_trio.control.stream import StateChange, StreamEvent, SupervisorLine, parse, to_json
from hearthlink_trio.process.usage import UsageSampler
from hearthlink_trio.supervisor import log_lines


def state(service: str, value: str = "healthy") -> StateChange:
    return StateChange(
        service=service,
        state=value,
        status="running",
        previous="starting",
        pid=None,
        error_message=None,
        restart_count=0,
    )


async def test_each_subscriber_gets_what_its_filters_let_through() -> None:
    hub = EventHub()
    everything = hub.subscribe()
    only_b = hub.subscribe(service="b")
    only_output = hub.subscribe(types=["output"])
    hub.publish(state("a"))
    hub.publish(state("b"))
    hub.publish_lines("b", "stdout", ["one", "two"])
    assert [e.type for e in _drain(everything)] == ["state", "state", "output", "output"]
    assert [getattr(e, "line", None) for e in _drain(only_b)] == [None, "one", "two"]
    assert [to_json(e) for e in _drain(only_output)] == [
        {"type": "output", "service": "b", "stream": "stdout", "line": line, "ts": ANY}
        for line in ("one", "two")
    ]


async def test_a_full_subscriber_is_dropped_and_publish_never_blocks() -> None:
    drops: list[str] = []
    hub = EventHub(buffer=3, on_drop=drops.append)
    slow = hub.subscribe()
    fast = hub.subscribe()
    for n in range(10):
        hub.publish(state(f"s{n}"))
        _drain(fast)
    assert slow.dropped == "the reader fell 3 events behind"
    assert slow.scope.cancel_called
    assert drops == ["the reader fell 3 events behind"]
    assert hub.subscribers == 1
    # What it had is still there to read; then its channel ends.
    assert len(_drain(slow)) == 3
    hub.publish(state("later"))
    assert [e.service for e in _drain(fast)] == ["later"]
    hub.unsubscribe(fast)
    assert hub.subscribers == 0


async def test_supervisor_events_are_published_with_their_fields() -> None:
    hub = EventHub()
    sub = hub.subscribe(types=["supervisor"])
    log = logging.getLogger("hearthlink.test-hub")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = EventLogHandler(hub)
    log.addHandler(handler)
    try:
        log_lines.emit(log, log_lines.restarted("vault", 2, 0.4))
    finally:
        log.removeHandler(handler)
    (event,) = (to_json(e) for e in _drain(sub))
    assert event["type"] == "supervisor"
    assert event["message"] == "Service vault restarted (attempt 2), next backoff: 0.4s"
    assert event["service"] == "vault"
    assert event["level"] == "info"
    # What a client reads back is the same event.
    assert parse(event) == SupervisorLine(
        event="restarted",
        message=event["message"],
        level="info",
        fields={"service": "vault", "attempt": 2, "backoff": 0.4},
        ts=event["ts"],
    )


async def test_the_hub_closes_every_stream_with_a_last_line() -> None:
    hub = EventHub(buffer=2)
    roomy = hub.subscribe()
    full = hub.subscribe()
    hub.publish(state("a"))
    _drain(roomy)
    hub.publish(state("b"))  # full has 2 waiting: no room for the last line
    hub.close("the supervisor has stopped")
    last = _drain(roomy)
    assert [(e.type, getattr(e, "message", None)) for e in last] == [
        ("state", None),
        ("supervisor", "the supervisor has stopped"),
    ]
    assert [e.type for e in _drain(full)] == ["state", "state"]
    assert hub.subscribers == 0
    late = hub.subscribe()
    assert _drain(late) == [] and hub.subscribers == 0


def _drain(sub: object) -> list[StreamEvent]:
    got = []
    while True:
        try:
            got.append(sub.receive.receive_nowait())  # type: ignore[attr-defined]
        except (trio.WouldBlock, trio.EndOfChannel):
            return got


def test_locate_agrees_with_the_loader(tmp_path: Path) -> None:
    config = tmp_path / "hl.toml"
    config.write_text(
        '[supervisor]\ndata_dir = "d"\nlog_dir = "l"\n'
        '[services.a]\ncommand = ["true"]\nport = 18999\n'
    )
    full = load_config(config, environ={})
    where = locate(config, environ={})
    assert (where.data_dir, where.log_dir, where.control_socket) == (
        full.data_dir,
        full.log_dir,
        full.control_socket,
    )
    env = {"HEARTHLINK_DATA_DIR": str(tmp_path / "elsewhere")}
    assert locate(config, environ=env).data_dir == load_config(config, environ=env).data_dir


def test_locate_reads_a_broken_file_as_far_as_it_can(tmp_path: Path) -> None:
    config = tmp_path / "hl.toml"
    config.write_text('[supervisor]\ndata_dir = "d"\nbogus = 1\n[services.x]\nport = "no"\n')
    where = locate(config, environ={})
    assert where.control_socket == tmp_path / "d" / "run" / "hearthlink.sock"
    config.write_text("this is [not toml")
    assert locate(config, environ={}).data_dir == Path("~/.local/share/hearthlink").expanduser()


def test_usage_of_this_process() -> None:
    sampler = UsageSampler()
    cpu, rss = sampler.usage(os.getpid())
    assert cpu is not None and cpu >= 0
    assert rss is not None and rss > 1 << 20
    assert sampler.usage(None) == (None, None)
    assert sampler.usage(2**22 + 12345) == (None, None)


def test_the_hub_keeps_recent_state_and_supervisor_events_without_subscribers() -> None:
    from dataclasses import replace

    from hearthlink_trio.control.hub import RECENT_EVENTS
    from hearthlink_trio.control.stream import Output, ProbeResult

    hub = EventHub()
    now = time.time()
    hub.publish(replace(state("a", "starting"), ts=now - 120))
    hub.publish(replace(state("a", "healthy"), ts=now - 1))
    hub.publish(ProbeResult(service="a", ok=True, latency_ms=1.0, reason=None))
    hub.publish(Output(service="a", stream="stdout", line="not kept"))
    hub.publish_lines("a", "stdout", ["not kept either"])
    logger = logging.getLogger("test.recent")
    logger.addHandler(EventLogHandler(hub))
    logger.propagate = False
    logger.warning("a restarted", extra={"event": "restarted", "fields": {"service": "a"}})
    recent = [to_json(event) for event in hub.recent(60)]
    assert [(e["type"], e.get("state") or e.get("event")) for e in recent] == [
        ("state", "healthy"),
        ("supervisor", "restarted"),
    ]
    assert recent[1]["service"] == "a"
    assert len(hub.recent(600)) == 3
    for _ in range(RECENT_EVENTS + 10):
        hub.publish(state("b"))
    assert len(hub.recent(600)) == RECENT_EVENTS
