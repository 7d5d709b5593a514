"""Batches and their items in the ledger database (tables ``batches`` and ``batch_items``,
migration ``m005_batches``): what survives a kernel restart.

Invariants: a batch row is written (with its items' ``custom_id`` -> row mapping) in the
same transaction as it becomes known, right after the provider accepted it; an item's
outcome is written once, after its ledger row (whose id is derived from the batch and the
item, so writing again after a crash adds nothing); prompts and keys are never stored.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

from ..errors import InvalidInputError
from ..ledger import Ledger

if TYPE_CHECKING:
    from ..ledger.shared import SharedLedger

__all__ = ["BatchRecord", "BatchStore", "item_ledger_id"]

_FIELDS = (
    "id",
    "fingerprint",
    "part",
    "pipeline",
    "node",
    "notebook",
    "provider",
    "model",
    "key_name",
    "provider_batch_id",
    "state",
    "total",
    "done",
    "failed",
    "created",
    "updated",
    "fetched",
    "message",
)


@dataclass
class BatchRecord:
    """One provider batch as this machine knows it (times in epoch microseconds)."""

    id: str
    fingerprint: str
    part: int
    pipeline: str | None
    node: str | None
    notebook: str | None
    provider: str
    model: str
    key_name: str | None
    provider_batch_id: str | None
    state: str
    total: int
    done: int = 0
    failed: int = 0
    created: int = 0
    updated: int = 0
    fetched: int = 0
    message: str | None = None

    @property
    def model_id(self) -> str:
        name = f"@{self.key_name}" if self.key_name and self.key_name != "default" else ""
        return f"{self.provider}:{self.model}{name}"

    @property
    def finished(self) -> bool:
        """Ended at the provider and its outcomes are recorded here."""
        return bool(self.fetched)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchRecord:
        return cls(**{k: data.get(k) for k in _FIELDS})  # type: ignore[arg-type]


def item_ledger_id(batch_id: str, row: int) -> str:
    """The ledger row id of one batch item: the same on every attempt to write it. Like
    :func:`~jupyter_byok.ledger.new_id` it starts with the time (the batch id's 12 hex
    digits of milliseconds), then the row, then 10 of the batch id's random digits: a
    batch's rows are appended in index order (random ids cost twice as much to insert)."""
    return f"{batch_id[:12]}{row:010x}{batch_id[-10:]}"


def _now_us() -> int:
    return int(time.time() * 1e6)


class BatchStore:
    """The batch tables of one ledger database.

    Batch state is this user's own (what lets a map attach again after a kernel restart),
    so with a shared PostgreSQL ledger it stays in the local SQLite file beside it (the
    spool, which has the same schema); the items' ledger rows still go to the shared ledger.
    """

    def __init__(self, ledger: Ledger | SharedLedger) -> None:
        # ``shared``, not isinstance: the shared ledger's module is loaded only when used
        if ledger.shared:
            ledger = cast("SharedLedger", ledger).spool
        self.ledger = cast(Ledger, ledger)

    def add(self, record: BatchRecord, items: Iterable[tuple[str, int]]) -> None:
        """Record an accepted batch and its ``(custom_id, row)`` items, in one transaction."""
        record.created = record.created or _now_us()
        record.updated = _now_us()
        values = tuple(getattr(record, f) for f in _FIELDS)
        with self.ledger.connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    f"INSERT INTO batches ({', '.join(_FIELDS)}) "
                    f"VALUES ({', '.join('?' for _ in _FIELDS)})",
                    values,
                )
                db.executemany(
                    "INSERT INTO batch_items (batch_id, custom_id, row_pos) VALUES (?, ?, ?)",
                    ((record.id, cid, row) for cid, row in items),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def update(self, batch_id: str, **fields: Any) -> None:
        fields["updated"] = _now_us()
        names = ", ".join(f"{k} = ?" for k in fields)
        with self.ledger.connection() as db:
            db.execute(f"UPDATE batches SET {names} WHERE id = ?", (*fields.values(), batch_id))

    def get(self, batch_id: str) -> BatchRecord:
        """A batch by our id, or by the provider's id."""
        with self.ledger.connection() as db:
            row = db.execute(
                f"SELECT {', '.join(_FIELDS)} FROM batches WHERE id = ? OR provider_batch_id = ?",
                (batch_id, batch_id),
            ).fetchone()
        if row is None:
            raise InvalidInputError(
                f"no batch {batch_id!r} in this ledger: list them with `jupyter byok batches list`"
            )
        return BatchRecord(*row)

    def find(self, fingerprint: str) -> list[BatchRecord]:
        with self.ledger.connection() as db:
            rows = db.execute(
                f"SELECT {', '.join(_FIELDS)} FROM batches WHERE fingerprint = ? ORDER BY part",
                (fingerprint,),
            ).fetchall()
        return [BatchRecord(*r) for r in rows]

    def recent(self, *, active: bool = False, limit: int = 50) -> list[BatchRecord]:
        where = "WHERE fetched = 0" if active else ""
        with self.ledger.connection() as db:
            rows = db.execute(
                f"SELECT {', '.join(_FIELDS)} FROM batches {where} ORDER BY created DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [BatchRecord(*r) for r in rows]

    def item_rows(self, batch_id: str) -> dict[str, int]:
        with self.ledger.connection() as db:
            return dict(
                db.execute(
                    "SELECT custom_id, row_pos FROM batch_items WHERE batch_id = ?", (batch_id,)
                ).fetchall()
            )

    def record_outcomes(
        self, batch_id: str, outcomes: Sequence[tuple[Any, ...]], **fields: Any
    ) -> None:
        """Write ``(status, text, input_tokens, output_tokens, cost_pico, error, ledger_id,
        custom_id)`` per item and mark the batch fetched, in one transaction."""
        fields["updated"] = _now_us()
        fields["fetched"] = 1
        names = ", ".join(f"{k} = ?" for k in fields)
        with self.ledger.connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "UPDATE batch_items SET status = ?, text = ?, input_tokens = ?, "
                    "output_tokens = ?, cost_pico = ?, error = ?, ledger_id = ? "
                    "WHERE batch_id = ? AND custom_id = ?",
                    ((*o[:7], batch_id, o[7]) for o in outcomes),
                )
                db.execute(f"UPDATE batches SET {names} WHERE id = ?", (*fields.values(), batch_id))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def outcomes(self, batch_ids: Sequence[str]) -> list[tuple[Any, ...]]:
        """``(row_pos, status, text, input_tokens, output_tokens, cost_pico, error)`` of
        every item of these batches."""
        if not batch_ids:
            return []
        marks = ", ".join("?" for _ in batch_ids)
        with self.ledger.connection() as db:
            return db.execute(
                "SELECT row_pos, status, text, input_tokens, output_tokens, cost_pico, error "
                f"FROM batch_items WHERE batch_id IN ({marks})",
                tuple(batch_ids),
            ).fetchall()

    def forget(self, batch_id: str) -> None:
        """Drop a batch's items and answers (its ledger rows stay)."""
        with self.ledger.connection() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM batch_items WHERE batch_id = ?", (batch_id,))
            db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
            db.execute("COMMIT")
