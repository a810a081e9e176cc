"""The four Hearthlink services, each runnable as ``python -m hearthlink_trio.services.<name>``."""
