"""The dependency graph of a config's services: start order, cycles, the longest chain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def dependency_order(depends_on: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str]]:
    """Topological order (dependencies first, otherwise as given), and each cycle found.

    ``depends_on`` maps a service to the names it depends on; names not in the mapping are
    ignored (they are reported as unknown elsewhere). A cycle is written ``a -> b -> a``.
    """
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    cycles: list[str] = []

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycles.append(" -> ".join([*trail[trail.index(name) :], name]))
            return
        state[name] = 1
        for dep in depends_on[name]:
            if dep in depends_on:
                visit(dep, [*trail, name])
        state[name] = 2
        order.append(name)

    for name in depends_on:
        visit(name, [])
    return order, cycles


def longest_chain(depends_on: Mapping[str, Sequence[str]], cost: Mapping[str, float]) -> float:
    """The largest sum of ``cost`` along one dependency chain (0 for no services)."""
    order, _ = dependency_order(depends_on)
    total: dict[str, float] = {}
    for name in order:  # dependencies first
        below = max((total[dep] for dep in depends_on[name] if dep in total), default=0.0)
        total[name] = below + cost[name]
    return max(total.values(), default=0.0)
