"""Pipeline maps through the providers' batch APIs, at their batch prices (``mode="batch"``).

By layer: :mod:`._batch_run` (the map in batch mode, node by node), :mod:`._batch_handle`
(the handle, progress and retries); below the pipeline, :mod:`jupyter_byok.batch` is the
batch service (:mod:`~jupyter_byok.batch._transport`: the kernel's way to it, the Jupyter
server or in-process; :mod:`~jupyter_byok.batch._service`: where the keys are: budgets,
uploads, polling, results, ledger rows; :mod:`~jupyter_byok.batch._store`: batches and
items in the ledger database). The wire formats are in :mod:`jupyter_byok.providers.batches`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ByokError

if TYPE_CHECKING:
    import pandas

    from ._batch_handle import BatchHandle
    from ._core import Pipeline

__all__ = ["amap_batch", "map_batch"]

#: seconds between polls of the provider while waiting (batches take minutes to hours)
POLL_S = 30.0


def _start(
    pipeline: Pipeline,
    df: pandas.DataFrame,
    inputs: Mapping[str, str] | None,
    *,
    concurrency: int,
    confirm_above: float | None,
) -> Any:
    from ..batch._transport import BatchTransport
    from ._batch_run import BatchRun, note
    from ._map import _columns, estimate

    mapping = _columns(pipeline, df, inputs)
    plan = pipeline._plan(dict.fromkeys(mapping))
    run = BatchRun(pipeline, df, mapping, plan, BatchTransport(), concurrency=concurrency)
    for name, state in run.nodes.items():
        if state.mode == "sync" and pipeline.nodes[name].kind == "llm":
            text = (
                f"node {name!r} ({plan.refs[name].id}) has no provider batch API: it runs "
                "as a concurrent map"
            )
            run.notes.append(text)
            note(text)
    if confirm_above is not None:
        est = run.estimate = estimate(pipeline, df, mapping, plan=plan)
        if est.batch_cost_usd is not None and float(est.batch_cost_usd) > confirm_above:
            from ._map import confirm

            confirm(f"{pipeline.name}: {est.compare()}", confirm_above)
    return run


async def amap_batch(
    pipeline: Pipeline,
    df: pandas.DataFrame,
    inputs: Mapping[str, str] | None = None,
    *,
    wait: bool = True,
    concurrency: int = 16,
    progress: bool | None = None,
    confirm_above: float | None = None,
    poll_s: float = POLL_S,
) -> pandas.DataFrame | BatchHandle:
    """``map(..., mode="batch")``: see :mod:`jupyter_byok.batch`."""
    from ._batch_handle import BatchHandle, BatchProgress

    if not poll_s > 0:
        raise ByokError("poll_s must be a number of seconds above 0")
    run = _start(pipeline, df, inputs, concurrency=concurrency, confirm_above=confirm_above)
    from .. import budgets

    if budgets.has_budgets():  # the estimate reads every row: only when a budget may block
        await run.transport.check_budget(run.budget_groups())
    await run.step()
    handle = BatchHandle(run, poll_s, progress)
    if not wait:
        return handle
    try:
        await run.run(BatchProgress(progress), poll_s)
    except (KeyboardInterrupt, asyncio.CancelledError):
        from ._batch_run import note

        note(
            "the batches keep running at the provider: run the same map again to attach to "
            "them, or cancel them with `jupyter byok batches cancel ID`"
        )
        raise
    return handle.result()


def map_batch(
    pipeline: Pipeline,
    df: pandas.DataFrame,
    inputs: Mapping[str, str] | None = None,
    **options: Any,
) -> pandas.DataFrame | BatchHandle:
    from .._runner import run_sync

    return run_sync(amap_batch(pipeline, df, inputs, **options))
