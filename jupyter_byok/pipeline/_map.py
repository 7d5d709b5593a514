"""Running a pipeline over every row of a DataFrame: concurrency, 429s, progress, estimates.

Invariants:

* Provider calls in flight never exceed the limiter's current limit. A rate-limit error
  halves the limit and pauses new calls for the provider's ``Retry-After`` (one second
  when it gives none); steady successes raise the limit again, one step at a time, up to
  the ``concurrency`` asked for. The row is then retried, its finished nodes coming from
  the node cache, so nothing is paid twice.
* Each finished node is written to the node cache as soon as it finishes: an interrupted
  map (Ctrl-C, a crash, a cancelled task) resumes where it stopped when run again.
* A confirmation is never waited for where nobody can answer: outside an interactive
  session, an estimate above the threshold raises instead of blocking.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..errors import ByokError, RateLimitError
from ..interpolate import interpolate
from ..types import DEFAULT_MAX_TOKENS
from ._nodes import INPUT, Inputs, LLMNode, PythonNode, SearchNode, render_value

if TYPE_CHECKING:
    import pandas

    from ._core import Pipeline, _Plan

__all__ = ["AdaptiveLimiter", "MapEstimate", "amap", "estimate"]

#: output tokens assumed for an LLM node without ``max_tokens`` (the engine's budget default)
#: tokens a search node's results add to a downstream prompt, for estimates
SEARCH_TOKENS = 400
#: how often a row is retried after rate-limit errors before the map gives up on it
RATE_LIMIT_RETRIES = 8


class CostConfirmationError(ByokError):
    """An estimate is above the confirmation threshold and nobody confirmed it."""


class AdaptiveLimiter:
    """A semaphore whose limit shrinks on rate-limit errors and grows back on success."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ByokError(f"concurrency must be at least 1 (got {limit})")
        self.ceiling = limit
        self.limit = limit
        self.active = 0
        self.rate_limited = 0
        self.peak = 0
        self.lowest = limit
        self._resume_at = 0.0
        self._streak = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self.active < self.limit and not self._waiters:
            self.active += 1
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except BaseException:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                elif fut.done() and not fut.cancelled():
                    self.release()  # we were handed a slot but will not use it
                raise
        self.peak = max(self.peak, self.active)
        delay = self._resume_at - time.monotonic()
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except BaseException:
                self.release()
                raise

    def release(self) -> None:
        self.active -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.active < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.active += 1
                fut.set_result(None)

    def backoff(self, retry_after: float | None) -> None:
        self.rate_limited += 1
        self.limit = max(1, self.limit // 2)
        self.lowest = min(self.lowest, self.limit)
        self._streak = 0
        pause = retry_after if retry_after is not None and retry_after > 0 else 1.0
        self._resume_at = max(self._resume_at, time.monotonic() + min(pause, 120.0))

    def succeeded(self) -> None:
        if self.limit >= self.ceiling:
            return
        self._streak += 1
        if self._streak >= self.limit:
            self._streak = 0
            self.limit += 1
            self._wake()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        except RateLimitError as exc:
            self.backoff(exc.retry_after)
            raise
        else:
            self.succeeded()
        finally:
            self.release()


# --------------------------------------------------------------------------- progress
def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class Progress:
    """An ipywidgets bar in a notebook kernel, a text line elsewhere, or nothing."""

    def __init__(self, total: int, label: str, enabled: bool | None) -> None:
        self.total = total
        self.label = label
        self.mode = "none"
        self._last = 0.0
        self._started = time.monotonic()
        self._bar: Any = None
        self._text: Any = None
        if enabled is False:
            return
        if _in_kernel():
            try:
                import ipywidgets as w
                from IPython.display import display
            except ImportError:  # pragma: no cover - ipywidgets is a dependency
                pass
            else:
                self._bar = w.IntProgress(value=0, min=0, max=max(total, 1), description=label)
                self._text = w.HTML(value=f"0/{total}")
                display(w.HBox([self._bar, self._text]))
                self.mode = "widget"
                return
        if enabled or (sys.stderr is not None and sys.stderr.isatty()):
            self.mode = "text"

    def update(self, done: int, cost: Decimal, force: bool = False) -> None:
        if self.mode == "none":
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        rate = done / max(now - self._started, 1e-9)
        line = f"{done}/{self.total} rows, ${cost:.4f}, {rate:.1f} rows/s"
        if self.mode == "widget":
            self._bar.value = done
            self._text.value = line
        else:
            sys.stderr.write(f"\r{self.label}: {line}")
            sys.stderr.flush()

    def close(self, done: int, cost: Decimal, note: str = "") -> None:
        self.update(done, cost, force=True)
        if self.mode == "widget":
            self._bar.bar_style = "danger" if note else "success"
            if note:
                self._text.value += f" ({note})"
        elif self.mode == "text":
            sys.stderr.write(f" {note}\n" if note else "\n")
            sys.stderr.flush()


# --------------------------------------------------------------------------- map
def _columns(
    pipeline: Pipeline, df: pandas.DataFrame, inputs: Mapping[str, str] | None
) -> dict[str, str]:
    mapping = dict(inputs) if inputs is not None else {n: n for n in pipeline.input_names()}
    missing = [c for c in mapping.values() if c not in df.columns]
    if missing:
        raise ByokError(
            f"map: the DataFrame has no column {', '.join(map(repr, missing))} (columns: "
            f"{', '.join(map(str, df.columns))}); pass inputs={{'text': 'COLUMN'}}"
        )
    return mapping


def _rows(df: pandas.DataFrame, mapping: dict[str, str]) -> list[tuple[Any, dict[str, Any]]]:
    names = list(mapping)
    cols = [mapping[n] for n in names]
    frame = df[cols] if cols else df.iloc[:, :0]
    return [
        (row[0], dict(zip(names, row[1:], strict=True)))
        for row in frame.itertuples(index=True, name=None)
    ]


async def amap(
    pipeline: Pipeline,
    df: pandas.DataFrame,
    inputs: Mapping[str, str] | None = None,
    *,
    concurrency: int = 16,
    progress: bool | None = None,
    errors: str = "raise",
    confirm_above: float | None = None,
) -> pandas.DataFrame:
    """One row of outputs per row of ``df`` (same index).

    Columns: one per node (its text; a python node's value), then ``cost_usd`` (paid in
    this run), ``input_tokens``, ``output_tokens``, ``cached_nodes`` and ``latency_s``, and
    ``error`` when ``errors="store"`` (failed rows are recorded instead of stopping the map).
    ``inputs`` maps input names to columns (default: columns named like the inputs).
    """
    import pandas as pd

    from ._core import PipelineRunError

    if errors not in ("raise", "store"):
        raise ByokError("map: errors must be 'raise' or 'store'")
    mapping = _columns(pipeline, df, inputs)
    plan = pipeline._plan(dict.fromkeys(mapping))
    if confirm_above is not None:
        estimate(pipeline, df, mapping, confirm_above=confirm_above, plan=plan)
    rows = _rows(df, mapping)
    limiter = AdaptiveLimiter(concurrency)
    out: list[dict[str, Any] | None] = [None] * len(rows)
    done = 0
    spent = Decimal(0)
    bar = Progress(len(rows), pipeline.name, progress)
    work = iter(enumerate(rows))
    started = time.monotonic()

    async def run_row(index: Any, values: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                results = await pipeline._execute(
                    plan, values, cache=pipeline.cache, limiter=limiter, remember=False
                )
                break
            except PipelineRunError as exc:
                if isinstance(exc.error, RateLimitError) and attempt < RATE_LIMIT_RETRIES:
                    continue  # the limiter already backed off; finished nodes are cached
                if errors == "store":
                    paid = exc.partial.cost_usd
                    return {
                        "error": exc.message,
                        "cost_usd": float(paid),
                        "latency_s": time.monotonic() - started,
                    }
                raise PipelineRunError(
                    pipeline.name, exc.node, exc.error, exc.partial, row=index
                ) from exc.error
        record: dict[str, Any] = {}
        for name, r in results.items():
            record[name] = r.value if r.kind == "python" else r.text
        cost = sum((r.cost_usd or Decimal(0) for r in results.values()), Decimal(0))
        record["cost_usd"] = float(cost)
        record["input_tokens"] = sum(r.usage.input_tokens for r in results.values())
        record["output_tokens"] = sum(r.usage.output_tokens for r in results.values())
        record["cached_nodes"] = sum(1 for r in results.values() if r.cached)
        record["latency_s"] = time.monotonic() - started
        return record

    async def worker() -> None:
        nonlocal done, spent
        for pos, (index, values) in work:
            record = await run_row(index, values)
            out[pos] = record
            done += 1
            spent += Decimal(str(record.get("cost_usd") or 0))
            bar.update(done, spent)

    workers = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, len(rows)))]
    try:
        await asyncio.gather(*workers)
    except BaseException as exc:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        note = (
            "cancelled"
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))
            else "failed"
        )
        bar.close(done, spent, f"{note}: finished rows are cached, run again to resume")
        raise
    bar.close(done, spent)
    wall = time.monotonic() - started

    names = list(plan.order)
    columns = [*names, "cost_usd", "input_tokens", "output_tokens", "cached_nodes", "latency_s"]
    if errors == "store":
        columns.append("error")
    index = [idx for idx, _ in rows]
    frame = pd.DataFrame([r or {} for r in out], index=pd.Index(index, name=df.index.name))
    frame = frame.reindex(columns=columns)
    frame.attrs.update(
        {
            "pipeline": pipeline.name,
            "wall_s": wall,
            "cost_usd": float(spent),
            "concurrency": concurrency,
            "peak_in_flight": limiter.peak,
            "rate_limited": limiter.rate_limited,
            "lowest_concurrency": limiter.lowest,
        }
    )
    return frame


# --------------------------------------------------------------------------- estimates
@dataclass
class MapEstimate:
    """What a map (or one run) is expected to cost, at most, before it runs."""

    rows: int
    calls: int
    cached_calls: int
    cost_usd: Decimal
    per_node: dict[str, Decimal] = field(default_factory=dict)
    #: nodes whose model has no price (their cost is not in ``cost_usd``)
    unpriced: list[str] = field(default_factory=list)
    #: the same calls at the providers' batch rates (``map(..., mode="batch")``)
    batch_cost_usd: Decimal | None = None
    batch_per_node: dict[str, Decimal] = field(default_factory=dict)

    def compare(self) -> str:
        """Both prices: "≈ $4.10 in batch mode vs ≈ $8.20 now"."""
        return f"≈ ${self.batch_cost_usd or 0:.2f} in batch mode vs ≈ ${self.cost_usd:.2f} now"

    def __float__(self) -> float:
        return float(self.cost_usd)

    def __str__(self) -> str:
        nodes = ", ".join(f"{n} ${c:.4f}" for n, c in self.per_node.items())
        text = (
            f"about ${self.cost_usd:.4f} at most for {self.rows} row(s): {self.calls} call(s), "
            f"{self.cached_calls} already cached ({nodes})"
        )
        if self.unpriced:
            text += f"; no price for {', '.join(self.unpriced)}"
        return text

    def __repr__(self) -> str:
        return f"MapEstimate({self})"


def estimate(
    pipeline: Pipeline,
    df: pandas.DataFrame | None,
    inputs: Mapping[str, str] | None = None,
    *,
    confirm_above: float | None = None,
    run_inputs: Mapping[str, Any] | None = None,
    plan: _Plan | None = None,
) -> MapEstimate:
    """An upper bound, node by node: prompts rendered from real row values and cached
    upstream outputs where known, every output at ``max_tokens``; cached nodes cost 0."""
    from .. import pricing
    from ._cache import llm_key, search_key

    if df is not None:
        mapping = _columns(pipeline, df, inputs)
        rows = [values for _, values in _rows(df, mapping)]
    else:
        rows = [dict(run_inputs or {})]
    if plan is None:
        plan = pipeline._plan(dict.fromkeys(rows[0]) if rows else None)
    nodes = pipeline.nodes
    store = pipeline._cache() if pipeline.cache else None
    per_node: dict[str, Decimal] = {
        n: Decimal(0) for n in plan.order if not isinstance(nodes[n], PythonNode)
    }
    batch_per_node = dict(per_node)
    unpriced: set[str] = set()
    calls = cached = 0
    from ..engine import build_messages

    for values in rows:
        known: dict[str, Any] = {}
        expected_tokens: dict[str, int] = {}
        inputs_obj = Inputs(values)
        for name in plan.order:
            node = nodes[name]
            if name in pipeline.pins:
                known[name] = pipeline.pins[name]
                expected_tokens[name] = len(render_value(known[name])) // 2
                continue
            if isinstance(node, PythonNode):
                expected_tokens[name] = sum(expected_tokens.get(d, 0) for d in plan.deps[name])
                continue
            exact = all(d in known for d in plan.deps[name])

            def lookup(
                ref: str, known: dict[str, Any] = known, inputs_obj: Inputs = inputs_obj
            ) -> Any:
                if ref == INPUT:
                    return inputs_obj
                return known.get(ref, "")

            if isinstance(node, SearchNode):
                model = node.depth  # as the call records it: tavily:basic, tavily:advanced
                expected_tokens[name] = SEARCH_TOKENS
                query = interpolate(node.template, lookup, render_value).strip()
                key = search_key(query, node.depth, node.params)
                cost = batch_cost = pricing.estimate_cost("tavily", model, 0, 0)
                provider = "tavily"
            else:
                assert isinstance(node, LLMNode)
                ref = plan.refs[name]
                provider, model = ref.provider, ref.model
                prompt = interpolate(node.template, lookup, render_value)
                system = interpolate(node.system, lookup, render_value) if node.system else None
                messages = build_messages(prompt, system)
                key = llm_key(ref.provider, ref.model, messages, node.params)
                max_out = int(node.params.get("max_tokens") or DEFAULT_MAX_TOKENS)
                expected_tokens[name] = max_out
                text = "\n".join(m.content for m in messages)
                in_tokens = pricing.estimate_prompt_tokens(text, provider=provider, model=model)
                in_tokens += sum(
                    expected_tokens.get(d, 0) for d in plan.deps[name] if d not in known
                )
                cost = pricing.estimate_cost(provider, model, in_tokens, max_out)
                batch_cost = pricing.estimate_cost(
                    provider, model, in_tokens, max_out, service_tier="batch"
                )
            hit = store.get(key) if (store is not None and exact) else None
            if hit is not None:
                cached += 1
                known[name] = hit.get("text", "") if node.kind == "llm" else hit
                continue
            calls += 1
            if cost is None:
                unpriced.add(name)
            else:
                per_node[name] += cost
                batch_per_node[name] += batch_cost or cost
    result = MapEstimate(
        rows=len(rows),
        calls=calls,
        cached_calls=cached,
        cost_usd=sum(per_node.values(), Decimal(0)),
        per_node=per_node,
        unpriced=sorted(unpriced),
        batch_cost_usd=sum(batch_per_node.values(), Decimal(0)),
        batch_per_node=batch_per_node,
    )
    if confirm_above is not None and result.cost_usd > Decimal(str(confirm_above)):
        confirm(f"{pipeline.name}: {result}", confirm_above)
    return result


def _interactive() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = None
    shell = get_ipython() if get_ipython is not None else None
    kernel = getattr(shell, "kernel", None)
    if kernel is not None:
        return bool(getattr(kernel, "_allow_stdin", False))
    return sys.stdin is not None and sys.stdin.isatty()


def confirm(message: str, threshold: float) -> None:
    """Ask to go on; raise :class:`CostConfirmationError` if declined or nobody can answer."""
    how = (
        f"raise confirm_above above {threshold} (or pass confirm_above=None) to run without asking"
    )
    if not _interactive():
        raise CostConfirmationError(
            f"{message}, above the ${threshold} confirmation threshold: {how}"
        )
    try:
        answer = input(f"{message}. Over ${threshold}: continue? [y/N] ")
    except (EOFError, RuntimeError, OSError) as exc:
        raise CostConfirmationError(
            f"{message}: could not ask for confirmation ({type(exc).__name__}); {how}"
        ) from exc
    if answer.strip().lower() not in ("y", "yes"):
        raise CostConfirmationError(f"not run: {message}")
