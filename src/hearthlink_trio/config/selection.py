"""Which services a run starts: the named ones (else every one without a profile), those of
the selected profiles, and, transitively, whatever they depend on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hearthlink_trio.config.resolved import Config
from hearthlink_trio.errors import UsageError

__all__ = ["Selection", "dependency_closure"]


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


@dataclass(frozen=True)
class Selection:
    """What ``hearthlink run NAME… --profile P…`` asked for.

    ``names`` are service tables or replicas. With none, every service without
    ``profiles`` is a root; with some, only those are. The services of any profile in
    ``profiles`` are roots too. Every root's dependencies are started with it, whatever
    their profiles.
    """

    names: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()

    def check(self, config: Config) -> None:
        """Raises UsageError naming every name and profile ``config`` does not have."""
        known_profiles = sorted({p for svc in config.services for p in svc.profiles})
        problems = [
            f"no service named {name!r} (services: {_tables(config)})"
            for name in self.names
            if not any(name in (svc.name, svc.group) for svc in config.services)
        ]
        problems += [
            f"no profile named {profile!r} "
            f"(profiles: {', '.join(known_profiles) or 'none in this config'})"
            for profile in self.profiles
            if profile not in known_profiles
        ]
        if problems:
            raise UsageError(problems)

    def pick(self, config: Config) -> frozenset[str]:
        """The services (replica names) of ``config`` this selection starts; a name or
        profile it does not have selects nothing (a reload may have removed it)."""
        roots = {
            svc.name
            for svc in config.services
            if svc.name in self.names
            or svc.group in self.names
            or set(svc.profiles) & set(self.profiles)
            or (not self.names and not svc.profiles)
        }
        return frozenset(dependency_closure(config, roots))


def _tables(config: Config) -> str:
    return ", ".join(dict.fromkeys(svc.group or svc.name for svc in config.services))
