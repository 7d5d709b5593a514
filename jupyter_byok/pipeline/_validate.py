"""Validation before any request: references, cycles, models, keys and inputs, in one error.

Key checks read keystore metadata and environment variable *names* only: no key value is
decrypted here.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ByokError
from ._cache import NodeCache
from ._graph import ancestors as _ancestors
from ._graph import find_cycles as _find_cycles
from ._graph import toposort as _toposort
from ._nodes import INPUT, LLMNode, PythonNode, SearchNode

if TYPE_CHECKING:
    from ..models import ModelRef
    from ._core import Pipeline

__all__ = ["PipelineError", "graph_problems", "make_plan", "missing_key"]


class PipelineError(ByokError):
    """The pipeline cannot run as defined; ``problems`` maps node names to what is wrong."""

    def __init__(self, message: str, problems: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or {}


_serials = itertools.count(1)


@dataclass
class _Plan:
    """A validated pipeline: run order, dependencies and resolved models (made once per run)."""

    order: list[str]
    deps: dict[str, list[str]]
    refs: dict[str, ModelRef] = field(default_factory=dict)
    store: NodeCache | None = None
    #: tells one run or map from the next (a map's rows share their plan)
    serial: int = field(default_factory=lambda: next(_serials))


def make_plan(
    pipeline: Pipeline,
    inputs: Mapping[str, Any] | None = None,
    *,
    check_keys: bool = True,
    targets: list[str] | None = None,
) -> _Plan:
    if not pipeline._nodes:
        raise PipelineError(
            f"pipeline {pipeline.name!r} has no nodes: add one with .llm(name, model, template)"
        )
    deps, problems, cycles = graph_problems(pipeline)

    def problem(node: str, text: str) -> None:
        problems.setdefault(node, []).append(text)

    wanted_nodes = set(pipeline._nodes)
    if targets is not None:
        wanted_nodes = _ancestors(deps, targets) if not cycles else set(pipeline._nodes)

    refs: dict[str, ModelRef] = {}
    key_checked: dict[tuple[str, str], str | None] = {}
    for name, node in pipeline._nodes.items():
        if name not in wanted_nodes or name in pipeline._pins:
            continue
        if isinstance(node, LLMNode):
            try:
                ref = _resolve_model(node.model)
            except ByokError as exc:
                problem(name, exc.message)
                continue
            refs[name] = ref
            if check_keys and not ref.is_local:
                slot = (ref.provider, ref.key_name)
                if slot not in key_checked:
                    key_checked[slot] = missing_key(pipeline, ref.provider, ref.key_name)
                if key_checked[slot]:
                    problem(name, str(key_checked[slot]))
        elif isinstance(node, SearchNode) and check_keys:
            slot = ("tavily", "default")
            if slot not in key_checked:
                key_checked[slot] = missing_key(pipeline, "tavily", "default")
            if key_checked[slot]:
                problem(name, str(key_checked[slot]))

    if inputs is not None:
        given = set(inputs)
        for name, node in pipeline._nodes.items():
            if name not in wanted_nodes or name in pipeline._pins:
                continue
            missing = sorted(node.input_names - given)
            if isinstance(node, PythonNode):
                missing += [
                    p.name
                    for p in node.parameters()
                    if p.name not in pipeline._nodes
                    and p.name != INPUT
                    and p.default is p.empty
                    and p.name not in given
                ]
            if missing:
                args = ", ".join(f"{m}=..." for m in missing)
                problem(name, f"needs input {', '.join(missing)} (pass .run({args}))")

    if problems:
        parts = [f"node {n!r} {' and '.join(texts)}" for n, texts in problems.items()]
        raise PipelineError(f"pipeline {pipeline.name!r} cannot run: " + "; ".join(parts), problems)
    order = [n for n in _toposort(deps) if n in wanted_nodes]
    return _Plan(order, deps, refs, pipeline._cache())


def graph_problems(
    pipeline: Pipeline,
) -> tuple[dict[str, list[str]], dict[str, list[str]], list[list[str]]]:
    """The structural part of validation: (dependencies, problems, cycles).

    Unknown references and cycles, with the validator's messages; no model or key is
    looked at, so this is cheap enough to run on every edit.
    """
    problems: dict[str, list[str]] = {}

    def problem(node: str, text: str) -> None:
        problems.setdefault(node, []).append(text)

    deps: dict[str, list[str]] = {}
    for name, node in pipeline._nodes.items():
        wanted = pipeline._deps(node)
        unknown = [d for d in wanted if d not in pipeline._nodes]
        if unknown:
            shown = ", ".join("{" + u + "}" for u in unknown)
            problem(
                name,
                f"refers to unknown {shown} (nodes: {', '.join(pipeline._nodes)}; inputs are "
                "written {input.NAME}; write {{x}} for literal braces)",
            )
        deps[name] = [d for d in wanted if d in pipeline._nodes]

    cycles = _find_cycles(deps)
    for cycle in cycles:
        path = " -> ".join(cycle)
        for name in dict.fromkeys(cycle):
            problem(name, f"is part of a cycle ({path})")
    return deps, problems, cycles


def missing_key(pipeline: Pipeline, provider: str, key_name: str) -> str | None:
    """Why no key is available for ``provider`` (None if one is), from metadata only: the
    key rule (:func:`jupyter_byok.keys.key_source`) as the pipeline's client sees it (the
    server's keystore and environment when there is a server)."""
    from ..keys import label
    from ..providers import get_spec

    try:
        spec = get_spec(provider)
    except ByokError as exc:
        return exc.message
    if not spec.needs_key:
        return None
    try:
        if pipeline._get_client().key_source(provider, key_name).available:
            return None
    except ByokError as exc:
        return exc.message
    how = f"run `%byok keys set {label(provider, key_name)}`"
    if key_name == "default" and spec.env_vars:
        how += " or set " + " or ".join(spec.env_vars)
    return f"has no key for {label(provider, key_name)}: {how}"


def _resolve_model(model: str) -> ModelRef:
    from ..models import parse_model

    if not model or not model.strip():
        raise ByokError("has no model: pick one such as local:smollm2 or openai:gpt-4o-mini")
    ref = parse_model(model)
    if ref.is_local:
        from ..providers.local import resolve_local_model

        resolve_local_model(ref.model)
    return ref
