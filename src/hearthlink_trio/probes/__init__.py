"""Health probes: how the supervisor learns that a service is ready and stays so.

Nothing is imported here: the launcher's checks before the supervisor loads
(:mod:`~hearthlink_trio.probes.early`) must not load trio with the probes that use it.
"""
