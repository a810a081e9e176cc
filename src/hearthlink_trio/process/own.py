"""The processes the supervisor started itself (services, hooks, probes, the sentinel, a
foreground command): a child of the supervisor that is none of these was re-parented to it,
the subreaper, by a process that exited (see ``cgroups.strays``)."""

from __future__ import annotations

_started: set[int] = set()


def remember(pid: int) -> None:
    _started.add(pid)


def forget(pid: int) -> None:
    """``pid`` was reaped (its number may be reused)."""
    _started.discard(pid)


def started() -> set[int]:
    return set(_started)
