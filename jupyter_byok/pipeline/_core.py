"""Pipeline: a DAG of LLM, search and python nodes, each with its own model and cost.

Invariants:

* Nothing is sent before the whole pipeline validates: unknown references, cycles,
  unknown models and missing keys are reported together, in one error naming the nodes.
* Every call goes through :func:`jupyter_byok.client.get_client` with feature
  ``pipeline`` and origin ``{"pipeline": name, "node": node}``, so the ledger breaks
  cost down by node and keys stay wherever the client keeps them.
* Key checks read keystore metadata and environment variable *names* only; this module
  never holds a key value, and a pipeline's configuration cannot contain one.
* A node whose resolved inputs and configuration are unchanged is answered from the node
  cache (on by default) and sends no request; independent nodes run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._runner import run_sync
from ..errors import ByokError
from ..interpolate import MISSING, interpolate
from ..types import SearchResult, Usage
from ._cache import NodeCache, default_cache, llm_key, search_key
from ._events import NodeEvent, Observer, Observers
from ._nodes import (
    INPUT,
    Inputs,
    LLMNode,
    Node,
    NodeResult,
    PipelineResult,
    PythonNode,
    SearchNode,
    check_name,
    render_value,
)
from ._validate import PipelineError, _Plan, make_plan

if TYPE_CHECKING:
    import pandas

    from ..client import Client
    from ._map import MapEstimate

__all__ = ["Pipeline", "PipelineError", "PipelineRunError"]

_UNSET: Any = object()


class PipelineRunError(ByokError):
    """A node failed while running; ``node`` names it and ``error`` is the original error.

    ``partial`` holds the nodes that finished (they are cached: a re-run starts from them).
    """

    def __init__(
        self,
        pipeline: str,
        node: str,
        error: BaseException,
        partial: PipelineResult,
        *,
        row: Any = None,
    ) -> None:
        detail = str(error) or type(error).__name__
        where = f"pipeline {pipeline!r}, node {node!r}"
        if row is not None:
            where = f"{where}, row {row!r}"
            detail += " (finished rows are cached: run map again to resume)"
        super().__init__(f"{where}: {detail}")
        self.node = node
        self.row = row
        self.error = error
        self.partial = partial


class _NoLimit:
    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        yield


class Pipeline:
    """Nodes that call models, search the web or run Python, wired by name.

    >>> p = Pipeline("triage")
    >>> p.llm("summary", "local:smollm2", "Summarize: {input.text}", max_tokens=64)
    >>> p.llm("title", "local:smollm2", "A title for: {summary}", max_tokens=16)
    >>> r = p.run(text="...")
    >>> r["title"].text, r["summary"].cost_usd, r.cost_usd
    """

    def __init__(self, name: str = "pipeline", *, cache: bool = True) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ByokError("a pipeline needs a name, e.g. Pipeline('triage')")
        self.name = name
        #: answer unchanged nodes from the node cache (sends no request for them)
        self.cache = cache
        self._nodes: dict[str, Node] = {}
        self._pins: dict[str, Any] = {}
        self._client: Client | None = None
        self._node_cache: NodeCache | None = None
        self._last: dict[str, NodeResult] = {}
        self._last_inputs: dict[str, Any] = {}
        self._positions: dict[str, tuple[float, float]] = {}
        self._observers = Observers()

    # ------------------------------------------------------------------ building
    def llm(
        self,
        name: str,
        model: str,
        template: str,
        system: str | None = None,
        *,
        replace: bool = False,
        **params: Any,
    ) -> Pipeline:
        """Add an LLM node: ``model`` is ``provider:model[@keyname]`` or an alias.

        ``params`` (``max_tokens``, ``temperature``, ...) go to the provider; ``replace``
        swaps an existing node of that name in place.
        """
        node = LLMNode(check_name(name), model, template, system, dict(params))
        return self.add(node, replace=replace)

    def search(
        self,
        name: str,
        template: str,
        depth: str = "basic",
        *,
        replace: bool = False,
        **params: Any,
    ) -> Pipeline:
        """Add a web-search node (Tavily) whose query is ``template``."""
        return self.add(
            SearchNode(check_name(name), template, depth, dict(params)), replace=replace
        )

    def python(self, name: str, fn: Callable[..., Any] | str, *, replace: bool = False) -> Pipeline:
        """Add a python node: ``fn``'s parameters name the nodes (or inputs) it takes.

        ``fn`` may be an importable ``"module:function"`` reference; functions defined in a
        notebook run but cannot be saved to JSON.
        """
        from ._schema import function_ref, import_function

        if isinstance(fn, str):
            node = PythonNode(check_name(name), import_function(fn), fn)
        else:
            node = PythonNode(check_name(name), fn, function_ref(fn))
        return self.add(node, replace=replace)

    def add(self, node: Node, *, replace: bool = False) -> Pipeline:
        check_name(node.name)
        if node.name in self._nodes and not replace:
            raise ByokError(
                f"pipeline {self.name!r} already has a node {node.name!r}: pick another name "
                f"or remove it first with .remove({node.name!r})"
            )
        self._nodes[node.name] = node
        return self

    def remove(self, name: str) -> Pipeline:
        self._node(name)
        del self._nodes[name]
        self._pins.pop(name, None)
        self._last.pop(name, None)
        self._positions.pop(name, None)
        return self

    def rename(self, old: str, new: str) -> Pipeline:
        """Rename a node, keeping its place (references to it are not rewritten)."""
        node = self._node(old)
        check_name(new)
        if new != old and new in self._nodes:
            raise ByokError(f"pipeline {self.name!r} already has a node {new!r}")
        node.name = new
        self._nodes = {(new if k == old else k): v for k, v in self._nodes.items()}
        if old in self._pins:
            self._pins[new] = self._pins.pop(old)
        if old in self._positions:
            self._positions[new] = self._positions.pop(old)
        return self

    def move(self, name: str, index: int) -> Pipeline:
        """Put node ``name`` at position ``index`` (order is for display; the DAG decides)."""
        node = self._node(name)
        names = [n for n in self._nodes if n != name]
        names.insert(max(0, min(index, len(names))), name)
        self._nodes = {n: (node if n == name else self._nodes[n]) for n in names}
        return self

    @property
    def nodes(self) -> dict[str, Node]:
        return dict(self._nodes)

    def __getitem__(self, name: str) -> Node:
        return self._node(name)

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    # -------------------------------------------------------------------- graph
    @property
    def edges(self) -> list[tuple[str, str]]:
        """``(source, target)`` for every reference from a node to another existing node,
        in definition order (the wires of a canvas). Inputs are not nodes: see
        :meth:`input_names`."""
        return [(dep, name) for name, node in self._nodes.items() for dep in self._deps(node)]

    def dependencies(self, name: str) -> list[str]:
        """The names node ``name`` refers to (nodes, existing or not; not inputs)."""
        node = self._node(name)
        if isinstance(node, PythonNode):
            return [d for d in node.dependencies if d in self._nodes]
        return list(node.dependencies)

    def graph_problems(self) -> dict[str, list[str]]:
        """Unknown references and cycles, per node, with the validator's messages (no
        model or key is checked: cheap enough to call on every edit)."""
        from ._validate import graph_problems

        return graph_problems(self)[1]

    @property
    def positions(self) -> dict[str, tuple[float, float]]:
        """Where a canvas drew each node (``x, y``); saved with the pipeline. Keys are node
        names, or ``input.NAME`` for an input."""
        return dict(self._positions)

    def set_position(self, name: str, x: float, y: float) -> Pipeline:
        if not name.startswith(f"{INPUT}."):
            self._node(name)
        try:
            point = (float(x), float(y))
        except (TypeError, ValueError):
            raise ByokError(f"position of {name!r} must be two numbers, got {x!r}, {y!r}")
        if point[0] != point[0] or point[1] != point[1] or abs(point[0]) == float("inf"):
            raise ByokError(f"position of {name!r} must be finite numbers")
        self._positions[name] = point
        return self

    def observe(self, callback: Observer, *, stream: bool = False) -> Callable[[], None]:
        """Call ``callback(event)`` as each node is queued, runs, finishes, fails or is
        cancelled (a :class:`~jupyter_byok.pipeline.NodeEvent`), in runs, single-node runs
        and maps. With ``stream=True`` LLM nodes of a run (not of a map) stream, and
        ``text`` events carry the text so far. Returns a function that stops observing."""
        return self._observers.add(callback, stream)

    def _node(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            known = ", ".join(self._nodes) or "none yet"
            raise ByokError(f"pipeline {self.name!r} has no node {name!r} (nodes: {known})")

    # --------------------------------------------------------------------- pins
    def pin(self, name: str, value: Any = _UNSET) -> Pipeline:
        """Freeze a node's output: ``value``, or the output of its last run."""
        self._node(name)
        if value is _UNSET:
            if name not in self._last:
                raise ByokError(
                    f"node {name!r} has not run yet: run the pipeline first, or pin a value "
                    f"with .pin({name!r}, value)"
                )
            value = self._last[name].value
        self._pins[name] = value
        return self

    def unpin(self, name: str) -> Pipeline:
        self._node(name)
        self._pins.pop(name, None)
        return self

    @property
    def pins(self) -> dict[str, Any]:
        return dict(self._pins)

    @property
    def last_result(self) -> PipelineResult:
        """The latest result of every node that has run (from any run or run_node)."""
        return PipelineResult(self.name, {n: self._last[n] for n in self._nodes if n in self._last})

    # --------------------------------------------------------------- validation
    def input_names(self) -> list[str]:
        """The run inputs the templates refer to (``{input.text}`` -> ``text``)."""
        names: set[str] = set()
        for node in self._nodes.values():
            names |= node.input_names
            if isinstance(node, PythonNode):
                names |= {
                    p.name
                    for p in node.parameters()
                    if p.name not in self._nodes and p.name != INPUT and p.default is p.empty
                }
        return sorted(names)

    def _deps(self, node: Node) -> list[str]:
        if isinstance(node, PythonNode):
            return [d for d in node.dependencies if d in self._nodes]
        return node.dependencies

    def validate(
        self, inputs: Mapping[str, Any] | None = None, *, check_keys: bool = True
    ) -> list[str]:
        """Check everything a run needs before sending anything; return the run order.

        Raises one :class:`PipelineError` naming every node with a problem.
        """
        return self._plan(inputs, check_keys=check_keys).order

    def _plan(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        check_keys: bool = True,
        targets: list[str] | None = None,
    ) -> _Plan:
        return make_plan(self, inputs, check_keys=check_keys, targets=targets)

    # ------------------------------------------------------------------ running
    def _get_client(self) -> Client:
        if self._client is None:
            from ..client import get_client

            return get_client()
        return self._client

    def _cache(self) -> NodeCache:
        return self._node_cache if self._node_cache is not None else default_cache()

    def run(self, **inputs: Any) -> PipelineResult:
        """Run every node (unchanged ones come from the cache); see :meth:`arun`."""
        return run_sync(self.arun(**inputs))

    async def arun(self, **inputs: Any) -> PipelineResult:
        plan = self._plan(inputs)
        self._last_inputs = dict(inputs)
        started = time.monotonic()
        results = await self._execute(plan, inputs, cache=self.cache)
        return PipelineResult(self.name, results, time.monotonic() - started)

    def run_node(self, name: str, /, **inputs: Any) -> PipelineResult:
        """Run ``name`` and what it needs; upstream nodes come from the cache or pins.

        Without inputs, the inputs of the last run are used.
        """
        return run_sync(self.arun_node(name, **inputs))

    async def arun_node(self, name: str, /, **inputs: Any) -> PipelineResult:
        self._node(name)
        if not inputs:
            inputs = dict(self._last_inputs)
        plan = self._plan(inputs, targets=[name])
        self._last_inputs = dict(inputs)
        started = time.monotonic()
        # Upstream nodes always read the cache here: that is what "run one node" means.
        results = await self._execute(
            plan, inputs, cache=True, target_cache=self.cache, target=name
        )
        return PipelineResult(self.name, results, time.monotonic() - started)

    async def _execute(
        self,
        plan: _Plan,
        inputs: Mapping[str, Any],
        *,
        cache: bool,
        limiter: Any = None,
        target: str | None = None,
        target_cache: bool | None = None,
        remember: bool = True,
    ) -> dict[str, NodeResult]:
        inputs_obj = Inputs(inputs)
        limiter = limiter or _NoLimit()
        tasks: dict[str, asyncio.Task[NodeResult]] = {}
        observers = self._observers
        row = None if remember else plan.serial
        stream = remember and observers.streaming

        def emit(name: str, state: str, **more: Any) -> None:
            if observers:
                observers.emit(NodeEvent(name, state, row=row, **more))

        async def one(name: str) -> NodeResult:
            deps = plan.deps[name]
            try:
                if deps:
                    await asyncio.gather(*(tasks[d] for d in deps))
            except BaseException:
                emit(name, "cancelled")  # upstream failed or the run was stopped
                raise
            values = {d: tasks[d].result() for d in deps}
            use_cache = cache if name != target or target_cache is None else target_cache
            emit(name, "running")
            try:
                result = await self._run_one(
                    plan, name, values, inputs_obj, use_cache, limiter, emit if stream else None
                )
            except asyncio.CancelledError:
                emit(name, "cancelled")
                raise
            except BaseException as exc:
                emit(name, "error", error=exc)
                raise
            emit(name, "done", result=result)
            return result

        if row is None:  # a map's rows skip "queued": thousands of events nobody draws
            for name in plan.order:
                emit(name, "queued")
        for name in plan.order:
            tasks[name] = asyncio.ensure_future(one(name))
        try:
            await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
        except BaseException:
            await _cancel_all(tasks.values())
            raise
        failed = next((n for n in plan.order if tasks[n].done() and _failed(tasks[n])), None)
        finished = {
            n: t.result()
            for n, t in tasks.items()
            if t.done() and not t.cancelled() and not _failed(t)
        }
        if remember:
            self._last.update(finished)
        if failed is not None:
            await _cancel_all(tasks.values())
            error = tasks[failed].exception()
            assert error is not None
            raise PipelineRunError(
                self.name, failed, error, PipelineResult(self.name, finished)
            ) from error
        return {n: finished[n] for n in plan.order}

    async def _run_one(
        self,
        plan: _Plan,
        name: str,
        values: dict[str, NodeResult],
        inputs: Inputs,
        use_cache: bool,
        limiter: Any,
        emit: Callable[..., None] | None = None,
    ) -> NodeResult:
        node = self._nodes[name]
        if name in self._pins:
            return NodeResult(name, node.kind, self._pins[name], pinned=True)
        started = time.monotonic()
        if isinstance(node, PythonNode):
            return await self._run_python(node, values, inputs, started)

        def lookup(ref: str) -> Any:
            if ref == INPUT:
                return inputs
            if ref in values:
                return values[ref].value
            return MISSING

        origin = self._origin(name)
        client = self._get_client()
        store = plan.store if use_cache else None
        if isinstance(node, LLMNode):
            from ..engine import build_messages
            from ..types import Request

            ref = plan.refs[name]
            prompt = interpolate(node.template, lookup, render_value)
            system = interpolate(node.system, lookup, render_value) if node.system else None
            messages = build_messages(prompt, system)
            key = llm_key(ref.provider, ref.model, messages, node.params)
            hit = store.get(key) if store is not None else None
            if hit is not None:
                served = _from_cache(name, "llm", hit["text"], hit, started, prompt)
                await _account_hit(ref.id, origin, served)
                return served
            request = Request(
                model=ref.id,
                messages=messages,
                params=dict(node.params),
                feature="pipeline",
                origin=origin,
            )
            async with limiter.slot():
                if emit is None:
                    completion = await client.acomplete(request)
                else:
                    completion = await _streamed(client, request, name, emit)
            result = NodeResult(
                name,
                "llm",
                completion.text,
                model=completion.model or ref.id,
                usage=completion.usage,
                cost_usd=completion.cost_usd,
                cost_source=completion.cost_source,
                latency_s=time.monotonic() - started,
                request_id=completion.request_id,
                prompt=prompt,
            )
            if store is not None:
                store.put(key, {**_payload(result), "text": completion.text})
            return result

        assert isinstance(node, SearchNode)
        query = interpolate(node.template, lookup, render_value).strip()
        if not query:
            raise ByokError(
                f"node {name!r}: the search query is empty (template {node.template!r})"
            )
        key = search_key(query, node.depth, node.params)
        hit = store.get(key) if store is not None else None
        model = f"tavily:search-{node.depth}"
        if hit is not None:
            value = SearchResult(query=query, results=hit["results"], answer=hit.get("answer"))
            served = _from_cache(name, "search", value, hit, started, query, model)
            await _account_hit(f"tavily:{node.depth}", origin, served)
            return served
        async with limiter.slot():
            found = await client.asearch(
                query, depth=node.depth, feature="pipeline", origin=origin, **node.params
            )
        result = NodeResult(
            name,
            "search",
            found,
            model=model,
            usage=found.usage,
            cost_usd=found.cost_usd,
            cost_source=found.cost_source,
            latency_s=time.monotonic() - started,
            request_id=found.request_id,
            prompt=query,
        )
        if store is not None:
            store.put(key, {**_payload(result), "results": found.results, "answer": found.answer})
        return result

    async def _run_python(
        self, node: PythonNode, values: dict[str, NodeResult], inputs: Inputs, started: float
    ) -> NodeResult:
        kwargs: dict[str, Any] = {}
        for param in node.parameters():
            if param.name in values:
                kwargs[param.name] = values[param.name].value
            elif param.name == INPUT:
                kwargs[param.name] = inputs
            elif param.name in inputs:
                kwargs[param.name] = inputs[param.name]
        value = node.fn(**kwargs)
        if inspect.isawaitable(value):
            value = await value
        return NodeResult(node.name, "python", value, latency_s=time.monotonic() - started)

    def _origin(self, node: str) -> dict[str, str]:
        from ..client import default_origin

        return {**default_origin(), "pipeline": self.name, "node": node}

    def clear_cache(self) -> int:
        """Forget every cached node output (of every pipeline under this home)."""
        return self._cache().clear()

    # -------------------------------------------------------------------- batches
    def map(
        self,
        df: pandas.DataFrame,
        inputs: Mapping[str, str] | None = None,
        *,
        concurrency: int = 16,
        progress: bool | None = None,
        errors: str = "raise",
        confirm_above: float | None = None,
        mode: str = "sync",
        **batch: Any,
    ) -> Any:
        """Run the pipeline on every row of ``df``; see :func:`jupyter_byok.pipeline._map.amap`.

        ``mode="batch"`` sends LLM nodes through the providers' batch APIs at their batch
        prices (``wait=False`` returns a handle at once; see :mod:`jupyter_byok.pipeline._batch`).
        """
        from ._map import amap

        if _batch_mode(mode, batch):
            from ._batch import map_batch

            return map_batch(
                self,
                df,
                inputs,
                concurrency=concurrency,
                progress=progress,
                confirm_above=confirm_above,
                **batch,
            )
        if confirm_above is not None:
            # asked here, in the caller's thread, where a notebook can prompt
            self.estimate(df, inputs, confirm_above=confirm_above)
        return run_sync(
            amap(self, df, inputs, concurrency=concurrency, progress=progress, errors=errors)
        )

    async def amap(
        self,
        df: pandas.DataFrame,
        inputs: Mapping[str, str] | None = None,
        *,
        concurrency: int = 16,
        progress: bool | None = None,
        errors: str = "raise",
        confirm_above: float | None = None,
        mode: str = "sync",
        **batch: Any,
    ) -> Any:
        from ._map import amap

        if _batch_mode(mode, batch):
            from ._batch import amap_batch

            return await amap_batch(
                self,
                df,
                inputs,
                concurrency=concurrency,
                progress=progress,
                confirm_above=confirm_above,
                **batch,
            )
        return await amap(
            self,
            df,
            inputs,
            concurrency=concurrency,
            progress=progress,
            errors=errors,
            confirm_above=confirm_above,
        )

    def estimate(
        self,
        df: pandas.DataFrame | None = None,
        inputs: Mapping[str, str] | None = None,
        *,
        confirm_above: float | None = None,
        **run_inputs: Any,
    ) -> MapEstimate:
        """The expected cost of :meth:`map` over ``df`` (or of one :meth:`run`)."""
        from ._map import estimate

        return estimate(self, df, inputs, confirm_above=confirm_above, run_inputs=run_inputs)

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict[str, Any]:
        from ._schema import to_dict

        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pipeline:
        from ._schema import from_dict

        return from_dict(data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the pipeline as JSON (model ids and key *names* only; see ``_schema``)."""
        from ._schema import save

        return save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Pipeline:
        from ._schema import load

        return load(path)

    def to_python(self) -> str:
        """Python code that builds this pipeline."""
        from ._schema import to_python

        return to_python(self)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n} ({_describe(v)})" for n, v in self._nodes.items())
        return f"Pipeline({self.name!r}: {parts or 'no nodes'})"


def _batch_mode(mode: str, options: dict[str, Any]) -> bool:
    """Whether a map runs in batch mode; a one-line error for a bad mode or option."""
    if mode not in ("sync", "batch"):
        raise ByokError(f'map: mode must be "sync" or "batch", not {mode!r}')
    if mode == "sync" and options:
        raise ByokError(f'map: {", ".join(options)} only apply with mode="batch"')
    return mode == "batch"


def _describe(node: Node) -> str:
    if isinstance(node, LLMNode):
        return node.model
    if isinstance(node, SearchNode):
        return f"search {node.depth}"
    return "python"


def _payload(result: NodeResult) -> dict[str, Any]:
    return {
        "model": result.model,
        "usage": result.usage.to_dict(),
        "cost_usd": None if result.cost_usd is None else str(result.cost_usd),
        "cost_source": result.cost_source,
        "latency_s": result.latency_s,
    }


async def _account_hit(model: str, origin: dict[str, str], served: NodeResult) -> None:
    """A node served from the node cache still gets its ledger row (``cache_hit``)."""
    from ..engine import get_engine

    await get_engine().record_cache_hit(
        model,
        feature="pipeline",
        origin=origin,
        saved_usd=served.saved_usd,
        latency_s=served.latency_s,
    )


def _from_cache(
    name: str,
    kind: str,
    value: Any,
    hit: dict[str, Any],
    started: float,
    prompt: str,
    model: str | None = None,
) -> NodeResult:
    saved = hit.get("cost_usd")
    return NodeResult(
        name,
        kind,
        value,
        model=hit.get("model") or model,
        usage=Usage(),
        cost_usd=Decimal(0),
        cost_source="cache",
        cached=True,
        latency_s=time.monotonic() - started,
        prompt=prompt,
        saved_usd=None if saved is None else Decimal(str(saved)),
    )


async def _streamed(client: Client, request: Any, name: str, emit: Callable[..., None]) -> Any:
    """``client.acomplete`` through the stream, telling ``emit`` the text so far."""
    parts: list[str] = []
    final = None
    async for item in client.astream(request):
        if isinstance(item, str):
            parts.append(item)
            emit(name, "text", text="".join(parts))
        else:
            final = item
    if final is None:
        raise ByokError(f"node {name!r}: the stream ended without a final answer")
    return final


def _failed(task: asyncio.Task[Any]) -> bool:
    return not task.cancelled() and task.exception() is not None


async def _cancel_all(tasks: Any) -> None:
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
