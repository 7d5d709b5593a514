"""Reading the ledger into pandas, fast: a columnar snapshot plus the rows appended since.

Ledger rows are never updated, so every row up to a given ``rowid`` can be kept as a Parquet
snapshot beside the database (same folder, 0600). A read loads the snapshot (columnar, in C)
and fetches only the newer rows from SQLite; the snapshot is refreshed once enough rows have
piled up. A snapshot is trusted only if it names this database (``meta.ledger_uuid``) and
its row count still matches the database; otherwise it is rebuilt. Imported only on the
first ``usage()``.

Many new rows at once (the first read of a big ledger) are read column-wise, in C, by the
Arrow ADBC SQLite driver instead of as one Python tuple per row. The driver carries its own
copy of SQLite, and two copies of SQLite in one process must not open the same file: POSIX
locks belong to the process, so one copy's unlocks and closes drop the other's locks, the
write lock of our own writer included (sqlite.org/howtocorrupt.html, 2.2.1). So the driver
runs in short-lived child processes (two for big reads, split by rowid) that open the ledger
read-only and stream Arrow IPC back through pipes.

The driver infers a column's type from the values in its first batch and fails on a later
value of another type, so the query starts with one typed row (``0``, ``0.0`` or ``''`` by
declared type) that is dropped afterwards. Data that the sqlite3 module would read
differently (text in an INTEGER column, a BLOB in a TEXT column, ...) makes the child fail,
a column come back with another type, or the ``_blobs`` count non-zero; the read then falls
back to the plain ``sqlite3`` path, which is also used without pyarrow or the driver and for
small reads. Both paths give identical frames (tests/unit/test_ledger_frame.py).

:class:`FrameReader` holds the thresholds and the choice of path; a ledger made with
``Ledger(path, frames=FrameReader(...))`` reads through it (the tests' seam).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from .schema import COLUMNS, DIMENSIONS

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import pyarrow as pa

__all__ = [
    "ARROW_MIN_ROWS",
    "ARROW_PART_ROWS",
    "CHILD",
    "REFRESH_ROWS",
    "FrameReader",
    "snapshot_path",
]

log = logging.getLogger("jupyter_byok")

CATEGORIES = (
    "provider", "model", "key_name", "feature", "status", "error_type", "cost_source",
    "price_version", "notebook", "pipeline", "node",
)  # fmt: skip
#: refresh the snapshot once this many rows are newer than it
REFRESH_ROWS = 5_000
#: read through the Arrow driver (in a child process) once this many rows are new
ARROW_MIN_ROWS = 50_000
#: rows per child process when the Arrow read is split (at most two children)
ARROW_PART_ROWS = 250_000
#: rows per Arrow batch the driver hands back
BATCH_ROWS = 65_536
_META_KEY = b"jupyter_byok"


class LedgerSource(Protocol):
    """What a frame is read from (the store's :class:`~.store.Ledger`)."""

    @property
    def path(self) -> Path: ...

    @property
    def busy_timeout_ms(self) -> int: ...

    def connection(self) -> AbstractContextManager[sqlite3.Connection]: ...


def snapshot_path(ledger: LedgerSource) -> Path:
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


def _read_sqlite(conn: sqlite3.Connection, after_rowid: int) -> tuple[pd.DataFrame, int]:
    """The rows after ``after_rowid``, one Python tuple each: the reference path."""
    cur = conn.execute(
        f"SELECT rowid, {_SELECT} FROM attempts WHERE rowid > ? ORDER BY rowid", (after_rowid,)
    )
    rows = cur.fetchall()
    last = rows[-1][0] if rows else after_rowid
    raw = pd.DataFrame.from_records(rows, columns=["rowid", *COLUMNS], coerce_float=False)
    raw = raw.drop(columns="rowid")
    return _convert(raw), int(last)


# ------------------------------------------------------------------ the Arrow path
class _Unlike(Exception):
    """The Arrow path cannot reproduce the reference frame for this data."""


def _affinity(decl: str) -> str:
    """SQLite's column affinity for a declared type (sqlite.org/datatype3.html, 3.1)."""
    decl = decl.upper()
    if "INT" in decl:
        return "INTEGER"
    if "CHAR" in decl or "CLOB" in decl or "TEXT" in decl:
        return "TEXT"
    if "BLOB" in decl or not decl:
        return "BLOB"
    if "REAL" in decl or "FLOA" in decl or "DOUB" in decl:
        return "REAL"
    return "NUMERIC"


def _kinds(conn: sqlite3.Connection) -> dict[str, str] | None:
    """Column -> INTEGER/REAL/TEXT, or None if a column has another affinity."""
    kinds = {row[1]: _affinity(row[2] or "") for row in conn.execute("PRAGMA table_info(attempts)")}
    if any(kinds.get(c) not in ("INTEGER", "REAL", "TEXT") for c in COLUMNS):
        return None
    return {c: kinds[c] for c in COLUMNS}


_SENTINEL = {"INTEGER": "0", "REAL": "0.0", "TEXT": "''"}

#: the child's script: nothing but the driver and pyarrow (about 0.2 s to start)
CHILD = """\
import sys
import adbc_driver_manager as dm
import adbc_driver_sqlite as ds
import pyarrow as pa
uri, sql, batch_rows, busy_ms = sys.argv[1:5]
db = ds.connect(uri)
conn = dm.AdbcConnection(db)
st = dm.AdbcStatement(conn)
st.set_sql_query("PRAGMA busy_timeout = %d" % int(busy_ms))
st.execute_update()
st.set_options(**{"adbc.sqlite.query.batch_rows": batch_rows})
st.set_sql_query(sql)
stream, _ = st.execute_query()
try:
    reader = pa.RecordBatchReader.from_stream(stream)
except (AttributeError, TypeError):  # an older driver manager or pyarrow
    reader = pa.RecordBatchReader._import_from_c(stream.address)
out = sys.stdout.buffer
writer = pa.ipc.new_stream(out, reader.schema)
for batch in reader:
    writer.write_batch(batch)
writer.close()
out.flush()
reader.close()
st.close()
conn.close()
db.close()
"""


def _arrow_available() -> bool:
    import importlib.util

    if getattr(sys, "frozen", False) or not sys.executable:
        return False
    return all(
        importlib.util.find_spec(m) is not None
        for m in ("pyarrow", "adbc_driver_manager", "adbc_driver_sqlite")
    )


def _arrow_sql(kinds: dict[str, str], lo: int, hi: int | None) -> str:
    """The child's query: a typed first row (rowid -1), then the rows in (lo, hi] by rowid.

    ``_blobs`` counts BLOB values in TEXT columns, which the driver would silently read as text.
    """
    first = ", ".join(
        ["-1 AS rowid", "0 AS _blobs", *(f'{_SENTINEL[kinds[c]]} AS "{c}"' for c in COLUMNS)]
    )
    blobs = " + ".join(f"(typeof({c}) = 'blob')" for c in COLUMNS if kinds[c] == "TEXT") or "0"
    where = f"rowid > {int(lo)}" + ("" if hi is None else f" AND rowid <= {int(hi)}")
    return (
        f"SELECT {first} UNION ALL SELECT rowid, {blobs}, {_SELECT} FROM attempts "
        f"WHERE {where} ORDER BY 1"
    )


def _fetch_arrow(
    path: Path,
    kinds: dict[str, str],
    after_rowid: int,
    top: int,
    busy_ms: int,
    *,
    part_rows: int,
    batch_rows: int,
    child: str,
) -> pa.Table:
    """Rows after ``after_rowid`` as one Arrow table (rowid first), read by child processes."""
    import pyarrow as pa

    pending = top - after_rowid
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    parts = 2 if cpus >= 2 and pending >= 2 * part_rows else 1
    cuts = [after_rowid + pending * i // parts for i in range(parts)]
    bounds = [(lo, hi) for lo, hi in zip(cuts, [*cuts[1:], None], strict=True)]
    uri = path.resolve().as_uri() + "?mode=ro"
    procs: list[subprocess.Popen[bytes]] = []
    outputs: list[bytes | None] = [None] * parts
    errors: list[bytes] = [b""] * parts

    def drain(i: int) -> None:
        out, err = procs[i].communicate()
        outputs[i], errors[i] = out, err

    try:
        for lo, hi in bounds:
            sql = _arrow_sql(kinds, lo, hi)
            cmd = [sys.executable, "-c", child, uri, sql, str(batch_rows), str(busy_ms)]
            pipe, null = subprocess.PIPE, subprocess.DEVNULL
            # cwd: ``-c`` puts it on sys.path; the ledger's own folder holds no modules
            procs.append(
                subprocess.Popen(cmd, stdin=null, stdout=pipe, stderr=pipe, cwd=path.parent)
            )
        threads = [threading.Thread(target=drain, args=(i,), daemon=True) for i in range(1, parts)]
        for t in threads:
            t.start()
        drain(0)
        for t in threads:
            t.join()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    tables = []
    for proc, out, err in zip(procs, outputs, errors, strict=True):
        if proc.returncode != 0 or out is None:
            msg = err.decode(errors="replace").strip().splitlines()
            raise _Unlike(msg[-1] if msg else f"child exited with {proc.returncode}")
        table = pa.ipc.open_stream(pa.py_buffer(out)).read_all()
        if table.num_rows == 0 or table.column(0)[0].as_py() != -1:
            raise _Unlike("the typed first row is missing")
        tables.append(table.slice(1))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _arrow_types_ok(table: pa.Table, kinds: dict[str, str]) -> None:
    import pyarrow as pa

    expect = {"INTEGER": pa.types.is_int64, "REAL": pa.types.is_float64,
              "TEXT": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)}  # fmt: skip
    for name in COLUMNS:
        typ = table.schema.field(name).type
        if not expect[kinds[name]](typ):
            raise _Unlike(f"column {name} came back as {typ}, declared {kinds[name]}")


def _frame_from_arrow(table: pa.Table, kinds: dict[str, str]) -> pd.DataFrame:
    """The Arrow rows as the frame :func:`_read_sqlite` would make of them, column by column."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    _arrow_types_ok(table, kinds)
    n = table.num_rows
    out: dict[str, Any] = {}

    def need(name: str, kind: str, *, nulls: bool) -> pa.ChunkedArray:
        col = table.column(name)
        if kinds[name] != kind:
            raise _Unlike(f"column {name} is declared {kinds[name]}, not {kind}")
        if not nulls and col.null_count:
            raise _Unlike(f"column {name} has NULLs")
        return col

    # sqlite3 gives None in every row of such a column; pandas keeps it as object
    all_null = np.full(n, None, dtype=object)

    for name in COLUMNS:
        if name in ("ts", "ts_end"):
            col = need(name, "INTEGER", nulls=False)
            out[name] = pd.to_datetime(col.to_numpy(), unit="us", utc=True)
        elif name in ("cost_pico", "saved_pico"):
            continue
        elif name in ("stream", "cache_hit"):
            col = need(name, "INTEGER", nulls=False)
            out[name] = col.to_numpy() != 0
        elif name == "http_status":
            col = need(name, "INTEGER", nulls=True)
            values = pc.fill_null(col, 0).to_numpy()
            mask = col.is_null().to_numpy(zero_copy_only=False)
            out[name] = pd.arrays.IntegerArray(values, mask)
        elif name in ("latency_s", "ttft_s", "search_credits"):
            col = need(name, "REAL", nulls=True)
            out[name] = col.to_numpy()  # NULL -> NaN
        elif name in CATEGORIES:
            col = need(name, "TEXT", nulls=True)
            if col.null_count == n:
                none = pd.CategoricalDtype(pd.Index([], dtype=object))
                out[name] = pd.Categorical.from_codes(np.full(n, -1, dtype=np.int8), dtype=none)
                continue
            values = pc.drop_null(pc.unique(col))
            values = values.take(pc.sort_indices(values))
            codes = pc.fill_null(pc.index_in(col, value_set=values), -1).to_numpy()
            cats = pd.Index(values.to_pandas())
            out[name] = pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(cats))
        else:
            col = table.column(name)
            if col.null_count == n:
                out[name] = all_null
            elif kinds[name] == "TEXT":
                # a copy: slices of the IPC buffers would keep all of them alive
                out[name] = pa.concat_arrays(col.chunks).to_pandas()
            elif kinds[name] == "REAL":
                out[name] = col.to_numpy()
            elif col.null_count:  # sqlite3 would give float64 with NaN
                raise _Unlike(f"column {name} has NULLs")
            else:
                out[name] = col.to_numpy()
    for name, key in (("cost_pico", "cost_usd"), ("saved_pico", "saved_usd")):
        col = need(name, "INTEGER", nulls=True)
        out[key] = pc.cast(col, pa.float64()).to_numpy() / 1e12
    return pd.DataFrame(out, copy=True)  # numpy views of IPC buffers would keep them alive


def _read_arrow(
    ledger: LedgerSource,
    kinds: dict[str, str],
    after_rowid: int,
    top: int,
    *,
    part_rows: int,
    batch_rows: int,
    child: str,
) -> tuple[pd.DataFrame, int] | None:
    """The rows after ``after_rowid`` through the Arrow driver; None if it cannot do them."""
    import numpy as np

    try:
        table = _fetch_arrow(
            ledger.path,
            kinds,
            after_rowid,
            top,
            ledger.busy_timeout_ms,
            part_rows=part_rows,
            batch_rows=batch_rows,
            child=child,
        )
        rowid = table.column(0).to_numpy()
        if len(rowid) == 0:
            raise _Unlike("no rows")
        if len(rowid) > 1 and not bool((np.diff(rowid) > 0).all()):
            raise _Unlike("rows out of order")
        if table.column("_blobs").to_numpy().any():
            raise _Unlike("BLOB values in TEXT columns")
        frame = _frame_from_arrow(table, kinds)
    except _Unlike as exc:
        log.debug("ledger read through Arrow not possible (%s); using sqlite3", exc)
        return None
    except Exception as exc:  # the sqlite3 path is always there and always right
        log.debug("ledger read through Arrow failed (%r); using sqlite3", exc)
        return None
    return frame, int(rowid[-1])


# --------------------------------------------------------------------- the snapshot
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


@dataclass
class FrameReader:
    """Reads a ledger into pandas: the snapshot, then the newer rows through sqlite3, or
    through the Arrow driver in child processes when there are many of them.

    The fields are the thresholds (module constants by default); ``arrow`` is ``None`` to
    use the Arrow path when pyarrow and the driver are installed, ``False`` never to.
    ``arrow_reads`` gets one entry per Arrow read tried: whether it gave the rows (``False``:
    the read fell back to sqlite3).
    """

    refresh_rows: int = REFRESH_ROWS
    arrow_min_rows: int = ARROW_MIN_ROWS
    arrow_part_rows: int = ARROW_PART_ROWS
    batch_rows: int = BATCH_ROWS
    arrow: bool | None = None
    child: str = CHILD
    arrow_reads: list[bool] = field(default_factory=list)

    def read(
        self, ledger: LedgerSource, since: int | None, until: int | None, filters: dict[str, Any]
    ) -> pd.DataFrame:
        """The matching rows, oldest first (times in microseconds; filters by column)."""
        base, _, tail, last, ledger_uuid = self._read_new(ledger)
        frame = tail if base is None else _concat(base.reset_index(drop=True), tail)
        if len(tail) >= self.refresh_rows:
            _write_snapshot(snapshot_path(ledger), frame, ledger_uuid, last)
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

    def read_sqlite(self, ledger: LedgerSource, after_rowid: int = 0) -> tuple[pd.DataFrame, int]:
        """The rows after ``after_rowid`` and the last rowid, through sqlite3 (the reference)."""
        with ledger.connection() as conn:
            return _read_sqlite(conn, after_rowid)

    def read_arrow(
        self, ledger: LedgerSource, after_rowid: int = 0
    ) -> tuple[pd.DataFrame, int] | None:
        """The same through the Arrow driver, or ``None`` if it cannot give the same frame."""
        with ledger.connection() as conn:
            kinds = _kinds(conn)
            (top,) = conn.execute("SELECT max(rowid) FROM attempts").fetchone()
        if kinds is None:
            return None
        return self._read_arrow(ledger, kinds, after_rowid, int(top or 0))

    def _arrow_ok(self) -> bool:
        return _arrow_available() if self.arrow is None else self.arrow

    def _read_arrow(
        self, ledger: LedgerSource, kinds: dict[str, str], after_rowid: int, top: int
    ) -> tuple[pd.DataFrame, int] | None:
        """The rows after ``after_rowid`` through the Arrow driver; None if it cannot do them."""
        got = _read_arrow(
            ledger,
            kinds,
            after_rowid,
            top,
            part_rows=self.arrow_part_rows,
            batch_rows=self.batch_rows,
            child=self.child,
        )
        self.arrow_reads.append(got is not None)
        return got

    def _read_new(
        self, ledger: LedgerSource
    ) -> tuple[pd.DataFrame | None, int, pd.DataFrame, int, str]:
        """(snapshot frame or None, its last rowid, the newer rows, their last rowid, uuid)."""
        arrow: tuple[dict[str, str], int] | None = None
        with ledger.connection() as conn:
            (ledger_uuid,) = conn.execute(
                "SELECT value FROM meta WHERE key = 'ledger_uuid'"
            ).fetchone()
            base, upto = _load_snapshot(snapshot_path(ledger), ledger_uuid, conn)
            (top,) = conn.execute("SELECT max(rowid) FROM attempts").fetchone()
            if (top or 0) - upto >= self.arrow_min_rows and self._arrow_ok():
                kinds = _kinds(conn)
                if kinds is not None:
                    arrow = kinds, int(top)
            if arrow is None:
                tail, last = _read_sqlite(conn, upto)
                return base, upto, tail, last, ledger_uuid
        # outside the lock: the children open their own read-only connections
        got = self._read_arrow(ledger, arrow[0], upto, arrow[1])
        if got is None:
            with ledger.connection() as conn:
                got = _read_sqlite(conn, upto)
        return base, upto, got[0], got[1], ledger_uuid
