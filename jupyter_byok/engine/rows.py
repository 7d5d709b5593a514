"""Ledger rows from a call: who and what (:func:`base_row`), the attempts the call made,
closed however it ended, and one priced row per attempt (:func:`attempt_rows`,
:func:`make_row`). Nothing here writes: the call path hands the rows to the ledger."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..ledger.schema import LedgerRow
from ..pricing import compute_cost
from ..types import Attempt, Request, Usage

if TYPE_CHECKING:
    from ..models import ModelRef

__all__ = ["attempt_rows", "base_row", "end_cancelled", "end_failed", "end_ok", "make_row"]

#: a row's cost: (cost_usd, cost_source, price_version)
Cost = tuple[Decimal | None, str, str]


def base_row(request: Request, ref: ModelRef, request_id: str, stream: bool) -> dict[str, Any]:
    """The columns every row of one call shares: who, what, where."""
    origin = request.origin or {}
    return {
        "request_id": request_id,
        "provider": ref.provider,
        "model": ref.model,
        "key_name": None if ref.is_local else ref.key_name,
        "feature": request.feature,
        "notebook": origin.get("notebook"),
        "cell_id": origin.get("cell_id"),
        "pipeline": origin.get("pipeline"),
        "node": origin.get("node"),
        "stream": stream,
    }


# ---------------------------------------------------------------- closing the attempts
def end_cancelled(attempts: list[Attempt], started: float) -> None:
    """A call cancelled (or interrupted) after its last answered attempt: one more row."""
    if not attempts or attempts[-1].status == "ok":
        attempts.append(Attempt(len(attempts) + 1, "cancelled", time.monotonic() - started))


def end_failed(attempts: list[Attempt], exc: BaseException, started: float) -> None:
    """A call that failed before dispatch reported any attempt: one error row."""
    if not attempts:
        attempts.append(
            Attempt(
                1,
                "error",
                time.monotonic() - started,
                error_type=type(exc).__name__,
                error_message=str(exc),
            )
        )


def end_ok(attempts: list[Attempt], latency_s: float, usage: Usage) -> None:
    """A call answered: its last attempt is ``ok`` and carries the final usage."""
    if not attempts or attempts[-1].status != "ok":
        attempts.append(Attempt(len(attempts) + 1, "ok", latency_s, usage=usage))
    elif attempts[-1].usage is None:
        attempts[-1].usage = usage


# ------------------------------------------------------------------------ the rows
def attempt_rows(
    base: dict[str, Any], ref: ModelRef, attempts: list[Attempt]
) -> tuple[list[LedgerRow], tuple[Decimal | None, str] | None]:
    """One priced row per attempt, and the last attempt's cost (``None``: no usage)."""
    rows = []
    cost: Cost | None = None
    for attempt in attempts:
        if attempt.usage is not None:
            priced = compute_cost(ref.provider, ref.model, attempt.usage)
            cost = (priced.cost_usd, priced.source, priced.price_version)
        else:
            cost = None
        rows.append(
            make_row(
                base,
                status=attempt.status,
                attempt=attempt.number,
                http_status=attempt.http_status,
                error_type=attempt.error_type,
                response_id=attempt.response_id,
                usage=attempt.usage,
                cost=cost,
                latency_s=attempt.latency_s,
                ttft_s=attempt.ttft_s,
                started_at=attempt.started_at,
            )
        )
    return rows, (cost[0], cost[1]) if cost is not None else None


def make_row(
    base: dict[str, Any],
    *,
    status: str,
    attempt: int = 1,
    http_status: int | None = None,
    error_type: str | None = None,
    response_id: str | None = None,
    usage: Usage | None = None,
    cost: Cost | None = None,
    latency_s: float | None = None,
    ttft_s: float | None = None,
    cache_hit: bool = False,
    saved_usd: Decimal | None = None,
    started_at: float | None = None,
) -> LedgerRow:
    usage = usage or Usage()
    if started_at is None:  # each attempt's own times when dispatch reported them
        ts_end = time.time()
        started_at = ts_end - (latency_s or 0.0)
    else:
        ts_end = started_at + (latency_s or 0.0)
    cost_usd, cost_source, price_version = cost if cost is not None else (None, "unknown", "")
    # An error after the provider accepted the call (a 2xx or 3xx: an answer cut off,
    # over the cap, of the wrong shape) may be billed: its cost is unknown, never 0.
    answered = status == "error" and http_status is not None and http_status < 400
    if cost is None and status in ("error", "cancelled", "blocked") and not answered:
        cost_usd, cost_source = Decimal(0), "computed"
    return LedgerRow(
        **base,
        status=status,
        attempt=attempt,
        ts_start=started_at,
        ts_end=ts_end,
        http_status=http_status,
        error_type=error_type,
        response_id=response_id,
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        search_credits=usage.search_credits,
        cost_usd=cost_usd,
        cost_source=cost_source,
        price_version=price_version,
        latency_s=latency_s,
        ttft_s=ttft_s,
        cache_hit=cache_hit,
        saved_usd=saved_usd,
    )
