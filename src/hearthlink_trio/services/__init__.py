"""The four Hearthlink services (SPEC §7), each runnable as ``python -m`` or as a script."""
