"""Health probes: how the supervisor learns that a service is ready and stays so."""

from __future__ import annotations

from hearthlink_trio.probes.http import HttpProber

__all__ = ["HttpProber"]
