"""The ledger's schema on PostgreSQL, and the connection to it (psycopg 3).

One schema, one ordered list of migrations (:data:`.schema.MIGRATIONS`): each migration has
its SQLite body there and its PostgreSQL body here, under the same name (``PG_MIGRATIONS``;
``tests/test_ledger_pg.py`` checks that both lists name the same migrations in the same
order and that both tables have the same columns). The row format is the same: integer
picodollars, integer microseconds, 0/1 flags, so a row copies between backends unchanged.

Only PostgreSQL has budgets across servers (migration ``m006_who_where``):

* ``budgets``: limits per period for a user, a team, a key or everyone (set by an admin);
* ``budget_spent``: what was spent against each budget per period, kept by a statement
  trigger on ``attempts`` while any budget exists (rows counted once: a replayed row that
  already exists is not inserted, so it is not counted);
* ``reservations``: the estimate of each call in flight, per budget; a call's rows delete
  its reservations in the transaction that inserts them (the settlement).

Imported only when a ``postgresql://`` ledger URL is configured.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from ..errors import ConfigError, LedgerError
from .schema import COLUMNS, MIGRATIONS

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

    from ..redact import Secret

__all__ = [
    "APP_GRANTS",
    "INSERT",
    "PG_MIGRATIONS",
    "RESERVATION_TTL_S",
    "Database",
    "migrate_pg",
    "redact_url",
]

log = logging.getLogger("jupyter_byok")

#: a reservation not settled within this long (its process died) no longer counts
RESERVATION_TTL_S = 900

_MONEY = "BIGINT"
_M001 = f"""
CREATE TABLE IF NOT EXISTS attempts (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    ts BIGINT NOT NULL,
    ts_end BIGINT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    key_name TEXT,
    feature TEXT NOT NULL DEFAULT 'api',
    notebook TEXT,
    cell_id TEXT,
    pipeline TEXT,
    node TEXT,
    status TEXT NOT NULL,
    http_status INTEGER,
    error_type TEXT,
    response_id TEXT,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    cached_input_tokens BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    cache_write_1h_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens BIGINT NOT NULL DEFAULT 0,
    search_credits DOUBLE PRECISION NOT NULL DEFAULT 0,
    cost_pico {_MONEY},
    cost_source TEXT NOT NULL DEFAULT 'unknown',
    price_version TEXT NOT NULL DEFAULT '',
    latency_s DOUBLE PRECISION,
    ttft_s DOUBLE PRECISION,
    stream SMALLINT NOT NULL DEFAULT 0,
    cache_hit SMALLINT NOT NULL DEFAULT 0,
    saved_pico {_MONEY}
);
CREATE INDEX IF NOT EXISTS attempts_ts ON attempts (ts);
CREATE INDEX IF NOT EXISTS attempts_request ON attempts (request_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('ledger_uuid', md5(random()::text || clock_timestamp()::text))
    ON CONFLICT DO NOTHING;
"""

_DAY_US = 86_400 * 1_000_000
#: the start of a budget's period holding the row time ``ts`` (UTC), as microseconds
PERIOD_START = (
    "CASE {period} WHEN 'day' THEN ({ts} / {day}) * {day} ELSE (extract(epoch FROM "
    "date_trunc('month', to_timestamp({ts} / 1e6) AT TIME ZONE 'UTC')) * 1000000)::bigint END"
)
#: a budget ``b`` applies to a row ``r``
APPLIES = (
    "(b.scope = 'total' OR (b.scope = 'user' AND b.target = {user}) OR "
    "(b.scope = 'team' AND b.target = {team}) OR "
    "(b.scope = 'key' AND b.target = {provider} || '@' || coalesce({key}, 'default')))"
)

_M006 = f"""
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS user_name TEXT;
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS team TEXT;
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS server TEXT;
CREATE INDEX IF NOT EXISTS attempts_user_ts ON attempts (user_name, ts) INCLUDE (cost_pico);
CREATE INDEX IF NOT EXISTS attempts_team_ts ON attempts (team, ts) INCLUDE (cost_pico);
CREATE TABLE IF NOT EXISTS budgets (
    name TEXT PRIMARY KEY,
    period TEXT NOT NULL CHECK (period IN ('day', 'month')),
    scope TEXT NOT NULL CHECK (scope IN ('total', 'user', 'team', 'key')),
    target TEXT,
    limit_pico BIGINT NOT NULL CHECK (limit_pico >= 0),
    warn_at DOUBLE PRECISION NOT NULL DEFAULT 0.8,
    offline TEXT NOT NULL DEFAULT 'block' CHECK (offline IN ('block', 'allow'))
);
CREATE TABLE IF NOT EXISTS budget_spent (
    budget TEXT NOT NULL REFERENCES budgets (name) ON DELETE CASCADE,
    period_start BIGINT NOT NULL,
    spent_pico NUMERIC NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, period_start)
);
CREATE TABLE IF NOT EXISTS reservations (
    request_id TEXT NOT NULL,
    budget TEXT NOT NULL REFERENCES budgets (name) ON DELETE CASCADE,
    amount_pico BIGINT NOT NULL,
    made_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, budget)
);
CREATE INDEX IF NOT EXISTS reservations_budget ON reservations (budget, made_at);
CREATE OR REPLACE FUNCTION byok_count_spend() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public AS $$
BEGIN
    INSERT INTO budget_spent AS s (budget, period_start, spent_pico)
    SELECT b.name, {PERIOD_START.format(period="b.period", ts="r.ts", day=_DAY_US)},
           sum(r.cost_pico)
    FROM new_rows r JOIN budgets b ON {
    APPLIES.format(user="r.user_name", team="r.team", provider="r.provider", key="r.key_name")
}
    WHERE r.cost_pico IS NOT NULL AND r.cost_pico <> 0
    GROUP BY 1, 2
    ON CONFLICT (budget, period_start) DO UPDATE SET spent_pico = s.spent_pico + excluded.spent_pico;
    RETURN NULL;
END $$;
"""
#: the trigger that keeps ``budget_spent``: made with the first budget, dropped with the
#: last (:mod:`jupyter_byok.team_budgets`), so that a ledger without budgets pays nothing
#: for it on every insert
SPEND_TRIGGER = (
    "CREATE TRIGGER attempts_spend AFTER INSERT ON attempts REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION byok_count_spend()"
)
DROP_SPEND_TRIGGER = "DROP TRIGGER IF EXISTS attempts_spend ON attempts"

#: the PostgreSQL body of each migration of :data:`.schema.MIGRATIONS`, by name (``""``:
#: nothing to do on PostgreSQL, with the reason)
PG_MIGRATIONS: dict[str, str] = {
    "m001_attempts": _M001,
    # PostgreSQL sums by day over its indexes and parallel scans: no rollup table
    "m002_daily_rollup": "",
    "m003_blocked_status": "UPDATE attempts SET status = 'blocked' WHERE status = 'budget_blocked'",
    "m004_rollup_folded": "",
    # batch state is each user's own: it stays in the local SQLite file (batch/_store.py)
    "m005_batches": "",
    "m006_who_where": _M006,
}

#: what the role of the single-user servers needs, exactly (docs/jupyterhub.md shows these
#: lines; tests/pg runs the servers' part as a role with these grants and nothing more).
#: The trigger that counts spend runs as its owner (SECURITY DEFINER): servers cannot write
#: ``budget_spent`` or ``budgets``, only read them. ``TEMPORARY``: a replay copies its rows
#: through a temporary table.
APP_GRANTS = (
    "GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {role}",
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT ON _migrations, meta, budgets, budget_spent TO {role}",
    "GRANT SELECT, INSERT ON attempts TO {role}",
    "GRANT SELECT, INSERT, DELETE ON reservations TO {role}",
)

INSERT = (
    f"INSERT INTO attempts ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('%s' for _ in COLUMNS)}) ON CONFLICT (id) DO NOTHING"
)

_LOCK = "SELECT pg_advisory_xact_lock(hashtext('jupyter_byok.migrate'))"


def migrate_pg(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply the migrations this database lacks, in order, each in its own transaction
    (under an advisory lock: many servers start at once). Returns the names applied."""
    names = [fn.__name__ for fn in MIGRATIONS]
    missing = [n for n in names if n not in PG_MIGRATIONS]
    if missing:
        raise LedgerError(
            f"ledger migration {missing[0]} has no PostgreSQL body: add it to "
            "jupyter_byok/ledger/pg.py (PG_MIGRATIONS)"
        )
    with conn.transaction():
        exists = conn.execute("SELECT to_regclass('_migrations') IS NOT NULL").fetchone()
        done: set[str] = set()
        if exists and exists[0]:
            done = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
    if all(n in done for n in names):
        return []
    applied: list[str] = []
    for name in names:
        with conn.transaction():
            conn.execute(_LOCK)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations "
                "(name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION)"
            )
            if conn.execute("SELECT 1 FROM _migrations WHERE name = %s", (name,)).fetchone():
                continue
            body = PG_MIGRATIONS[name]
            if body:
                conn.execute(body)  # several statements, no params
            conn.execute("INSERT INTO _migrations VALUES (%s, %s)", (name, time.time()))
            applied.append(name)
    return applied


# --------------------------------------------------------------------- connecting
_SCHEMES = ("postgresql://", "postgres://")


def check_url(url: str) -> str:
    """A ledger URL must be ``postgresql://``; a clear one-line error otherwise."""
    if not url.startswith(_SCHEMES):
        raise ConfigError(
            f"JUPYTER_BYOK_LEDGER_URL {redact_url(url)!r} is not a PostgreSQL URL: use "
            "postgresql://USER@HOST:PORT/DATABASE (the password from the keystore: "
            "JUPYTER_BYOK_LEDGER_PASSWORD_SECRET=NAME, stored with `jupyter byok keys set "
            "secret --name NAME`)"
        )
    return url


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs, doctor and status)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^@/]*@", "//***@", url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def password_secret() -> Secret | None:
    """The database password: the keystore's generic secret named by
    ``JUPYTER_BYOK_LEDGER_PASSWORD_SECRET`` (``None``: not set, libpq's own ways apply)."""
    name = os.environ.get("JUPYTER_BYOK_LEDGER_PASSWORD_SECRET")
    if not name:
        return None
    from ..keys import named_secret

    secret, why = named_secret(name)
    if why is not None:
        raise ConfigError(f"cannot read the database password secret@{name}: {why}")
    if secret is None:
        raise ConfigError(
            f"JUPYTER_BYOK_LEDGER_PASSWORD_SECRET names secret@{name}, which is not in the "
            f"keystore: store it with `jupyter byok keys set secret --name {name}`"
        )
    return secret


class Database:
    """One PostgreSQL ledger database: a pool of connections (psycopg_pool) made in this
    process on first use, made again after ``fork()``."""

    def __init__(self, url: str, *, connect_timeout: float = 3.0, max_size: int = 8) -> None:
        self.url = check_url(url)
        self.connect_timeout = connect_timeout
        self.max_size = max_size
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._pid = -1
        self._migrated = False

    def _kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(self.connect_timeout)),
            "application_name": "jupyter_byok",
        }
        secret = password_secret()
        if secret is not None:
            kwargs["password"] = secret.reveal()
        return kwargs

    def connect(self) -> psycopg.Connection[Any]:
        """A new connection of its own (the caller closes it)."""
        import psycopg

        try:
            conn = psycopg.connect(self.url, **self._kwargs())
        except psycopg.Error as exc:
            raise _unreachable(self.url, exc) from exc
        if not self._migrated:
            migrate_pg(conn)
            self._migrated = True
        return conn

    def pool(self) -> psycopg_pool.ConnectionPool[Any]:
        if self._pool is not None and self._pid == os.getpid():
            return self._pool
        from psycopg_pool import ConnectionPool

        # the schema first, on a connection of its own (an error here is a clear one)
        self.connect().close()
        self._pool = ConnectionPool(
            self.url,
            kwargs=self._kwargs(),
            min_size=1,
            max_size=self.max_size,
            timeout=self.connect_timeout,
            open=True,
            name="jupyter_byok-ledger",
        )
        self._pid = os.getpid()
        return self._pool

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit), errors translated to :class:`LedgerError`."""
        import psycopg
        import psycopg_pool

        try:
            with self.pool().connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise _unreachable(self.url, exc) from exc
        except psycopg.Error as exc:
            raise LedgerError(
                f"the shared ledger {redact_url(self.url)} failed ({_reason(exc)})"
            ) from exc

    @contextlib.contextmanager
    def session(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of its own, closed after (one command, no pool)."""
        import psycopg

        conn = self.connect()
        try:
            yield conn
        except psycopg.OperationalError as exc:
            raise _unreachable(self.url, exc) from exc
        except psycopg.Error as exc:
            raise LedgerError(
                f"the shared ledger {redact_url(self.url)} failed ({_reason(exc)})"
            ) from exc
        finally:
            conn.close()

    def reset(self) -> None:
        """Start a new pool (the server came back: the old pool's connections are broken,
        and it would wait out its reconnection back-off before making new ones)."""
        pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):
                pool.close(timeout=0.5)

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.close()
        self._pool = None


class Unreachable(LedgerError):
    """The shared ledger's database cannot be reached (down, network, refused login)."""


def _reason(exc: BaseException) -> str:
    """The driver's message on one line, any known secret (the password) masked."""
    from ..redact import redact

    return redact(" ".join(str(exc).split())) or type(exc).__name__


def _unreachable(url: str, exc: BaseException) -> Unreachable:
    return Unreachable(f"the shared ledger {redact_url(url)} is unreachable ({_reason(exc)})")


def conninfo_with_password(url: str) -> str:
    """``url`` with the keystore's password in it (for the ADBC driver; kept in memory)."""
    secret = password_secret()
    if secret is None:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{quote(parts.username or '', safe='')}:{quote(secret.reveal(), safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
