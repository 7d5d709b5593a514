"""A map in batch mode: each LLM node's rows go to the provider as batches, node after
node in dependency order; search, python and local-model nodes run row by row between.

:class:`BatchRun` is a small state machine: :meth:`BatchRun.step` starts every node whose
inputs are complete (submitting, or attaching to batches already in flight for exactly
the same requests), asks the service how the batches in flight are doing, and collects
nodes whose batches ended. ``map(..., mode="batch")`` steps until the end;
``wait=False`` hands the run to a :class:`~._handle.BatchHandle`.

Invariants:

* Nothing is uploaded before the whole map's batch estimate passed the budgets.
* Submitting the same node requests again (same pipeline, rows, model, options) attaches
  to the recorded batches instead: a kernel restarted mid-wait pays nothing twice.
* A row that failed in one node is not sent to the nodes after it; its ``error`` says
  which node failed and why.
* Observers of the pipeline (the canvas) see what a map's rows report: a batch node is
  ``running`` once submitted, and each of its rows ``done`` or ``error`` when collected.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..batch._service import BudgetGroup, Submission, batch_ref
from ..batch._store import BatchRecord
from ..errors import ByokError, RateLimitError
from ..interpolate import interpolate
from ..ledger.schema import to_pico
from ..types import Usage
from ._events import NodeEvent
from ._nodes import INPUT, Inputs, LLMNode, NodeResult, render_value

if TYPE_CHECKING:
    import pandas

    from ..batch._transport import BatchTransport
    from ._core import Pipeline
    from ._map import MapEstimate
    from ._validate import _Plan

__all__ = ["BatchRun", "NodeRows"]

PICO = Decimal(10**12)


@dataclass
class NodeRows:
    """One node's per-row values over the whole map."""

    name: str
    mode: str  # batch | sync | pinned
    values: list[Any]
    errors: list[str | None]
    #: what each row paid for this node, in picodollars (exact, and quick to sum)
    cost: list[int]
    input_tokens: list[int]
    output_tokens: list[int]
    batches: list[BatchRecord] = field(default_factory=list)
    started: bool = False
    done: bool = False

    @classmethod
    def empty(cls, name: str, mode: str, n: int) -> NodeRows:
        return cls(name, mode, [None] * n, [None] * n, [0] * n, [0] * n, [0] * n)


class BatchRun:
    def __init__(
        self,
        pipeline: Pipeline,
        df: pandas.DataFrame,
        mapping: Mapping[str, str],
        plan: _Plan,
        transport: BatchTransport,
        *,
        concurrency: int = 16,
        sync_nodes: frozenset[str] = frozenset(),
        prior: dict[str, NodeRows] | None = None,
        salt: str = "",
        notes: list[str] | None = None,
    ) -> None:
        from ._map import _rows

        self.pipeline, self.plan, self.transport = pipeline, plan, transport
        self.df, self.mapping = df, dict(mapping)
        self.rows = _rows(df, self.mapping)
        self.concurrency = concurrency
        self.salt = salt
        self.started = time.monotonic()
        self.cancelled = False
        #: the map's estimate, when one was made (budgets, confirm_above)
        self.estimate: MapEstimate | None = None
        self.notes: list[str] = notes if notes is not None else []
        n = len(self.rows)
        self.nodes: dict[str, NodeRows] = {}
        nodes = pipeline.nodes
        for name in plan.order:
            node = nodes[name]
            if name in pipeline.pins:
                mode = "pinned"
            elif isinstance(node, LLMNode) and name not in sync_nodes and _batchable(plan, name):
                mode = "batch"
            else:
                mode = "sync"
            state = NodeRows.empty(name, mode, n)
            if prior is not None and name in prior:
                state.values = list(prior[name].values)
                state.errors = list(prior[name].errors)
            self.nodes[name] = state

    # ------------------------------------------------------------------ budget
    def budget_groups(self) -> list[BudgetGroup]:
        """The batch estimate per model (every batch node, all rows), for the budgets."""
        from ._map import estimate

        est = self.estimate = estimate(self.pipeline, self.df, self.mapping, plan=self.plan)
        groups: dict[str, BudgetGroup] = {}
        for name, state in self.nodes.items():
            if state.mode != "batch":
                continue
            ref = self.plan.refs[name]
            cost = est.batch_per_node.get(name)
            g = groups.setdefault(ref.id, BudgetGroup(ref.id, Decimal(0), Decimal(0), 0))
            rows = len(self.rows)
            g.rows += rows
            if cost is None or g.cost_usd is None:
                g.cost_usd = g.item_usd = None
            else:
                g.cost_usd += cost
                g.item_usd = max(g.item_usd or Decimal(0), cost / max(rows, 1))
        return list(groups.values())

    # ------------------------------------------------------------------ steps
    @property
    def done(self) -> bool:
        return all(s.done for s in self.nodes.values())

    def _ready(self, name: str) -> bool:
        return all(self.nodes[d].done for d in self.plan.deps[name])

    def _emit(self, event: NodeEvent) -> None:
        observers = self.pipeline._observers
        if observers:
            observers.emit(event)

    async def step(self) -> None:
        """Start what can start, poll what is in flight, collect what ended."""
        for name, state in self.nodes.items():
            if state.started or not self._ready(name):
                continue
            if self.cancelled and state.mode == "batch":
                self._fail_all(state, "cancelled before it was submitted")
                continue
            state.started = True
            if state.mode == "pinned":
                pin = self.pipeline.pins[name]
                state.values = [pin] * len(self.rows)
                state.done = True
            elif state.mode == "sync":
                await self._run_sync(name, state)
            else:
                self._emit(NodeEvent(name, "running", row=self.plan.serial))
                await self._submit(name, state)
        for state in self.nodes.values():
            if state.mode == "batch" and state.started and not state.done:
                fresh = []
                for record in state.batches:
                    if not record.fetched:
                        record = await self.transport.refresh(record.id)
                    fresh.append(record)
                state.batches = fresh
                if all(r.fetched for r in fresh):
                    self._collect(state)

    async def run(self, progress: Any = None, poll_s: float = 30.0) -> None:
        while True:
            await self.step()
            if progress is not None:
                progress.update(self)
            if self.done:
                break
            await asyncio.sleep(poll_s)

    def _fail_all(self, state: NodeRows, why: str) -> None:
        for i in range(len(self.rows)):
            if state.errors[i] is None and state.values[i] is None:
                state.errors[i] = why
        state.started = state.done = True

    def _upstream_error(self, name: str, i: int) -> str | None:
        for d in self.plan.deps[name]:
            if self.nodes[d].errors[i] is not None:
                return f"upstream node {d!r} failed"
        return None

    def _lookup(self, name: str, i: int) -> Any:
        inputs = Inputs(self.rows[i][1])
        nodes = self.nodes

        def lookup(ref: str) -> Any:
            if ref == INPUT:
                return inputs
            return nodes[ref].values[i] if ref in nodes else ""

        return lookup

    # ------------------------------------------------------------------ batch nodes
    async def _submit(self, name: str, state: NodeRows) -> None:
        from ..client import default_origin
        from ..engine import build_messages

        node = self.pipeline.nodes[name]
        assert isinstance(node, LLMNode)
        ref = self.plan.refs[name]
        items = []
        digest = hashlib.sha256()
        # the same pipeline and node sending the same requests: see "Surviving a restart"
        params = json.dumps(node.params, sort_keys=True, default=str)
        head = [self.pipeline.name, name, ref.id, params, self.salt]
        digest.update("\0".join(head).encode())
        for i in range(len(self.rows)):
            if state.values[i] is not None:  # known from an earlier run (retry)
                continue
            why = self._upstream_error(name, i)
            if why is not None:
                state.errors[i] = why
                continue
            state.errors[i] = None
            lookup = self._lookup(name, i)
            prompt = interpolate(node.template, lookup, render_value)
            system = interpolate(node.system, lookup, render_value) if node.system else None
            cid = f"r{i}"
            digest.update(f"\0{cid}\0{prompt}\0{system or ''}".encode())
            items.append((cid, i, build_messages(prompt, system)))
        state.batches = []
        if not items:
            state.done = True
            return
        base = digest.hexdigest()
        store = _store()
        for generation in range(100):
            fingerprint = base if generation == 0 else f"{base}#{generation}"
            found = store.find(fingerprint)
            if found and all(r.state in ("cancelled", "failed") for r in found):
                continue  # every batch of this try was cancelled or failed: a new try
            covered: set[str] = set()
            for record in found:
                covered.update(store.item_rows(record.id))
            todo = [it for it in items if it[0] not in covered]
            state.batches = found
            if found:
                self.notes.append(
                    f"node {name!r}: attached to {len(found)} batch(es) already submitted"
                )
            if todo:
                origin = default_origin()
                sub = Submission(
                    fingerprint=fingerprint,
                    model=ref.id,
                    params=dict(node.params),
                    items=todo,
                    pipeline=self.pipeline.name,
                    node=name,
                    notebook=origin.get("notebook"),
                )
                state.batches = found + await self.transport.submit(sub)
            return
        raise ByokError(f"node {name!r}: too many cancelled tries of the same batch")

    def _collect(self, state: NodeRows) -> None:
        ids = [r.id for r in state.batches]
        serial, model = self.plan.serial, self.plan.refs[state.name].id
        observed = bool(self.pipeline._observers)
        for row, status, text, inp, out, cost, error in _store().outcomes(ids):
            if status == "ok":
                state.values[row] = text
                state.errors[row] = None
            else:
                state.errors[row] = error or status
            state.cost[row] = cost or 0
            state.input_tokens[row] = inp
            state.output_tokens[row] = out
            if not observed:
                continue
            if status == "ok":
                usage = Usage(input_tokens=inp, output_tokens=out)
                cost_usd = None if cost is None else Decimal(cost) / PICO
                result = NodeResult(state.name, "llm", text, model, usage, cost_usd)
                self._emit(NodeEvent(state.name, "done", result=result, row=serial))
            else:
                failed = ByokError(error or status)
                self._emit(NodeEvent(state.name, "error", error=failed, row=serial))
        state.done = True

    async def cancel(self) -> list[BatchRecord]:
        """Cancel every batch in flight; nodes not yet submitted never will be."""
        self.cancelled = True
        out = []
        for state in self.nodes.values():
            state.batches = [
                r if r.fetched else await self.transport.cancel(r.id) for r in state.batches
            ]
            out += state.batches
        return out

    # ------------------------------------------------------------------ sync nodes
    async def _run_sync(self, name: str, state: NodeRows) -> None:
        from ._map import RATE_LIMIT_RETRIES, AdaptiveLimiter

        limiter = AdaptiveLimiter(self.concurrency)
        nodes = self.pipeline.nodes
        todo = [i for i in range(len(self.rows)) if state.values[i] is None]

        serial = self.plan.serial

        async def one(i: int) -> None:
            why = self._upstream_error(name, i)
            if why is not None:
                state.errors[i] = why
                return
            self._emit(NodeEvent(name, "running", row=serial))
            deps = {
                d: NodeResult(d, nodes[d].kind, self.nodes[d].values[i])
                for d in self.plan.deps[name]
            }
            for attempt in range(RATE_LIMIT_RETRIES + 1):
                try:
                    result = await self.pipeline._run_one(
                        self.plan,
                        name,
                        deps,
                        Inputs(self.rows[i][1]),
                        self.pipeline.cache,
                        limiter,
                    )
                    break
                except RateLimitError as exc:
                    if attempt == RATE_LIMIT_RETRIES:
                        state.errors[i] = str(exc)
                        self._emit(NodeEvent(name, "error", error=exc, row=serial))
                        return
                except Exception as exc:  # recorded per row, as map(errors="store") does
                    state.errors[i] = str(exc) or type(exc).__name__
                    self._emit(NodeEvent(name, "error", error=exc, row=serial))
                    return
            self._emit(NodeEvent(name, "done", result=result, row=serial))
            state.values[i] = result.value
            state.errors[i] = None
            state.cost[i] = to_pico(result.cost_usd) or 0
            state.input_tokens[i] = result.usage.input_tokens
            state.output_tokens[i] = result.usage.output_tokens

        work = iter(todo)

        async def worker() -> None:
            for i in work:
                await one(i)

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(todo)) or 1)))
        state.done = True

    # ------------------------------------------------------------------ result
    def frame(self) -> pandas.DataFrame:
        import numpy as np
        import pandas as pd

        n = len(self.rows)
        names = list(self.plan.order)
        data: dict[str, Any] = {}
        for name in names:
            state = self.nodes[name]
            kind = self.pipeline.nodes[name].kind
            data[name] = (
                state.values
                if kind == "python"
                else [None if v is None else render_value(v) for v in state.values]
            )
        states = list(self.nodes.values())

        def total(column: str) -> Any:
            return np.sum([np.asarray(getattr(s, column), dtype=np.int64) for s in states], axis=0)

        pico = total("cost") if states else np.zeros(n, dtype=np.int64)
        data["cost_usd"] = pico / 1e12
        data["input_tokens"] = total("input_tokens") if states else np.zeros(n, dtype=np.int64)
        data["output_tokens"] = total("output_tokens") if states else np.zeros(n, dtype=np.int64)
        data["cached_nodes"] = np.zeros(n, dtype=np.int64)
        data["latency_s"] = [None] * n
        errors: list[str | None] = [None] * n
        for name in names:
            for i, e in enumerate(self.nodes[name].errors):
                if e is not None and errors[i] is None:
                    errors[i] = f"node {name!r}: {e}"
        data["error"] = errors
        index = pd.Index([idx for idx, _ in self.rows], name=self.df.index.name)
        frame = pd.DataFrame(data, index=index)
        frame.attrs.update(
            {
                "pipeline": self.pipeline.name,
                "mode": "batch",
                "wall_s": time.monotonic() - self.started,
                "cost_usd": float(self.spent()),
                "batches": [r.id for s in states for r in s.batches],
                "notes": list(self.notes),
                "estimate": self.estimate.compare() if self.estimate is not None else None,
            }
        )
        return frame

    def spent(self) -> Decimal:
        """What this map paid so far (exact)."""
        return Decimal(sum(sum(s.cost) for s in self.nodes.values())) / PICO


def _batchable(plan: _Plan, name: str) -> bool:
    try:
        batch_ref(plan.refs[name].id)
    except ByokError:
        return False
    return True


def _store() -> Any:
    from ..batch._store import BatchStore
    from ..ledger import default_ledger

    return BatchStore(default_ledger())


def note(text: str) -> None:
    """The one-line notes of a batch map (a node that runs without a batch API)."""
    sys.stderr.write(f"note: {text}\n")
    sys.stderr.flush()
