"""Reading the shared ledger into pandas through the Arrow ADBC PostgreSQL driver: the
rows come back column-wise (PostgreSQL's binary COPY format, decoded in C), as the SQLite
path reads big ledgers with the ADBC SQLite driver (:mod:`.frame`). The frame has the same
columns and types as the SQLite path's (:func:`.frame._convert`)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..errors import LedgerError
from .frame import CATEGORIES, _convert
from .query import where
from .schema import COLUMNS, DIMENSIONS

__all__ = ["read_frame"]


def read_frame(
    url: str, since: int | None, until: int | None, filters: dict[str, Any]
) -> pd.DataFrame:
    """The matching rows of the shared ledger at ``url``, oldest first."""
    import adbc_driver_postgresql.dbapi as pgdb

    from .pg import _reason, conninfo_with_password, redact_url

    clause, params = where(since, until, filters, DIMENSIONS)
    n = 0

    def number(_: Any) -> str:
        nonlocal n
        n += 1
        return f"${n}"

    import re

    clause = "TRUE" if clause == "1" else re.sub(r"\?", number, clause)
    sql = f"SELECT {', '.join(COLUMNS)} FROM attempts WHERE {clause} ORDER BY ts, id"
    try:
        with pgdb.connect(conninfo_with_password(url)) as conn, conn.cursor() as cur:
            cur.execute(sql, tuple(params) if params else None)
            table = cur.fetch_arrow_table()
    except pgdb.Error as exc:  # the driver's message may quote the URI: masked
        raise LedgerError(
            f"cannot read the shared ledger {redact_url(url)} ({_reason(exc)})"
        ) from exc
    raw = table.to_pandas()
    for col in COLUMNS:  # text as the sqlite3 path has it: Python objects, None for NULL
        if col not in CATEGORIES and raw[col].dtype.kind not in "iufb":
            values = raw[col].astype(object)
            raw[col] = values.where(values.notna(), None)
    if raw.empty:
        raw = pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})
        for c in ("ts", "ts_end"):
            raw[c] = raw[c].astype("int64")
    return _convert(raw)
