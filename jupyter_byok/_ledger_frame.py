"""Reading the ledger into pandas, fast: a columnar snapshot plus the rows appended since.

Ledger rows are never updated, so every row up to a given ``rowid`` can be kept as a Parquet
snapshot beside the database (same folder, 0600). A read loads the snapshot (columnar, in C)
and fetches only the newer rows from SQLite; the snapshot is refreshed once enough rows have
piled up. A snapshot is trusted only if it names this database (``meta.ledger_uuid``) and
its row count still matches the database; otherwise it is rebuilt. Without pyarrow, the
ledger is read straight from SQLite. Imported only on the first ``usage()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .ledger import COLUMNS, DIMENSIONS

if TYPE_CHECKING:
    from .ledger import Ledger

log = logging.getLogger("jupyter_byok")

CATEGORIES = (
    "provider", "model", "key_name", "feature", "status", "error_type", "cost_source",
    "price_version", "notebook", "pipeline", "node",
)  # fmt: skip
#: refresh the snapshot once this many rows are newer than it
REFRESH_ROWS = 5_000
_META_KEY = b"jupyter_byok"


def snapshot_path(ledger: Ledger) -> Path:
    return ledger.path.with_name(ledger.path.name + ".frame.parquet")


def _convert(raw: pd.DataFrame) -> pd.DataFrame:
    """SQLite columns -> user columns: UTC datetimes, USD floats, booleans, categories."""
    df = raw
    for col in ("ts", "ts_end"):
        df[col] = pd.to_datetime(df[col].astype("int64"), unit="us", utc=True)
    df["cost_usd"] = pd.to_numeric(df.pop("cost_pico"), errors="coerce").astype("float64") / 1e12
    df["saved_usd"] = pd.to_numeric(df.pop("saved_pico"), errors="coerce").astype("float64") / 1e12
    for col in ("stream", "cache_hit"):
        df[col] = df[col].astype(bool)
    for col in ("http_status",):
        df[col] = df[col].astype("Int64")
    for col in ("latency_s", "ttft_s", "search_credits"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in CATEGORIES:
        df[col] = df[col].astype("category")
    return df


_SELECT = ", ".join(COLUMNS)


def _read_sql(conn: sqlite3.Connection, after_rowid: int) -> tuple[pd.DataFrame, int]:
    cur = conn.execute(
        f"SELECT rowid, {_SELECT} FROM attempts WHERE rowid > ? ORDER BY rowid", (after_rowid,)
    )
    rows = cur.fetchall()
    last = rows[-1][0] if rows else after_rowid
    raw = pd.DataFrame.from_records(rows, columns=["rowid", *COLUMNS], coerce_float=False)
    raw = raw.drop(columns="rowid")
    return _convert(raw), int(last)


def _load_snapshot(
    path: Path, ledger_uuid: str, conn: sqlite3.Connection
) -> tuple[pd.DataFrame | None, int]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None, 0
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, ValueError):
        return None, 0
    try:
        owner, upto_s, count_s = meta[_META_KEY].decode().split(":")
        upto, count = int(upto_s), int(count_s)
    except (KeyError, ValueError):
        return None, 0
    if owner != ledger_uuid:
        return None, 0
    (have,) = conn.execute("SELECT count(*) FROM attempts WHERE rowid <= ?", (upto,)).fetchone()
    if have != count:
        return None, 0
    try:
        frame = pq.read_table(path).to_pandas()
    except (OSError, ValueError) as exc:
        log.debug("ledger snapshot unreadable (%s); rebuilding", exc)
        return None, 0
    return frame, upto


def _write_snapshot(path: Path, frame: pd.DataFrame, ledger_uuid: str, upto: int) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[_META_KEY] = f"{ledger_uuid}:{upto}:{len(frame)}".encode()
    table = table.replace_schema_metadata(meta)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o600)
        pq.write_table(table, tmp, compression="zstd")  # a cache: no fsync needed
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("could not write the ledger snapshot (%s)", exc)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _concat(base: pd.DataFrame, tail: pd.DataFrame) -> pd.DataFrame:
    from pandas.api.types import union_categoricals

    if len(tail) == 0:
        return base
    if len(base) == 0:
        return tail
    merged = {}
    for col in base.columns:
        if isinstance(base[col].dtype, pd.CategoricalDtype):
            try:
                cat = union_categoricals([base[col], tail[col]], ignore_order=True)
                merged[col] = pd.Series(cat, name=col)
            except TypeError:  # categories of different dtypes (e.g. one side all missing)
                both = pd.concat([base[col].astype(object), tail[col].astype(object)])
                merged[col] = both.reset_index(drop=True).astype("category")
        else:
            merged[col] = pd.concat([base[col], tail[col]], ignore_index=True)
    return pd.DataFrame(merged)


def read_frame(
    ledger: Ledger, since: int | None, until: int | None, filters: dict[str, Any]
) -> pd.DataFrame:
    with ledger._read() as conn:
        (ledger_uuid,) = conn.execute("SELECT value FROM meta WHERE key = 'ledger_uuid'").fetchone()
        snap = snapshot_path(ledger)
        base, upto = _load_snapshot(snap, ledger_uuid, conn)
        tail, last = _read_sql(conn, upto)
    frame = tail if base is None else _concat(base.reset_index(drop=True), tail)
    if len(tail) >= REFRESH_ROWS:
        _write_snapshot(snap, frame, ledger_uuid, last)
    mask = pd.Series(True, index=frame.index)
    if since is not None:
        mask &= frame["ts"] >= pd.Timestamp(since, unit="us", tz="UTC")
    if until is not None:
        mask &= frame["ts"] < pd.Timestamp(until, unit="us", tz="UTC")
    for name, value in filters.items():
        if value is None or name not in DIMENSIONS:
            continue
        if isinstance(value, list | tuple | set | frozenset):
            mask &= frame[name].isin([str(v) for v in value])
        else:
            mask &= frame[name] == str(value)
    if not bool(mask.all()):
        frame = frame[mask.to_numpy()].reset_index(drop=True)
    return frame
