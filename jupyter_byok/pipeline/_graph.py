"""Graph helpers for pipelines: run order, cycles (all of them, as paths), ancestors."""

from __future__ import annotations

__all__ = ["ancestors", "find_cycles", "toposort"]


def toposort(deps: dict[str, list[str]]) -> list[str]:
    """Kahn's algorithm, stable in definition order."""
    remaining = {n: set(d) for n, d in deps.items()}
    order: list[str] = []
    while remaining:
        ready = [n for n, d in remaining.items() if not d]
        if not ready:
            break
        for n in ready:
            order.append(n)
            del remaining[n]
        for d in remaining.values():
            d.difference_update(ready)
    return order


def find_cycles(deps: dict[str, list[str]]) -> list[list[str]]:
    """Every cycle's nodes as a path ``[a, b, a]`` in data-flow order, one per cycle group."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def strongconnect(node: str) -> None:  # Tarjan; pipelines are small, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in deps.get(node, []):
            if dep not in index:
                strongconnect(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in deps.get(node, []):
                groups.append(group)

    for node in deps:
        if node not in index:
            strongconnect(node)
    cycles = []
    order = list(deps)
    for group in groups:
        members = set(group)
        start = min(group, key=order.index)
        # breadth-first along consumers inside the group: the shortest way back to start
        came: dict[str, str] = {}
        todo, end = [start], None
        while todo and end is None:
            node = todo.pop(0)
            for nxt in (n for n in order if n in members and node in deps.get(n, [])):
                if nxt == start:
                    end = node
                    break
                if nxt not in came:
                    came[nxt] = node
                    todo.append(nxt)
        path = [start]
        node = end if end is not None else start
        while node != start:
            path.insert(1, node)
            node = came[node]
        path.append(start)
        cycles.append(path)
    return cycles


def ancestors(deps: dict[str, list[str]], targets: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(targets)
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(deps.get(node, []))
    return seen
