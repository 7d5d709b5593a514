"""The ledger on PostgreSQL: one schema for both backends, many processes as many users and
teams, budgets across servers, an outage with replay, and moving history.

Every test runs against a real throwaway cluster (``tests/pgcluster.py``); a machine
without PostgreSQL fails them. Provider calls go to the loopback fake providers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from jupyter_byok.errors import ConfigError, LedgerError
from jupyter_byok.ledger import Ledger, LedgerRow, default_ledger, migrate
from jupyter_byok.ledger.pg import PG_MIGRATIONS, redact_url
from jupyter_byok.ledger.schema import COLUMNS, MIGRATIONS
from jupyter_byok.ledger.shared import SharedLedger, copy_ledger
from jupyter_byok.testing import FakeProviders
from jupyter_byok.testing.postgres import PgCluster

KEY = "sk-proj-" + "Q" * 60

#: one worker: N calls as this process's user and team; prints one JSON line per call
WORKER = """
import json, sys, time
import jupyter_byok
from jupyter_byok.errors import BudgetExceededError
n, pause = int(sys.argv[1]), float(sys.argv[2])
model = sys.argv[3]
for i in range(n):
    try:
        c = jupyter_byok.complete(model, f"call {i}", feature="load", max_tokens=200)
    except BudgetExceededError as exc:
        print(json.dumps({"blocked": str(exc)}), flush=True)
    else:
        print(json.dumps({"id": c.ledger_id, "cost": str(c.cost_usd),
                          "warnings": c.warnings}), flush=True)
    if pause:
        time.sleep(pause)
"""


def _workers(
    fake: FakeProviders,
    url: str,
    people: list[tuple[str, str]],
    calls: int,
    *,
    pause: float = 0.0,
    model: str = "openai:gpt-4o-mini",
    env: dict[str, str] | None = None,
) -> list[subprocess.Popen[str]]:
    base = {**os.environ, **fake.env(), "OPENAI_API_KEY": KEY, "JUPYTER_BYOK_LEDGER_URL": url}
    base.update(env or {})
    return [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(calls), str(pause), model],
            env={**base, "JUPYTERHUB_USER": user, "JUPYTER_BYOK_TEAM": team},
            stdout=subprocess.PIPE,
            text=True,
        )
        for user, team in people
    ]


def _results(procs: list[subprocess.Popen[str]], timeout: float = 240) -> list[list[dict]]:
    outs = []
    for p in procs:
        stdout, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0
        outs.append([json.loads(line) for line in stdout.splitlines()])
    return outs


class _Lines:
    """Each worker's output lines as they come (a reader thread per worker)."""

    def __init__(self, procs: list[subprocess.Popen[str]]) -> None:
        self.procs = procs
        self.lines: list[list[str]] = [[] for _ in procs]
        self.threads = [
            threading.Thread(target=self._read, args=(p, out), daemon=True)
            for p, out in zip(procs, self.lines, strict=True)
        ]
        for t in self.threads:
            t.start()

    @staticmethod
    def _read(proc: subprocess.Popen[str], out: list[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)

    def wait_for(self, counts: list[int], timeout: float = 120) -> None:
        """Until worker i has printed more than counts[i] lines (or has ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(
                len(out) > n or p.poll() is not None
                for out, n, p in zip(self.lines, counts, self.procs, strict=True)
            ):
                return
            time.sleep(0.05)
        raise TimeoutError("the workers made no progress")

    def results(self, timeout: float = 240) -> list[list[dict]]:
        for p, t in zip(self.procs, self.threads, strict=True):
            assert p.wait(timeout=timeout) == 0
            t.join(timeout)
        return [[json.loads(line) for line in out] for out in self.lines]


def _sent() -> None:
    """Rows this process spooled are copied into PostgreSQL shortly after each call; a
    test reading the database behind the ledger's back sends them first."""
    from jupyter_byok.ledger import shared

    for led in list(shared._open):
        led.flush()


def _pg(url: str, sql: str, *params: object) -> list[tuple]:
    """Read the database directly (as another server would), after this process's rows
    are in it."""
    _sent()
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, params).fetchall())  # type: ignore[arg-type]


def _everything(url: str) -> str:
    """Every value of every table of the database, as text (the canary key's search)."""
    _sent()
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        names = [r[0] for r in tables.fetchall()]
        return "\n".join(
            r[0]
            for t in names
            for r in conn.execute(f'SELECT row_to_json(x)::text FROM "{t}" x').fetchall()  # type: ignore[arg-type]
        )


PEOPLE = [("ana", "red"), ("ben", "red"), ("cai", "blue"), ("dee", "blue")] * 2


# --------------------------------------------------------------------------- schema
def test_one_schema_for_both_backends(pg_url: str, tmp_path: Path) -> None:
    assert list(PG_MIGRATIONS) == [fn.__name__ for fn in MIGRATIONS]
    SharedLedger(pg_url).check_writable()
    pg_cols = [
        r[0]
        for r in _pg(
            pg_url,
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'attempts' ORDER BY ordinal_position",
        )
    ]
    db = sqlite3.connect(tmp_path / "l.sqlite3", isolation_level=None)
    migrate(db)
    lite_cols = [r[1] for r in db.execute("PRAGMA table_info(attempts)") if r[1] != "rowid"]
    assert pg_cols == lite_cols == list(COLUMNS)
    applied = [r[0] for r in _pg(pg_url, "SELECT name FROM _migrations ORDER BY applied_at")]
    assert applied == list(PG_MIGRATIONS)


def test_rows_are_sent_behind_the_call_and_pruned_from_the_spool(
    pg_url: str, byok_home: Path
) -> None:
    """A call's row is committed in the local spool before the call returns; the sender
    copies it into PostgreSQL by itself (nobody reads here), and the spool keeps only the
    newest row once everything is sent, so later rows still number past the watermark."""
    led = SharedLedger(pg_url)
    assert led.check_writable() is None
    spool = byok_home / "spool.sqlite3"
    sent: list[str] = []
    for round_ in range(3):
        ids = led.record_many([LedgerRow("openai", "gpt-4o", "ok") for _ in range(4)])
        with sqlite3.connect(spool) as db:  # in the spool at once
            marks = ",".join("?" * len(ids))
            found = db.execute(f"SELECT count(*) FROM attempts WHERE id IN ({marks})", ids)
            assert found.fetchone() == (4,)
        sent += ids
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with psycopg.connect(pg_url, autocommit=True) as conn:  # not through the ledger
                there = {r[0] for r in conn.execute("SELECT id FROM attempts").fetchall()}
            with sqlite3.connect(spool) as db:  # pruned once the watermark has passed
                kept = db.execute("SELECT id FROM attempts").fetchall()
            if there == set(sent) and kept == [(ids[-1],)]:
                break
            time.sleep(0.02)
        assert there == set(sent), f"round {round_}: the sender did not copy the rows"
        assert kept == [(ids[-1],)]
    assert led.health()["spooled"] == 0 and led.health()["spooled_by_this_process"] == 0


def test_rows_spooled_during_an_outage_reach_the_database_without_another_call(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    led = SharedLedger(pg_url)
    led.check_every_s = 0.2
    assert led.check_writable() is None
    pg_cluster.stop("immediate")
    try:
        row_id = led.record(LedgerRow("openai", "gpt-4o", "ok"))  # the call returns at once
        deadline = time.monotonic() + 30
        while led.unreachable is None and time.monotonic() < deadline:
            time.sleep(0.02)  # the sender finds the database down
        assert led.unreachable is not None
    finally:
        pg_cluster.pg_ctl_start()
    deadline = time.monotonic() + 30  # nobody calls or reads: the sender retries by itself
    found: list[tuple] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.OperationalError):
            with psycopg.connect(pg_url, autocommit=True) as conn:
                found = conn.execute("SELECT id FROM attempts").fetchall()
            if found == [(row_id,)]:
                break
        time.sleep(0.05)
    assert found == [(row_id,)]
    assert led.unreachable is None and led.health()["spooled_by_this_process"] == 0


def test_a_spooled_row_goes_to_one_database_only(pg_cluster: PgCluster, pg_url: str) -> None:
    """Pointing the ledger at another database sends it nothing sent to the first (the
    spool keeps its newest row after a send; it must not reach the second)."""
    first = SharedLedger(pg_url)
    assert first.check_writable() is None
    first.record_many([LedgerRow("openai", "gpt-4o", "ok") for _ in range(3)])
    first.close()
    other = pg_cluster.create_database()
    second = SharedLedger(other)
    assert second.check_writable() is None  # the first check replays the spool
    assert second.count() == 0 and second.spooled() == 0
    row_id = second.record(LedgerRow("openai", "gpt-4o", "ok"))
    assert _pg(other, "SELECT id FROM attempts") == [(row_id,)]
    assert _pg(pg_url, "SELECT count(*) FROM attempts") == [(3,)]


def test_rows_read_back_the_same_from_both_backends(pg_url: str, tmp_path: Path) -> None:
    rows = [
        LedgerRow(
            "openai",
            "gpt-4o",
            "ok",
            cost_usd=Decimal("0.000123456789"),
            notebook="a.ipynb",
            input_tokens=10,
            output_tokens=5,
            ts_end=1_780_000_000.0 + i,
            latency_s=0.5,
        )
        for i in range(5)
    ] + [LedgerRow("anthropic", "claude", "error", http_status=500, ts_end=1_780_000_100.0)]
    shared, local = SharedLedger(pg_url), Ledger(tmp_path / "l.sqlite3")
    shared.record_many(rows)
    local.record_many(rows)
    assert shared.spend(scope="all") == local.spend() == Decimal("0.000617283945")
    by = ["provider", "user_name", "notebook"]
    for bucket in (None, "hour", "day", "week", "month"):
        assert shared.summary(by, bucket=bucket) == local.summary(by, bucket=bucket)
        assert shared.summary([], bucket=bucket) == local.summary([], bucket=bucket)
    assert shared.summary(["model"], since="2020-01-01", until="2020-01-02") == []
    assert shared.recent(10) == local.recent(10)
    a, b = shared.frame(), local.frame()
    pd.testing.assert_frame_equal(a, b, check_dtype=False, check_categorical=False)


def test_rows_carry_user_team_server_and_notebook(
    pg_url: str, fake_providers: FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jupyter_byok

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("JUPYTERHUB_USER", "zoe")
    monkeypatch.setenv("JUPYTER_BYOK_TEAM", "green")
    monkeypatch.setenv("JUPYTER_BYOK_SERVER_NAME", "node-7")
    monkeypatch.setenv("JPY_SESSION_NAME", "work/x.ipynb")
    for var, value in fake_providers.env().items():
        monkeypatch.setenv(var, value)
    c = jupyter_byok.complete("openai:gpt-4o-mini", "hi")
    [(user, team, server, notebook, cost)] = _pg(
        pg_url,
        "SELECT user_name, team, server, notebook, cost_pico FROM attempts WHERE id = %s",
        c.ledger_id,
    )
    assert (user, team, server, notebook) == ("zoe", "green", "node-7", "work/x.ipynb")
    assert Decimal(cost) / 10**12 == c.cost_usd
    assert isinstance(default_ledger(), SharedLedger)
    assert jupyter_byok.usage(scope="me")["id"].tolist() == [c.ledger_id]
    assert len(jupyter_byok.usage(scope="team")) == 1
    other = LedgerRow("openai", "gpt-4o", "ok", cost_usd=Decimal(2), user_name="yan", team="green")
    default_ledger().record(other)
    assert len(jupyter_byok.usage(scope="team")) == 2 and len(jupyter_byok.usage()) == 1
    from jupyter_byok.commands.usage import usage_summary

    assert usage_summary(["user_name"], scope="team")["total_usd"] == c.cost_usd + 2
    assert usage_summary(["user_name"])["total_usd"] == c.cost_usd
    # %byok usage --scope team: one line per user of the team
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_byok")
    with capture_output() as cap:
        ip.run_line_magic("byok", "usage --since 1d --by user_name --scope team --no-chart")
    table = cap.outputs[0].data["text/plain"]
    assert "zoe" in table and "yan" in table


def test_the_password_comes_from_the_keystore_and_never_shows(
    pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_byok.keys import Keystore

    url = pg_cluster.create_database()
    db = url.rsplit("/", 1)[1]
    SharedLedger(url).check_writable()  # the admin makes the schema
    password = "pw-" + "Z" * 30
    role_url = pg_cluster.add_role(f"app_{db}", password, db)  # the documented grants only
    monkeypatch.setenv("JUPYTER_BYOK_LEDGER_URL", role_url)
    monkeypatch.setenv("JUPYTER_BYOK_LEDGER_PASSWORD_SECRET", "ledgerdb")
    led = SharedLedger(role_url)
    # without the secret stored: a clear one-line error that says what to do
    with pytest.raises(ConfigError, match="jupyter byok keys set secret --name ledgerdb"):
        led.db.connect()
    Keystore().set("secret", password, "ledgerdb")
    # everything a single-user server does, as the role with the documented grants only:
    # reserve against a budget, settle it with the call's row, read, replay the spool
    from jupyter_byok.ledger.who import who
    from jupyter_byok.team_budgets import reserve

    _set_budget(url, "month", "10", "--user", who()[0])
    led = SharedLedger(role_url)
    assert reserve(led, "req-1", "openai", None, Decimal("0.5")).allowed
    led.record(LedgerRow("openai", "gpt-4o", "ok", request_id="req-1", cost_usd=Decimal("0.25")))
    assert _pg(url, "SELECT count(*) FROM reservations") == [(0,)]
    assert _pg(url, "SELECT spent_pico FROM budget_spent") == [(Decimal("0.25") * 10**12,)]
    led.spool.record(LedgerRow("openai", "gpt-4o", "ok", cost_usd=Decimal("0.5")))
    assert led.check_writable() is None and led.spooled() == 0
    assert led.count() == 2 and led.spend() == Decimal("0.75")
    # limits are the admin's
    with pytest.raises(LedgerError, match="permission denied"), led.db.session() as conn:
        conn.execute("UPDATE budgets SET limit_pico = 0")
    health = json.dumps(led.health())
    assert password not in health
    with_password = role_url.replace("@", f":{password}@", 1)
    assert password not in redact_url(with_password)
    assert led.frame()["cost_usd"].sum() == 0.75  # the Arrow driver, with the password
    # a wrong password is refused by the server (it is really checked), and never shown
    wrong = "wrong-" + "W" * 20
    Keystore().set("secret", wrong, "ledgerdb")
    with pytest.raises(LedgerError, match="password authentication failed") as refused:
        SharedLedger(role_url).db.connect()
    with pytest.raises(LedgerError, match="cannot read the shared ledger") as unread:
        SharedLedger(role_url).frame()
    for exc in (refused.value, unread.value):
        assert wrong not in str(exc) and password not in str(exc) and "\n" not in str(exc)


# ----------------------------------------------------------------- many processes
def test_8_processes_as_4_users_in_2_teams_x_500_calls(
    pg_url: str, fake_providers: FakeProviders
) -> None:
    calls = 500
    results = _results(_workers(fake_providers, pg_url, PEOPLE, calls))
    ids = [r["id"] for out in results for r in out]
    assert len(ids) == len(set(ids)) == 8 * calls
    rows = _pg(pg_url, "SELECT id, user_name, team, cost_pico FROM attempts")
    assert len(rows) == 8 * calls and {r[0] for r in rows} == set(ids)
    want_user: dict[str, Decimal] = defaultdict(Decimal)
    want_team: dict[str, Decimal] = defaultdict(Decimal)
    for (user, team), out in zip(PEOPLE, results, strict=True):
        for r in out:
            want_user[user] += Decimal(r["cost"])
            want_team[team] += Decimal(r["cost"])
    got_user = dict(_pg(pg_url, "SELECT user_name, sum(cost_pico) FROM attempts GROUP BY 1"))
    got_team = dict(_pg(pg_url, "SELECT team, sum(cost_pico) FROM attempts GROUP BY 1"))
    assert {u: Decimal(v) / 10**12 for u, v in got_user.items()} == want_user
    assert {t: Decimal(v) / 10**12 for t, v in got_team.items()} == want_team
    assert all(v > 0 for v in want_user.values())
    assert len(fake_providers.requests_for("openai")) == 8 * calls
    assert _pg(pg_url, "SELECT count(*) FROM reservations") == [(0,)]
    dump = _everything(pg_url)
    assert "cai" in dump and KEY not in dump and KEY[8:30] not in dump


def _set_budget(url: str, *args: str) -> None:
    from jupyter_byok.cli import main

    assert main(["ledger", "budgets", "set", *args, "--to", url]) == 0


def test_a_team_budget_holds_across_8_processes(pg_url: str, fake_providers: FakeProviders) -> None:
    from jupyter_byok.engine import estimate_call
    from jupyter_byok.models import parse_model
    from jupyter_byok.types import Message

    _set_budget(pg_url, "day", "0.05", "--team", "red")
    fake_providers.set_usage("openai", reasoning=150)  # about $0.0016 a call, ~30 calls
    model = "openai:gpt-4o"
    people = [(f"u{i}", "red") for i in range(8)]
    results = _results(_workers(fake_providers, pg_url, people, 40, model=model))
    estimate = estimate_call(parse_model(model), [Message("user", "call 39")], 200).cost_usd
    assert estimate is not None
    ok = [r for out in results for r in out if "id" in r]
    blocked = [r for out in results for r in out if "blocked" in r]
    assert ok and blocked and "budget day:team:red" in blocked[0]["blocked"]
    [(spent,)] = _pg(pg_url, "SELECT sum(cost_pico) FROM attempts")
    spent_usd = Decimal(spent) / 10**12
    # at most the largest estimate in flight per process past the limit (here: none at all)
    assert spent_usd <= Decimal("0.05") + 8 * estimate
    assert spent_usd <= Decimal("0.05")
    assert spent_usd == sum(Decimal(r["cost"]) for r in ok)
    # every blocked call sent nothing: one request per answered call, one row per block
    assert len(fake_providers.requests_for("openai")) == len(ok)
    statuses = Counter(s for (s,) in _pg(pg_url, "SELECT status FROM attempts"))
    assert statuses == {"ok": len(ok), "blocked": len(blocked)}
    [(counted,)] = _pg(pg_url, "SELECT spent_pico FROM budget_spent")
    assert counted == spent
    assert _pg(pg_url, "SELECT count(*) FROM reservations") == [(0,)]
    # the spend trigger lives as long as some budget does
    trigger = "SELECT count(*) FROM pg_trigger WHERE tgname = 'attempts_spend'"
    assert _pg(pg_url, trigger) == [(1,)]
    from jupyter_byok.cli import main

    assert main(["ledger", "budgets", "remove", "day:team:red", "--to", pg_url]) == 0
    assert _pg(pg_url, trigger) == [(0,)]


# ------------------------------------------------------------------------- outage
def test_an_outage_spools_and_replays_every_call_once(
    pg_cluster: PgCluster, pg_url: str, fake_providers: FakeProviders, byok_home: Path
) -> None:
    # ana's budget blocks calls while the database is down, ben's allows them
    _set_budget(pg_url, "day", "100", "--user", "ana", "--offline", "block")
    _set_budget(pg_url, "day", "100", "--user", "ben", "--offline", "allow")
    people = [("ana", "red"), ("ben", "red"), ("cai", "blue"), ("dee", "blue")]
    lines = _Lines(_workers(fake_providers, pg_url, people, 300, pause=0.02))
    lines.wait_for([20] * len(people))  # every worker is well into its run
    pg_cluster.stop("immediate")
    stopped = time.monotonic()
    # 5 s later; on a very busy machine, once every worker has also made calls meanwhile
    lines.wait_for([len(out) + 3 for out in lines.lines])
    time.sleep(max(0.0, 5 - (time.monotonic() - stopped)))
    pg_cluster.pg_ctl_start()
    results = lines.results()
    SharedLedger(pg_url).check_writable()  # whatever a worker left in the spool
    ids = [r["id"] for out in results for r in out if "id" in r]
    rows = _pg(pg_url, "SELECT id, status, user_name FROM attempts")
    assert len(rows) == len({r[0] for r in rows})
    assert set(ids) <= {r[0] for r in rows}
    assert len(rows) == sum(len(out) for out in results)  # every call, blocked ones too
    spool = Ledger(byok_home / "spool.sqlite3")
    spooled = spool.count()
    for path in byok_home.glob("spool.sqlite3*"):  # the spool, its WAL: never the key
        assert KEY.encode() not in path.read_bytes()
    assert KEY not in _everything(pg_url)
    assert spooled > 0  # the outage was really in the middle of the run
    offline = [r for r in results[0] if "blocked" in r]
    assert offline and all("cannot be reached" in r["blocked"] for r in offline)
    assert not any("blocked" in r for out in results[1:] for r in out)
    assert any("not checked" in w for r in results[1] if "id" in r for w in r["warnings"])
    assert len(fake_providers.requests_for("openai")) == len(ids)
    # a second replay adds nothing
    assert copy_ledger(spool, SharedLedger(pg_url).db) == 0


def test_a_server_that_starts_during_an_outage_knows_the_budgets(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    from jupyter_byok.ledger.who import who
    from jupyter_byok.team_budgets import reserve

    _set_budget(pg_url, "day", "100", "--user", who()[0])
    assert [b.name for b in SharedLedger(pg_url).shared_budgets()] == [f"day:user:{who()[0]}"]
    pg_cluster.stop("immediate")
    try:
        decision = reserve(SharedLedger(pg_url), "r1", "openai", None, Decimal("0.01"))
    finally:
        pg_cluster.pg_ctl_start()
    assert not decision.allowed and "cannot be reached" in decision.message


# ---------------------------------------------------------------------- migration
def test_migrating_100000_rows_twice_with_an_interruption(pg_url: str, tmp_path: Path) -> None:
    src = tmp_path / "old.sqlite3"
    local = Ledger(src)
    local.record(LedgerRow("openai", "gpt-4o", "ok", cost_usd=Decimal("0.0001")))
    with local.connection() as conn:  # 99,999 more rows, made by SQLite itself
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 99999) "
            "INSERT INTO attempts (id, request_id, ts, ts_end, provider, model, status, "
            "cost_pico, user_name) SELECT printf('%032x', i), printf('r%d', i), "
            "1770000000000000 + i * 1000000, 1770000000000000 + i * 1000000, 'openai', "
            "'gpt-4o', 'ok', 100000000, CASE WHEN i % 2 = 0 THEN 'ana' END FROM n"
        )
    assert local.count() == 100_000
    local.close()
    cmd = [sys.executable, "-m", "jupyter_byok.cli", "ledger", "migrate", "--to", pg_url,
           "--source", str(src), "--batch", "2000", "-v"]  # fmt: skip
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            table = conn.execute("SELECT to_regclass('attempts')").fetchone()
            n = conn.execute("SELECT count(*) FROM attempts").fetchone() if table[0] else (0,)
            if n[0] >= 4000:
                break
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    [(partial,)] = _pg(pg_url, "SELECT count(*) FROM attempts")
    assert 0 < partial < 100_000
    for _ in range(2):
        cmd[cmd.index("--batch") + 1] = "20000"
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert _pg(pg_url, "SELECT count(*), count(DISTINCT id) FROM attempts") == [
            (100_000, 100_000)
        ]
    assert "copied 0 new row(s) of 100,000" in out.stdout
    [(cost,)] = _pg(pg_url, "SELECT sum(cost_pico) FROM attempts")
    assert cost == 100_000 * 100_000_000
    # rows from before rows carried a user are the migrating user's
    from jupyter_byok.ledger.who import who

    users = _pg(pg_url, "SELECT user_name, count(*) FROM attempts GROUP BY 1 ORDER BY 1")
    assert dict(users) == {"ana": 49_999, who()[0]: 50_001}


def test_a_local_ledger_has_only_my_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    import jupyter_byok

    monkeypatch.delenv("JUPYTER_BYOK_LEDGER_URL", raising=False)
    default_ledger().record(LedgerRow("openai", "gpt-4o", "ok"))
    assert len(jupyter_byok.usage(scope="me")) == len(jupyter_byok.usage()) == 1
    with pytest.raises(ConfigError, match="needs a shared ledger: set JUPYTER_BYOK_LEDGER_URL"):
        jupyter_byok.usage(scope="team")


def test_a_bad_url_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from jupyter_byok.cli import main

    with pytest.raises(ConfigError, match="not a PostgreSQL URL") as info:
        SharedLedger("mysql://x:hunter2secret@h/db")
    assert "hunter2secret" not in str(info.value)
    monkeypatch.setenv("JUPYTER_BYOK_LEDGER_URL", "mysql://x:hunter2secret@h/db")
    assert main(["ledger", "status"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "postgresql://" in err and "hunter2secret" not in err


def test_the_docs_list_the_exact_grants() -> None:
    from jupyter_byok.ledger.pg import APP_GRANTS

    docs = (Path(__file__).parents[2] / "docs" / "jupyterhub.md").read_text(encoding="utf-8")
    block = docs.split("grant the app role exactly this", 1)[1].split("```sql", 1)[1]
    lines = [line for line in block.split("```", 1)[0].splitlines() if line.strip()]
    assert lines == [g.format(database="byok", role="byok_app") + ";" for g in APP_GRANTS]


def test_doctor_shows_the_backend_spooled_rows_and_the_last_error(
    pg_cluster: PgCluster,
    pg_url: str,
    fake_providers: FakeProviders,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import jupyter_byok
    from jupyter_byok.budgets import set_budget
    from jupyter_byok.commands.doctor import doctor, render_text

    led = default_ledger()
    assert isinstance(led, SharedLedger)
    led.record(LedgerRow("openai", "gpt-4o", "ok"))
    led.flush()
    text = render_text(doctor())
    assert "shared usage ledger" in text and f"postgresql at {pg_url}" in text
    assert "reachable              yes" in text and "spooled rows           0" in text
    pg_cluster.stop("immediate")
    try:
        led.record(LedgerRow("openai", "gpt-4o", "ok"))  # spooled
        report = doctor()
        # a personal budget cannot be counted while the database is down: refused, unsent
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        set_budget("day", "100")
        with pytest.raises(LedgerError, match="is unreachable") as refused:
            jupyter_byok.complete("openai:gpt-4o-mini", "hi")
        assert "\n" not in str(refused.value)
        assert fake_providers.requests_for("openai") == []
    finally:
        pg_cluster.pg_ctl_start()
    text = render_text(report)
    assert "reachable              NO: " in text and "Connection refused" in text
    assert report["shared_ledger"]["health"]["spooled_by_this_process"] == 1
    text = render_text(doctor())  # back: the check replays the spool
    assert "spooled rows           0" in text and "last error             " in text
    assert led.count() == 2  # the refused call wrote no row anywhere


# --------------------------------------------------------------------- batch mode
def test_batch_mode_on_a_shared_ledger_keeps_its_state_locally(
    pg_url: str, fake_providers: FakeProviders, byok_home: Path
) -> None:
    """Batch items are ledger rows in PostgreSQL; the batches themselves (what a map
    attaches to after a kernel restart) are this user's own and stay in the local file."""
    from jupyter_byok import engine as engine_module
    from jupyter_byok._runner import run_sync
    from jupyter_byok.keys import Keystore
    from jupyter_byok.pipeline import Pipeline

    Keystore().set("openai", KEY)
    p = Pipeline("tickets")
    p.llm("summary", "openai:gpt-4o-mini", "Summarize: {input.text}", max_tokens=32)
    df = pd.DataFrame({"text": [f"ticket {i}" for i in range(50)]})
    try:
        out = p.map(df, mode="batch", poll_s=0.02)
        again = p.map(df, mode="batch", poll_s=0.02)  # attaches: nothing new is uploaded
    finally:
        engine = engine_module._engine
        if engine is not None:
            run_sync(engine.aclose())
        engine_module._engine = None
    assert out["error"].isna().all() and out.loc[3, "summary"] == "Echo: Summarize: ticket 3"
    assert list(again["summary"]) == list(out["summary"])
    uploads = [r for r in fake_providers.requests if r.path.endswith("/files")]
    assert len(uploads) == 1
    rows = _pg(pg_url, "SELECT feature, count(*), sum(cost_pico) FROM attempts GROUP BY 1")
    assert [(f, n) for f, n, _ in rows] == [("batch", 50)]
    assert Decimal(rows[0][2]) / 10**12 == pytest.approx(Decimal(str(out["cost_usd"].sum())))
    tables = {r[0] for r in _pg(pg_url, "SELECT tablename FROM pg_tables")}
    assert "batches" not in tables and "batch_items" not in tables
    with sqlite3.connect(byok_home / "spool.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM batch_items").fetchone() == (50,)
        # the rows passed through the spool: once sent, only the newest is kept (it holds
        # the place of the next row's number)
        assert db.execute("SELECT count(*) FROM attempts").fetchone() == (1,)
    assert KEY not in _everything(pg_url)
