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
    # Depth first with a stack of its own (a chain of thousands of services must not meet
    # Python's recursion limit): each entry is a service on the current path and the
    # iterator over its dependencies still to visit.
    for root in depends_on:
        if state.get(root) == 2:
            continue
        state[root] = 1
        trail = [root]
        stack = [iter(depends_on[root])]
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                stack.pop()
                done = trail.pop()
                state[done] = 2
                order.append(done)
            elif dep not in depends_on or state.get(dep) == 2:
                continue
            elif state.get(dep) == 1:
                cycles.append(" -> ".join([*trail[trail.index(dep) :], dep]))
            else:
                state[dep] = 1
                trail.append(dep)
                stack.append(iter(depends_on[dep]))
    return order, cycles


def longest_chain(depends_on: Mapping[str, Sequence[str]], cost: Mapping[str, float]) -> float:
    """The largest sum of ``cost`` along one dependency chain (0 for no services)."""
    order, _ = dependency_order(depends_on)
    total: dict[str, float] = {}
    for name in order:  # dependencies first
        below = max((total[dep] for dep in depends_on[name] if dep in total), default=0.0)
        total[name] = below + cost[name]
    return max(total.values(), default=0.0)
