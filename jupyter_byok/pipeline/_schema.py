"""Pipelines as JSON: a small, versioned schema that never holds key material.

Schema version 1 (``"format": "jupyter_byok.pipeline"``)::

    {
      "format": "jupyter_byok.pipeline",
      "version": 1,
      "name": "triage",
      "cache": true,
      "inputs": ["text"],                       # derived: the {input.NAME} references
      "keys": [{"provider": "anthropic", "key_name": "default"}],   # derived: names only
      "nodes": [
        {"name": "summary", "kind": "llm", "model": "anthropic:claude-haiku-4-5",
         "template": "Summarize: {input.text}", "system": null, "params": {"max_tokens": 200}},
        {"name": "sources", "kind": "search", "template": "{summary}", "depth": "basic",
         "params": {}},
        {"name": "clean", "kind": "python", "function": "mypackage.text:clean"}
      ],
      "pins": {"summary": {"value": "a pinned output"}},
      "positions": {"summary": [0, 0], "input.text": [-250, 0]}   # optional: canvas layout
    }

Invariants: model ids carry key *names* (``openai:gpt-4o-mini@work``), never values; a
python node is saved by its importable ``module:qualname`` or the save is refused; the
text is scanned for known secrets and key-shaped strings before it is written, and a hit
refuses the save (naming the node) instead of writing it. Readers accept any version up
to :data:`SCHEMA_VERSION` and refuse newer ones with a message saying to upgrade.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ByokError
from ..types import SearchResult
from ._nodes import LLMNode, PythonNode, SearchNode

if TYPE_CHECKING:
    from ._core import Pipeline

__all__ = ["FORMAT", "SCHEMA_VERSION", "from_dict", "load", "save", "to_dict", "to_python"]

FORMAT = "jupyter_byok.pipeline"
SCHEMA_VERSION = 1


def function_ref(fn: Callable[..., Any]) -> str | None:
    """``module:qualname`` if importing it gives back ``fn``; else None."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    try:
        found = import_function(f"{module}:{qualname}")
    except ByokError:
        return None
    return f"{module}:{qualname}" if found is fn else None


def import_function(ref: str) -> Callable[..., Any]:
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise ByokError(f"python node function {ref!r} is not 'module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ByokError(
            f"cannot import python node function {ref!r} ({type(exc).__name__}: {exc}); "
            "install or import the module that defines it"
        ) from exc
    if not callable(obj):
        raise ByokError(f"python node function {ref!r} is not callable")
    return obj  # type: ignore[no-any-return,unused-ignore]


def _pin_to_json(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, SearchResult):
        return {"search": {"query": value.query, "results": value.results, "answer": value.answer}}
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise ByokError(
            f"node {name!r} is pinned to a {type(value).__name__}, which JSON cannot hold: "
            f"unpin it (.unpin({name!r})) or pin a string, number, list or dict before saving"
        ) from None
    return {"value": value}


def _pin_from_json(data: Mapping[str, Any]) -> Any:
    if "search" in data:
        s = data["search"]
        return SearchResult(
            query=str(s.get("query", "")),
            results=list(s.get("results", [])),
            answer=s.get("answer"),
        )
    return data.get("value")


def to_dict(pipeline: Pipeline) -> dict[str, Any]:
    from ._validate import _resolve_model

    nodes: list[dict[str, Any]] = []
    keys: dict[tuple[str, str], None] = {}
    for node in pipeline.nodes.values():
        if isinstance(node, LLMNode):
            nodes.append(
                {
                    "name": node.name,
                    "kind": "llm",
                    "model": node.model,
                    "template": node.template,
                    "system": node.system,
                    "params": dict(node.params),
                }
            )
            try:
                ref = _resolve_model(node.model)
            except ByokError:
                continue
            if ref.spec.needs_key:
                keys[(ref.provider, ref.key_name)] = None
        elif isinstance(node, SearchNode):
            nodes.append(
                {
                    "name": node.name,
                    "kind": "search",
                    "template": node.template,
                    "depth": node.depth,
                    "params": dict(node.params),
                }
            )
            keys[("tavily", "default")] = None
        else:
            ref_text = node.ref or function_ref(node.fn)
            if ref_text is None:
                raise ByokError(
                    f"python node {node.name!r} uses {getattr(node.fn, '__qualname__', node.fn)!r}, "
                    "which cannot be imported (defined in a notebook, a lambda or nested): move "
                    "it into a module and add it as p.python(name, 'module:function'), or remove "
                    "the node before saving"
                )
            nodes.append({"name": node.name, "kind": "python", "function": ref_text})
    data = {
        "format": FORMAT,
        "version": SCHEMA_VERSION,
        "name": pipeline.name,
        "cache": pipeline.cache,
        "inputs": pipeline.input_names(),
        "keys": [{"provider": p, "key_name": k} for p, k in keys],
        "nodes": nodes,
        "pins": {name: _pin_to_json(name, value) for name, value in pipeline.pins.items()},
    }
    if pipeline.positions:  # files without a canvas layout stay as they were
        data["positions"] = {n: [x, y] for n, (x, y) in pipeline.positions.items()}
    return data


def from_dict(data: Mapping[str, Any]) -> Pipeline:
    from ._core import Pipeline

    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise ByokError(f'not a jupyter_byok pipeline: the JSON has no "format": "{FORMAT}"')
    version = data.get("version")
    if not isinstance(version, int) or version < 1:
        raise ByokError(
            f"pipeline JSON has a bad version {version!r}: expected 1..{SCHEMA_VERSION}"
        )
    if version > SCHEMA_VERSION:
        raise ByokError(
            f"this pipeline was saved with schema version {version}, newer than this "
            f"jupyter_byok understands ({SCHEMA_VERSION}): upgrade jupyter_byok"
        )
    p = Pipeline(str(data.get("name") or "pipeline"), cache=bool(data.get("cache", True)))
    for i, raw in enumerate(data.get("nodes") or []):
        if not isinstance(raw, Mapping):
            raise ByokError(f"pipeline JSON node #{i + 1} is not an object")
        kind = raw.get("kind")
        name = str(raw.get("name", ""))
        params = dict(raw.get("params") or {})
        if kind == "llm":
            p.llm(
                name,
                str(raw.get("model", "")),
                str(raw.get("template", "")),
                raw.get("system"),
                **params,
            )
        elif kind == "search":
            p.search(name, str(raw.get("template", "")), str(raw.get("depth", "basic")), **params)
        elif kind == "python":
            p.python(name, str(raw.get("function", "")))
        else:
            raise ByokError(
                f"pipeline JSON node {name!r} has unknown kind {kind!r}: use llm, search or python"
            )
    for name, pin in (data.get("pins") or {}).items():
        p.pin(name, _pin_from_json(pin))
    positions = data.get("positions") or {}
    if not isinstance(positions, Mapping):
        raise ByokError('pipeline JSON "positions" must map node names to [x, y]')
    for name, point in positions.items():
        if name not in p and not str(name).startswith("input."):
            continue  # a node removed by hand: its place is forgotten
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            raise ByokError(f"pipeline JSON position of {name!r} must be [x, y], got {point!r}")
        p.set_position(str(name), point[0], point[1])
    return p


def _check_no_secrets(pipeline: Pipeline, data: dict[str, Any]) -> None:
    from ..redact import redact

    where = []
    for node in data["nodes"]:
        text = json.dumps(node, ensure_ascii=False)
        if redact(text) != text:
            where.append(node["name"])
    for name, pin in data["pins"].items():
        text = json.dumps(pin, ensure_ascii=False, default=str)
        if redact(text) != text:
            where.append(f"{name} (pinned value)")
    head = json.dumps({k: v for k, v in data.items() if k not in ("nodes", "pins")})
    if redact(head) != head:
        where.append("the pipeline name")
    if where:
        raise ByokError(
            f"pipeline {pipeline.name!r} was not saved: {', '.join(where)} contain(s) what looks "
            "like an API key; keys belong in the keystore (`%byok keys set PROVIDER`), never in "
            "templates, parameters or pins"
        )


def save(pipeline: Pipeline, path: str | os.PathLike[str]) -> Path:
    from .._files import atomic_write

    data = to_dict(pipeline)
    _check_no_secrets(pipeline, data)
    target = Path(path)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    try:
        atomic_write(target, text.encode())
    except OSError as exc:
        raise ByokError(f"could not save the pipeline to {target}: {exc.strerror or exc}") from exc
    return target


def load(path: str | os.PathLike[str]) -> Pipeline:
    target = Path(path)
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ByokError(f"no pipeline file at {target}") from None
    except (OSError, ValueError) as exc:
        raise ByokError(f"could not read the pipeline file {target}: {exc}") from exc
    return from_dict(data)


def to_python(pipeline: Pipeline) -> str:
    """Code that rebuilds ``pipeline`` (python nodes by import reference when known)."""
    lines = ["from jupyter_byok.pipeline import Pipeline", "", f"p = Pipeline({pipeline.name!r})"]
    for node in pipeline.nodes.values():
        if isinstance(node, LLMNode):
            args = [repr(node.name), repr(node.model), repr(node.template)]
            if node.system:
                args.append(f"system={node.system!r}")
            args += [f"{k}={v!r}" for k, v in node.params.items()]
            lines.append(f"p.llm({', '.join(args)})")
        elif isinstance(node, SearchNode):
            args = [repr(node.name), repr(node.template), f"depth={node.depth!r}"]
            args += [f"{k}={v!r}" for k, v in node.params.items()]
            lines.append(f"p.search({', '.join(args)})")
        elif isinstance(node, PythonNode):
            ref = node.ref or function_ref(node.fn)
            target = repr(ref) if ref else getattr(node.fn, "__name__", "fn")
            lines.append(f"p.python({node.name!r}, {target})")
    for name, value in pipeline.pins.items():
        if isinstance(value, (str, int, float, bool, list, dict)) or value is None:
            lines.append(f"p.pin({name!r}, {value!r})")
    return "\n".join(lines) + "\n"
