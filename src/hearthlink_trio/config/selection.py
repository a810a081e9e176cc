"""Which services a run starts: the named ones (else every one without a profile), those of
the selected profiles, and, transitively, whatever they depend on."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hearthlink_trio.config.resolved import Config
from hearthlink_trio.errors import UsageError

__all__ = ["dependency_closure", "select"]


def dependency_closure(config: Config, names: Iterable[str]) -> tuple[str, ...]:
    """``names`` and everything they depend on, transitively, in the config's (dependency)
    order. Unknown names are left out."""
    wanted: set[str] = set()
    todo = [name for name in names if name in config.names]
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(config.service(name).depends_on)
    return tuple(name for name in config.names if name in wanted)


def select(
    config: Config, names: Sequence[str] = (), profiles: Sequence[str] = ()
) -> frozenset[str]:
    """The services (replica names) a run starts.

    ``names`` are service tables or replicas. With none, every service without
    ``profiles`` is a root; with some, only those are. The services of any profile in
    ``profiles`` are roots too. Every root's dependencies are started with it, whatever
    their profiles.

    Raises:
        UsageError: a name or a profile that the config does not have (all named at once).
    """
    known_profiles = sorted({p for svc in config.services for p in svc.profiles})
    problems = []
    roots = set()
    for name in names:
        found = [svc.name for svc in config.services if name in (svc.name, svc.group)]
        if not found:
            problems.append(f"no service named {name!r} (services: {_tables(config)})")
        roots.update(found)
    for profile in profiles:
        if profile not in known_profiles:
            problems.append(
                f"no profile named {profile!r} "
                f"(profiles: {', '.join(known_profiles) or 'none in this config'})"
            )
        roots.update(svc.name for svc in config.services if profile in svc.profiles)
    if problems:
        raise UsageError(problems)
    if not names:
        roots.update(svc.name for svc in config.services if not svc.profiles)
    return frozenset(dependency_closure(config, roots))


def _tables(config: Config) -> str:
    return ", ".join(dict.fromkeys(svc.group or svc.name for svc in config.services))
