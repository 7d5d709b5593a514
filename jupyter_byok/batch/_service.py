"""The key-holding side of batches: budget check, upload, polling, results, ledger rows.

It runs where the keys are: in the Jupyter server (behind ``/byok/batches``) for a kernel
that has one, else in-process beside the engine (see :mod:`._transport`). It uses the
engine's keystore, HTTP clients and ledger, so batch calls follow the same key, origin and
ledger rules as every other call.

Invariants:

* Nothing is uploaded while a budget blocks the whole estimate (:meth:`check_budget` is
  asked first, with the sum over every node and provider; a block writes one ledger row).
* Every item of a batch that ended becomes exactly one ledger row, feature ``batch``,
  priced at the batch rate from the usage the provider reported for it; an item that
  failed or expired is an ``error`` row with cost NULL (unknown), a cancelled one a
  ``cancelled`` row costing 0. Row ids derive from the batch and the item: fetching again
  (two kernels, a crash between the two writes) adds nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

from ..errors import BudgetExceededError, ConfigError
from ..ledger import LedgerRow, new_id
from ..ledger.schema import to_pico
from ..models import ModelRef, parse_model
from ..types import Message, Usage
from ..validate import check_params
from ._store import BatchRecord, BatchStore, item_ledger_id

if TYPE_CHECKING:
    from ..engine import Engine
    from ..providers.batches import BatchStatus, ItemOutcome

__all__ = ["BatchService", "Submission", "batch_ref"]

#: bytes a provider's batch wrapper adds per request (ids, separators), for size limits
OVERHEAD = 128
#: ledger rows written at a time while reading a batch's results
CHUNK = 20_000


@dataclass
class Submission:
    """One node's rows, to be sent as one or more provider batches."""

    fingerprint: str
    model: str
    params: dict[str, Any]
    #: ``(custom_id, row position, messages)``
    items: list[tuple[str, int, list[Message]]]
    pipeline: str | None = None
    node: str | None = None
    notebook: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "model": self.model,
            "params": self.params,
            "pipeline": self.pipeline,
            "node": self.node,
            "notebook": self.notebook,
            "items": [[c, r, [m.to_dict() for m in ms]] for c, r, ms in self.items],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Submission:
        items = [(str(c), int(r), [Message.from_dict(m) for m in ms]) for c, r, ms in data["items"]]
        return cls(
            fingerprint=str(data["fingerprint"]),
            model=str(data["model"]),
            params=dict(data.get("params") or {}),
            items=items,
            pipeline=data.get("pipeline"),
            node=data.get("node"),
            notebook=data.get("notebook"),
        )


@dataclass
class BudgetGroup:
    model: str
    cost_usd: Decimal | None
    #: the dearest single item (for ``call`` budgets)
    item_usd: Decimal | None = None
    rows: int = 0


def batch_ref(model: str) -> ModelRef:
    """The parsed model id, or a one-line error when its provider has no batch API."""
    from ..providers.batches import WIRES

    ref = parse_model(model)
    if ref.is_local or not ref.spec.builtin or ref.provider not in WIRES:
        raise ConfigError(
            f"{ref.id} has no provider batch API (batches: openai, anthropic, gemini): "
            'use mode="sync" for it'
        )
    return ref


@dataclass
class BatchService:
    engine: Engine
    store: BatchStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = BatchStore(self.engine.ledger)

    # ----------------------------------------------------------------- budgets
    async def check_budget(self, groups: list[BudgetGroup]) -> list[str]:
        """Block (one ledger row, then :class:`BudgetExceededError`) before anything is
        uploaded when the whole batch estimate would pass a hard limit; else warnings."""
        from .. import budgets

        if not groups or not budgets.has_budgets():
            return []
        return await self.engine._io(self._check_budget, groups)

    def _check_budget(self, groups: list[BudgetGroup]) -> list[str]:
        from .. import budgets

        warnings: list[str] = []
        ledger = self.engine.ledger
        refs = [(parse_model(g.model), g) for g in groups]
        for budget in budgets.get_budgets():
            hits = [(r, g) for r, g in refs if budget.applies(r.provider, r.model, "batch")]
            if not hits:
                continue
            if budget.period == "call":
                costs = [g.item_usd for _, g in hits]
                spent = Decimal(0)
            else:
                costs = [g.cost_usd for _, g in hits]
                since = {"day": "today", "month": "month"}[budget.period]
                spent = ledger.spend(since=since, **budget.filters())
            known = [c for c in costs if c is not None]
            est = (max(known) if budget.period == "call" else sum(known)) if known else None
            projected = spent + (est or Decimal(0))
            if projected > budget.limit_usd and est != 0:
                ref = hits[0][0]
                rows = sum(g.rows for _, g in hits)
                message = (
                    f"budget {budget.name} blocks this batch before anything is uploaded: "
                    f"${spent:.4f} spent of ${budget.limit_usd:.2f}, and the batch of {rows} "
                    f"row(s) may cost up to ${est or 0:.4f}; raise it with "
                    f"`{budget.set_command()}` or map fewer rows"
                )
                ledger.record_or_keep(
                    [
                        LedgerRow(
                            ref.provider,
                            ref.model,
                            "blocked",
                            key_name=ref.key_name,
                            feature="batch",
                            error_type="BudgetExceededError",
                            cost_usd=Decimal(0),
                            cost_source="computed",
                        )
                    ]
                )
                raise BudgetExceededError(message)
            if budget.limit_usd > 0 and projected >= budget.warn_at * budget.limit_usd:
                warnings.append(
                    f"budget {budget.name}: {int(projected / budget.limit_usd * 100)}% of "
                    f"${budget.limit_usd:.2f} with this batch"
                )
        return warnings

    # ----------------------------------------------------------------- submit
    async def submit(self, sub: Submission) -> list[BatchRecord]:
        """Upload one node's rows as one batch per provider size limit; record each."""
        from ..providers import dispatch as chat_dispatch
        from ..providers.batches import batch_wire, split
        from ..providers.batches import dispatch as bdispatch

        ref = batch_ref(sub.model)
        await self.engine._check_ledger(ref)
        spec = ref.spec
        chat = chat_dispatch._wire(spec)
        module = batch_wire(spec.wire)
        # the same parameter schema as a synchronous call's (see validate.py)
        params = check_params(sub.params, "the node's parameters")
        params = {k: v for k, v in params.items() if k != "timeout"}
        # Gemini takes a large batch as a file of requests, in a line format of its own
        as_file = spec.wire == "gemini" and len(sub.items) > module.INLINE_MAX
        line = module.file_line if as_file else module.item_line
        lines = [
            line(
                cid, chat.chat_request(ref.provider, "", ref.model, msgs, params, stream=False).json
            )
            for cid, _, msgs in sub.items
        ]
        parts = split(lines, module.FILE_LIMITS if as_file else module.LIMITS, OVERHEAD)
        key = await self.engine._secret(ref, None)
        records: list[BatchRecord] = []
        for number, (start, stop) in enumerate(parts):
            status = await bdispatch.create(
                spec,
                ref.model,
                lines[start:stop],
                key,
                client=self.engine.client(),
                name=f"{sub.pipeline or 'byok'}-{sub.node or 'batch'}-{number}",
                as_file=as_file,
            )
            record = BatchRecord(
                id=new_id(),
                fingerprint=sub.fingerprint,
                part=number,
                pipeline=sub.pipeline,
                node=sub.node,
                notebook=sub.notebook,
                provider=ref.provider,
                model=ref.model,
                key_name=ref.key_name,
                provider_batch_id=status.batch_id,
                state=status.state,
                total=stop - start,
            )
            items = [(cid, row) for cid, row, _ in sub.items[start:stop]]
            await self.engine._io(self.store.add, record, items)
            records.append(record)
        return records

    # ----------------------------------------------------------------- poll
    async def refresh(self, batch_id: str) -> BatchRecord:
        """Ask the provider how a batch is doing; once it has ended, fetch its results and
        write their ledger rows (once)."""
        from ..providers.batches import dispatch as bdispatch

        record = await self.engine._io(self.store.get, batch_id)
        if record.fetched or not record.provider_batch_id:
            return record
        ref = parse_model(record.model_id)
        key = await self.engine._secret(ref, None)
        status = await bdispatch.retrieve(
            ref.spec, record.provider_batch_id, key, client=self.engine.client()
        )
        if not status.terminal:
            update = partial(
                self.store.update,
                record.id,
                state=status.state,
                done=status.done,
                failed=status.failed,
            )
            await self.engine._io(update)
            return await self.engine._io(self.store.get, record.id)
        outcomes = await bdispatch.results(
            ref.spec, ref.model, status, key, client=self.engine.client()
        )
        await self.engine._io(self._record, record, ref, status, outcomes)
        return await self.engine._io(self.store.get, record.id)

    def _record(
        self,
        record: BatchRecord,
        ref: ModelRef,
        status: BatchStatus,
        outcomes: Iterable[ItemOutcome],
    ) -> None:
        """One ledger row per item (written every :data:`CHUNK` items, so that a large
        batch's parsed answers are never all in memory), then every item's outcome and the
        batch's end, in one transaction."""
        from ..pricing import compute_cost
        from ..providers.batches import ItemOutcome

        rows = self.store.item_rows(record.id)
        started = record.created / 1e6
        ended = time.time()
        pending: list[LedgerRow] = []
        items: list[tuple[Any, ...]] = []
        warnings: list[str] = []
        prices: dict[tuple[Any, ...], Any] = {}
        counts = {"done": 0, "failed": 0}

        def row_for(
            rid: str,
            state: str,
            usage: Usage,
            cost: Decimal | None,
            source: str,
            version: str,
            http_status: int | None,
            error_type: str | None,
            response_id: str | None,
        ) -> LedgerRow:
            return LedgerRow(
                ref.provider,
                ref.model,
                state,
                id=rid,
                request_id=rid,
                key_name=ref.key_name,
                feature="batch",
                notebook=record.notebook,
                pipeline=record.pipeline,
                node=record.node,
                ts_start=started,
                ts_end=ended,
                latency_s=ended - started,
                http_status=http_status,
                error_type=error_type,
                response_id=response_id,
                input_tokens=usage.input_tokens,
                cached_input_tokens=usage.cached_input_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                cache_write_1h_tokens=usage.cache_write_1h_tokens,
                output_tokens=usage.output_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                cost_usd=cost,
                cost_source=source,
                price_version=version,
            )

        def take(o: ItemOutcome, row: int) -> None:
            rid = item_ledger_id(record.id, row)
            if o.status == "ok" and o.result is not None:
                usage = o.result.usage
                key = (
                    usage.input_tokens,
                    usage.cached_input_tokens,
                    usage.cache_write_tokens,
                    usage.cache_write_1h_tokens,
                    usage.output_tokens,
                    usage.reasoning_tokens,
                    usage.provider_cost_usd,
                )
                priced = prices.get(key)
                if priced is None:  # items with the same usage cost the same
                    priced = prices[key] = compute_cost(
                        ref.provider, ref.model, usage, service_tier="batch"
                    )
                pending.append(
                    row_for(
                        rid,
                        "ok",
                        usage,
                        priced.cost_usd,
                        priced.source,
                        priced.price_version,
                        o.http_status or 200,
                        None,
                        o.result.response_id,
                    )
                )
                items.append(
                    (
                        "ok",
                        o.result.text,
                        usage.input_tokens,
                        usage.output_tokens,
                        to_pico(priced.cost_usd),
                        None,
                        rid,
                        o.custom_id,
                    )
                )
                counts["done"] += 1
            else:
                cancelled = o.status == "cancelled"
                pending.append(
                    row_for(
                        rid,
                        "cancelled" if cancelled else "error",
                        Usage(),
                        Decimal(0) if cancelled else None,
                        "computed" if cancelled else "unknown",
                        "",
                        o.http_status,
                        o.error_type,
                        None,
                    )
                )
                error = f"{o.status}: {o.error_message or o.error_type or 'no answer'}"
                items.append(
                    (o.status, None, 0, 0, 0 if cancelled else None, error, rid, o.custom_id)
                )
                counts["failed"] += 1
            if len(pending) >= CHUNK:
                flush()

        def flush() -> None:
            warning = self.engine.ledger.record_or_keep(pending)
            if warning:
                warnings.append(warning)
            pending.clear()

        for o in outcomes:
            row = rows.pop(o.custom_id, None)
            if row is not None:  # an id we did not send, or sent twice, is ignored
                take(o, row)
        why = status.message or f"the batch ended {status.state} without this item"
        missing_as = "expired" if status.state == "expired" else "error"
        for cid, row in rows.items():
            take(ItemOutcome(cid, missing_as, error_type=status.state, error_message=why), row)
        flush()
        self.store.record_outcomes(
            record.id,
            items,
            state=status.state,
            done=counts["done"],
            failed=counts["failed"],
            message=(warnings[0] if warnings else None) or status.message or None,
        )

    # ----------------------------------------------------------------- cancel
    async def cancel(self, batch_id: str) -> BatchRecord:
        """Ask the provider to cancel a batch in flight (its items then end ``cancelled``)."""
        from ..providers.batches import TERMINAL
        from ..providers.batches import dispatch as bdispatch

        record = await self.engine._io(self.store.get, batch_id)
        if record.fetched or record.state in TERMINAL or not record.provider_batch_id:
            return record
        ref = parse_model(record.model_id)
        key = await self.engine._secret(ref, None)
        status = await bdispatch.cancel(
            ref.spec, record.provider_batch_id, key, client=self.engine.client()
        )
        await self.engine._io(partial(self.store.update, record.id, state=status.state))
        return await self.engine._io(self.store.get, record.id)

    async def list(self, active: bool = False, limit: int = 50) -> list[BatchRecord]:
        return await self.engine._io(partial(self.store.recent, active=active, limit=limit))
