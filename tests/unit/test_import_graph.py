"""No new import cycle between the package's parts.

A "part" is a top-level module (``engine``, ``ledger``) or subpackage (``providers``,
``server``) of ``jupyter_byok``. Every import counts, lazy ones inside functions too: a
lazy import hides a cycle from the interpreter, not from the reader. The cycles that exist
today are listed with the reason they are tolerated; a new one fails, and so does a listed
one that has gone (so the list only shrinks).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "jupyter_byok"

#: Cycles tolerated for now, each with its reason. The structural step of issue 14 removes
#: them; do not add to this list without a sentence that defends the cycle.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def _parts() -> set[str]:
    names = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    return names - {"labextension"}


def _module_name(path: Path) -> tuple[str, str]:
    """(dotted module name, the package its relative imports start from)."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    dotted = ".".join(rel.parts)
    if path.name == "__init__.py":
        dotted = dotted.removesuffix(".__init__")
        return dotted, dotted
    return dotted, dotted.rsplit(".", 1)[0]


def _imports(path: Path) -> Iterator[str]:
    _module, package = _module_name(path)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)


def _part_of(dotted: str, parts: set[str]) -> str | None:
    pieces = dotted.split(".")
    if pieces[0] != "jupyter_byok" or len(pieces) < 2:
        return None
    return pieces[1] if pieces[1] in parts else None


def import_graph() -> dict[str, set[str]]:
    parts = _parts()
    graph: dict[str, set[str]] = {part: set() for part in parts}
    for path in PACKAGE.rglob("*.py"):
        if "labextension" in path.parts:
            continue
        source = _part_of(_module_name(path)[0], parts)
        if source is None:
            continue
        for target in _imports(path):
            part = _part_of(target, parts)
            if part is not None and part != source:
                graph[source].add(part)
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components with more than one part (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}
    assert cycles({"a": {"b"}, "b": set()}) == set()


def test_no_new_import_cycle_between_parts() -> None:
    graph = import_graph()
    assert {"engine", "ledger", "providers", "server", "keys"} <= set(graph)
    found = cycles(graph)
    new = [sorted(c) for c in found - set(KNOWN_CYCLES)]
    assert not new, f"new import cycles between parts of jupyter_byok: {new}"
    gone = [sorted(c) for c in set(KNOWN_CYCLES) - found]
    assert not gone, f"these cycles are gone: remove them from KNOWN_CYCLES: {gone}"
