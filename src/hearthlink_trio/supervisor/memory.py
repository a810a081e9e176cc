"""The memory limit: a service with ``max_memory`` is read each second
(:class:`~hearthlink_trio.process.memory.MemoryMeter` says from where) and restarted once two
readings in a row are above its limit. Only services with a limit are read on a timer, one
per running process of theirs; ``status`` reads the others when asked.
"""

from __future__ import annotations

import trio

from hearthlink_trio.config import Service
from hearthlink_trio.supervisor import log_lines
from hearthlink_trio.supervisor.context import Context
from hearthlink_trio.supervisor.state import ServiceState

__all__ = ["over_limit_reason", "watch_memory"]

MIB = 1024 * 1024
#: How often a service with a limit has its memory read.
MEMORY_INTERVAL = 1.0
#: Readings in a row above the limit that restart the service (one spike is forgiven).
READINGS_OVER = 2


def _size(size: int) -> str:
    """``530 MiB``; a decimal below 10 MiB, and KiB or bytes below 1 MiB, so small sizes do
    not read as 0."""
    if size >= 10 * MIB:
        return f"{size / MIB:.0f} MiB"
    if size >= MIB:
        return f"{size / MIB:.1f} MiB"
    if size >= 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size} B"


def over_limit_reason(used: int, limit: int) -> str:
    """``memory 530 MiB over max_memory 512 MiB``."""
    return f"memory {_size(used)} over max_memory {_size(limit)}"


async def watch_memory(ctx: Context, service: Service, record: ServiceState) -> str:
    """Read ``service``'s memory every second while its process runs; return the reason
    once :data:`READINGS_OVER` readings in a row were above its ``max_memory`` (a reading
    that cannot be made breaks the row)."""
    limit = service.max_memory
    assert limit is not None, "only a service with max_memory is watched"
    over = 0
    while True:
        await trio.sleep(MEMORY_INTERVAL)
        used = ctx.memory.read(service.name, record.pid)
        if used is None or used <= limit:
            over = 0
            continue
        over += 1
        if over >= READINGS_OVER:
            reason = over_limit_reason(used, limit)
            log_lines.emit(ctx.log, log_lines.over_memory(service.name, reason, used, limit))
            return reason
