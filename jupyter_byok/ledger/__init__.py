"""The usage ledger: one SQLite row per provider attempt, shared by every process.

The package, by job (each module imports only those listed before it):

* :mod:`.schema`: the row (:class:`LedgerRow`), the columns, money in picodollars, the
  ordered migrations and the daily rollup's fold;
* :mod:`.query`: times (:func:`parse_time`), filters and the SQL sums behind spend,
  summaries and charts;
* :mod:`.writer`: the one writer that groups rows and acknowledges them after ``COMMIT``
  (loop mode in-process, thread mode in the server);
* :mod:`.store`: :class:`Ledger` (the SQLite file, where it lives, whether it takes rows,
  the failure policy), :func:`default_ledger` and :func:`ledger_health`;
* :mod:`.frame`: reading into pandas (a Parquet snapshot plus newer rows, big reads
  through the Arrow driver). Imported only on the first read into pandas.

``import jupyter_byok.ledger`` never imports pandas.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .query import parse_time
from .schema import (
    COLUMNS,
    DIMENSIONS,
    FOLD_EVERY,
    MEASURES,
    MIGRATIONS,
    ROLLUP_DIMS,
    STATUSES,
    LedgerRow,
    migrate,
    new_id,
)
from .store import (
    CHECK_EVERY_S,
    DB_NAME,
    MIN_FREE_BYTES,
    NETWORK_FS,
    Ledger,
    default_ledger,
    fs_type,
    ledger_health,
    ledger_path,
)
from .writer import LedgerWriter, flush_all

if TYPE_CHECKING:
    import pandas

__all__ = [
    "CHECK_EVERY_S",
    "COLUMNS",
    "DB_NAME",
    "DIMENSIONS",
    "FOLD_EVERY",
    "MEASURES",
    "MIGRATIONS",
    "MIN_FREE_BYTES",
    "NETWORK_FS",
    "ROLLUP_DIMS",
    "STATUSES",
    "Ledger",
    "LedgerRow",
    "LedgerWriter",
    "default_ledger",
    "export",
    "flush_all",
    "fs_type",
    "ledger_health",
    "ledger_path",
    "migrate",
    "new_id",
    "parse_time",
    "scope_args",
    "usage",
]


def usage(
    since: Any = None, until: Any = None, scope: str | None = None, **filters: Any
) -> pandas.DataFrame:
    """The usage ledger as a pandas DataFrame: one row per provider attempt.

    ``since``/``until`` take a datetime, a date, an ISO string, ``"today"``, ``"month"`` or a
    span such as ``"7d"``; ``filters`` match columns exactly (``provider="openai"``) or by
    list (``model=["gpt-4o", "o3"]``). ``scope`` (a shared ledger, see :mod:`.shared`):
    ``"me"`` (the default), ``"team"`` or ``"all"``; a local ledger holds only ``"me"``.
    """
    led = default_ledger()
    return led.frame(since=since, until=until, **filters, **scope_args(led, scope))


def scope_args(led: Any, scope: str | None) -> dict[str, str]:
    """The ``scope`` argument of a read: a shared ledger's (see :mod:`.shared`); a local
    ledger holds only this user's rows (``"me"``), so it takes none."""
    if scope is None or (scope == "me" and not led.shared):
        return {}
    if not led.shared:
        raise ConfigError(
            f"usage scope {scope!r} needs a shared ledger: set JUPYTER_BYOK_LEDGER_URL "
            "(see docs/jupyterhub.md), or use the scope 'me'"
        )
    return {"scope": scope}


def export(
    path: str | os.PathLike[str], since: Any = None, until: Any = None, **filters: Any
) -> Path:
    """Write the usage ledger to ``.csv`` or ``.parquet`` (chosen by the file extension)."""
    out = Path(path)
    frame = usage(since=since, until=until, **filters)
    suffix = out.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(out, index=False)
    elif suffix in (".parquet", ".pq"):
        try:
            frame.to_parquet(out, index=False)
        except ImportError as exc:
            raise ConfigError(f"Parquet export needs pyarrow: pip install pyarrow ({exc})")
    else:
        raise ConfigError(f"cannot export to {out.name}: use a .csv or .parquet file name")
    return out
