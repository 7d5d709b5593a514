"""Node definitions, the values nodes pass each other, and per-node results.

A node's *dependencies* are exactly the names its template (or, for a python node, its
function's parameters) refers to; nothing else from the user's namespace is read, so a
prompt never carries more than the user wrote into it.
"""

from __future__ import annotations

import inspect
import json
import keyword
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from ..errors import ByokError
from ..interpolate import find_references
from ..types import SearchResult, Usage

__all__ = [
    "INPUT",
    "Inputs",
    "LLMNode",
    "Node",
    "NodeResult",
    "PipelineResult",
    "PythonNode",
    "SearchNode",
    "render_value",
]

#: the reserved name templates use for run inputs: ``{input.text}``
INPUT = "input"
NodeKind = Literal["llm", "search", "python"]
#: parameters that would put a key into a node's configuration (and so into saved JSON)
_KEY_PARAMS = frozenset({"key", "api_key", "apikey", "token", "secret", "password"})


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ByokError(
            f"node name {name!r} is not a valid identifier: use letters, digits and _ "
            "(templates refer to nodes as {name})"
        )
    if name == INPUT:
        raise ByokError("'input' is reserved for run inputs ({input.text}): pick another name")
    return name


class Inputs(Mapping[str, Any]):
    """Run inputs, reachable from templates as ``{input.text}`` or ``{input["text"]}``."""

    def __init__(self, values: Mapping[str, Any], seen: set[str] | None = None) -> None:
        self._values = dict(values)
        self._seen = seen

    def __getitem__(self, key: str) -> Any:
        if self._seen is not None:
            self._seen.add(key)
        return self._values[key]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Inputs({sorted(self._values)})"


class _Probe:
    """Answers every attribute and key with itself, recording the first-level names."""

    def __init__(self, seen: set[str] | None = None) -> None:
        self.seen = seen

    def __getattr__(self, name: str) -> _Probe:
        if name.startswith("_"):
            raise AttributeError(name)
        if self.seen is not None:
            self.seen.add(name)
        return _Probe()

    def __getitem__(self, key: Any) -> _Probe:
        if self.seen is not None and isinstance(key, str):
            self.seen.add(key)
        return _Probe()

    def __str__(self) -> str:
        return ""


def template_refs(template: str) -> tuple[list[str], set[str]]:
    """(node names referred to, input names referred to) for a template."""
    from ..interpolate import interpolate

    names = [n for n in dict.fromkeys(find_references(template)) if n != INPUT]
    used: set[str] = set()
    interpolate(template, {INPUT: _Probe(used)})
    return names, used


def render_value(value: Any) -> str:
    """How a node's value reads inside another node's prompt."""
    if isinstance(value, str):
        return value
    if isinstance(value, NodeResult):
        return value.text
    if isinstance(value, SearchResult):
        lines = [value.answer] if value.answer else []
        for item in value.results:
            title, url = item.get("title", ""), item.get("url", "")
            content = str(item.get("content") or "").strip()
            lines.append(f"- {title} ({url}): {content}" if content else f"- {title} ({url})")
        return "\n".join(lines)
    if isinstance(value, (dict, list, tuple, int, float, bool)) or value is None:
        try:
            return json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


@dataclass
class LLMNode:
    name: str
    model: str
    template: str
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    kind: NodeKind = "llm"

    def __post_init__(self) -> None:
        bad = sorted(k for k in self.params if k.lower() in _KEY_PARAMS)
        if bad:
            raise ByokError(
                f"node {self.name!r}: {', '.join(bad)} cannot be a node parameter; keys are "
                "never part of a pipeline: store one with `%byok keys set PROVIDER` and pick "
                "it by name in the model id (provider:model@keyname)"
            )

    @property
    def dependencies(self) -> list[str]:
        names, _ = template_refs(self.template)
        if self.system:
            names += [n for n in template_refs(self.system)[0] if n not in names]
        return names

    @property
    def input_names(self) -> set[str]:
        used = template_refs(self.template)[1]
        if self.system:
            used |= template_refs(self.system)[1]
        return used


@dataclass
class SearchNode:
    name: str
    template: str
    depth: str = "basic"
    params: dict[str, Any] = field(default_factory=dict)
    kind: NodeKind = "search"

    def __post_init__(self) -> None:
        if self.depth not in ("basic", "advanced"):
            raise ByokError(f"node {self.name!r}: search depth must be basic or advanced")

    @property
    def dependencies(self) -> list[str]:
        return template_refs(self.template)[0]

    @property
    def input_names(self) -> set[str]:
        return template_refs(self.template)[1]


@dataclass
class PythonNode:
    """Calls ``fn`` with the values its parameters name: other nodes, ``input``, or inputs."""

    name: str
    fn: Callable[..., Any]
    #: the importable ``module:qualname`` the function was given as (or found at)
    ref: str | None = None
    kind: NodeKind = "python"

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ByokError(f"node {self.name!r}: a python node needs a callable")

    def parameters(self) -> list[inspect.Parameter]:
        try:
            sig = inspect.signature(self.fn)
        except (TypeError, ValueError):
            return []
        return [
            p
            for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]

    @property
    def dependencies(self) -> list[str]:
        # Resolved against the pipeline's node names by the pipeline (see Pipeline._deps).
        return [p.name for p in self.parameters()]

    @property
    def input_names(self) -> set[str]:
        return set()


Node = LLMNode | SearchNode | PythonNode


@dataclass
class NodeResult:
    """One node's outcome in one run."""

    name: str
    kind: str
    value: Any
    model: str | None = None
    usage: Usage = field(default_factory=Usage)
    #: what this run paid for the node: 0 for cache hits and pins
    cost_usd: Decimal | None = Decimal(0)
    cost_source: str = "computed"
    cached: bool = False
    pinned: bool = False
    latency_s: float = 0.0
    request_id: str = ""
    #: the prompt or query that was sent (or would have been, on a cache hit)
    prompt: str | None = None
    #: for a cache hit, what the cached call cost when it was made
    saved_usd: Decimal | None = None

    @property
    def text(self) -> str:
        return render_value(self.value)

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "text": self.text,
            "model": self.model,
            "usage": self.usage.to_dict(),
            "cost_usd": None if self.cost_usd is None else str(self.cost_usd),
            "cost_source": self.cost_source,
            "cached": self.cached,
            "pinned": self.pinned,
            "latency_s": self.latency_s,
        }


@dataclass
class PipelineResult(Mapping[str, NodeResult]):
    """Every node's result of one run, in pipeline order, plus totals."""

    pipeline: str
    nodes: dict[str, NodeResult]
    wall_s: float = 0.0

    def __getitem__(self, name: str) -> NodeResult:
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(self.nodes) or "none"
            raise KeyError(f"no node {name!r} in this result (nodes: {known})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def cost_usd(self) -> Decimal:
        """Total paid in this run (nodes with an unknown price count as 0: see ``unpriced``)."""
        return sum((r.cost_usd or Decimal(0) for r in self.nodes.values()), Decimal(0))

    @property
    def unpriced(self) -> list[str]:
        return [n for n, r in self.nodes.items() if r.cost_usd is None]

    @property
    def usage(self) -> Usage:
        total = Usage()
        for r in self.nodes.values():
            total.input_tokens += r.usage.input_tokens
            total.cached_input_tokens += r.usage.cached_input_tokens
            total.output_tokens += r.usage.output_tokens
            total.reasoning_tokens += r.usage.reasoning_tokens
            total.search_credits += r.usage.search_credits
        return total

    @property
    def cached(self) -> list[str]:
        return [n for n, r in self.nodes.items() if r.cached]

    def to_frame(self) -> Any:
        """One row per node: kind, model, tokens, cost, cached, pinned, latency, text."""
        import pandas as pd

        rows = [
            {
                "node": r.name,
                "kind": r.kind,
                "model": r.model,
                "input_tokens": r.usage.input_tokens,
                "output_tokens": r.usage.output_tokens,
                "cost_usd": None if r.cost_usd is None else float(r.cost_usd),
                "cached": r.cached,
                "pinned": r.pinned,
                "latency_s": r.latency_s,
                "text": r.text,
            }
            for r in self.nodes.values()
        ]
        return pd.DataFrame(rows).set_index("node")

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2f}s</td>"
            "<td>{}</td></tr>".format(
                html.escape(r.name),
                html.escape(r.model or r.kind),
                r.usage.input_tokens + r.usage.output_tokens,
                "?" if r.cost_usd is None else f"${r.cost_usd:.6f}",
                "pinned" if r.pinned else ("cached" if r.cached else ""),
                r.latency_s,
                html.escape(r.text[:200]),
            )
            for r in self.nodes.values()
        )
        return (
            f"<b>{html.escape(self.pipeline)}</b>: ${self.cost_usd:.6f} in {self.wall_s:.2f}s"
            "<table><tr><th>node</th><th>model</th><th>tokens</th><th>cost</th><th></th>"
            f"<th>latency</th><th>output</th></tr>{rows}</table>"
        )

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{n}: ${r.cost_usd or 0:.6f}{' cached' if r.cached else ''}"
            for n, r in self.nodes.items()
        )
        return f"PipelineResult({self.pipeline!r}, ${self.cost_usd:.6f}; {parts})"
