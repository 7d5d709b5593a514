"""``jupyter byok batches list|status|cancel|fetch|forget``: provider batches from a terminal.

Each operation returns the text to show. They run the batch service in this process
(with this machine's keystore, as every ``jupyter byok`` command does) on the batches
recorded in the ledger database, whichever kernel or server submitted them.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from .._runner import run_sync
from ..errors import ByokError
from .render import table

__all__ = ["add_batch_commands", "run_batches"]


def _service() -> Any:
    from ..batch._service import BatchService
    from ..engine import get_engine

    return BatchService(get_engine())


def _when(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _rows(records: list[Any]) -> str:
    head = [
        "id",
        "provider",
        "model",
        "pipeline/node",
        "state",
        "done",
        "failed",
        "total",
        "created (UTC)",
        "provider batch",
    ]
    rows = [head]
    for r in records:
        rows.append(
            [
                r.id[:12],
                r.provider,
                r.model,
                f"{r.pipeline or '-'}/{r.node or '-'}",
                r.state + ("" if r.fetched or r.state in ("cancelled", "failed") else " …"),
                str(r.done),
                str(r.failed),
                str(r.total),
                _when(r.created),
                r.provider_batch_id or "-",
            ]
        )
    return table(rows, last_free=True)


def _find(batch: str) -> Any:
    """A batch by our id (or its first characters, as listed) or the provider's id."""
    service = _service()
    store = service.store
    for record in store.recent(limit=10_000):
        if record.id.startswith(batch) or record.provider_batch_id == batch:
            return service, record
    raise ByokError(f"no batch {batch!r}: list them with `jupyter byok batches list`")


def run_batches(args: argparse.Namespace) -> str:
    command = args.batches_command
    if command == "list":
        records = run_sync(_service().list(active=args.active, limit=args.limit))
        if not records:
            return "no batches" + (" in flight" if args.active else "")
        return _rows(records)
    service, record = _find(args.batch)
    if command == "status":
        return _rows([run_sync(service.refresh(record.id))])
    if command == "cancel":
        return _rows([run_sync(service.cancel(record.id))])
    if command == "forget":
        if not record.fetched and record.state not in ("cancelled", "failed"):
            raise ByokError(
                f"batch {record.id[:12]} is still {record.state}: cancel it first "
                f"(`jupyter byok batches cancel {record.id[:12]}`), or fetch it"
            )
        service.store.forget(record.id)
        return f"forgot batch {record.id[:12]} and its answers (its ledger rows stay)"
    record = run_sync(service.refresh(record.id))  # fetch
    if not record.fetched:
        return _rows([record]) + "\nstill running: its results are not ready yet"
    text = _rows([record])
    if args.output:
        import pandas as pd

        with service.store.ledger.connection() as db:
            rows = db.execute(
                "SELECT custom_id, row_pos, status, text, input_tokens, output_tokens, "
                "cost_pico, error FROM batch_items WHERE batch_id = ? ORDER BY row_pos",
                (record.id,),
            ).fetchall()
        frame = pd.DataFrame(
            rows,
            columns=[
                "custom_id",
                "row",
                "status",
                "text",
                "input_tokens",
                "output_tokens",
                "cost_pico",
                "error",
            ],
        )
        frame["cost_usd"] = frame.pop("cost_pico") / 1e12
        path = Path(args.output)
        if path.suffix.lower() in (".parquet", ".pq"):
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        text += f"\n{len(frame)} item(s) written to {path}"
    return text


def add_batch_commands(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("list", help="recent batches (--active: only those not fetched yet)")
    p.add_argument("--active", action="store_true")
    p.add_argument("--limit", type=int, default=50)
    for name, what in (
        ("status", "ask the provider how a batch is doing"),
        ("cancel", "cancel a batch in flight"),
        ("fetch", "fetch an ended batch's results into the ledger (and --output FILE)"),
        ("forget", "delete an ended batch's stored answers here (its ledger rows stay)"),
    ):
        p = sub.add_parser(name, help=what)
        p.add_argument("batch", help="the id shown by `batches list`, or the provider's id")
        if name == "fetch":
            p.add_argument("--output", "-o", help="write the items to a .csv or .parquet file")
