"""The usage ledger: durable under concurrent and killed writers, exact money, fast reads."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import sys
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from jupyter_byok import ledger as ledger_mod
from jupyter_byok.errors import ConfigError, LedgerError
from jupyter_byok.ledger import Ledger, LedgerRow, export, ledger_path, migrate, parse_time, usage
from jupyter_byok.ledger.frame import REFRESH_ROWS, snapshot_path


def row(**kw: object) -> LedgerRow:
    base: dict[str, object] = {"provider": "openai", "model": "gpt-4o-mini", "status": "ok"}
    base.update(kw)
    return LedgerRow(**base)  # type: ignore[arg-type]


def _child(fn: object) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            fn()  # type: ignore[operator]
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def test_columns_and_exact_money(byok_home: Path) -> None:
    led = Ledger()
    assert led.path == byok_home / "ledger.sqlite3"
    rid = led.record(
        row(request_id="r1", attempt=2, cost_usd=Decimal("0.0037756"), cost_source="provider",
            input_tokens=1000, cached_input_tokens=200, output_tokens=500, reasoning_tokens=400,
            latency_s=1.5, ttft_s=0.2, stream=True, feature="magic", notebook="a.ipynb",
            cell_id="c1", key_name="work", http_status=200, price_version="2026-11-27")
    )  # fmt: skip
    led.record(
        row(status="cache_hit", cache_hit=True, cost_usd=Decimal(0), saved_usd=Decimal("0.01"))
    )
    led.record(row(provider="xai", model="unpriced", cost_usd=None))
    assert led.spend() == Decimal("0.0037756")
    assert led.spend(provider="xai") == 0
    df = usage()
    must = {"ts", "provider", "model", "feature", "status", "input_tokens", "cached_input_tokens",
            "output_tokens", "reasoning_tokens", "cost_usd", "cost_source", "latency_s",
            "request_id", "id", "attempt", "ts_end", "saved_usd", "cache_hit", "stream"}  # fmt: skip
    assert must <= set(df.columns)
    first = df[df["id"] == rid].iloc[0]
    assert first["request_id"] == "r1" and first["attempt"] == 2
    assert first["cost_usd"] == pytest.approx(0.0037756, abs=1e-12)
    assert first["ts"] <= first["ts_end"]
    assert df["cost_usd"].isna().sum() == 1  # unknown stays unknown, never 0
    assert df["saved_usd"].sum() == pytest.approx(0.01)
    assert "prompt" not in " ".join(df.columns)
    with pytest.raises(LedgerError):
        led.record(row(status="weird"))
    # an id recorded twice (a replay after a crash) counts once
    led.record(row(id=rid))
    assert led.count() == 3


def test_migrations_ordered_and_idempotent(tmp_path: Path) -> None:
    names = [m.__name__ for m in ledger_mod.MIGRATIONS]
    assert names == sorted(names) and names[0].startswith("m001_")
    path = tmp_path / "l.db"
    led = Ledger(path)
    led.record(row(cost_usd=Decimal("1")))
    led.close()
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn) == []  # everything already applied
    assert migrate(conn) == []
    got = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert got == names
    # re-running the rollup backfill recomputes, never doubles
    conn.execute("DELETE FROM _migrations WHERE name = 'm002_daily_rollup'")
    assert migrate(conn) == ["m002_daily_rollup"]
    assert conn.execute("SELECT sum(n), sum(cost_pico) FROM rollup").fetchone() == (1, 10**12)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert Ledger(path).spend() == 1


def test_old_budget_block_rows_are_renamed_blocked(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    led = Ledger(path)
    led.record(row(status="blocked", cost_usd=Decimal(0)))
    led.fold()
    led.close()
    conn = sqlite3.connect(path, isolation_level=None)
    # what a ledger written before 0.1.0 holds
    conn.execute("UPDATE attempts SET status = 'budget_blocked'")
    conn.execute("UPDATE rollup SET status = 'budget_blocked'")
    conn.execute("DELETE FROM _migrations WHERE name = 'm003_blocked_status'")
    assert migrate(conn) == ["m003_blocked_status"]
    assert conn.execute("SELECT DISTINCT status FROM attempts").fetchall() == [("blocked",)]
    assert conn.execute("SELECT status, n FROM rollup").fetchall() == [("blocked", 1)]
    conn.close()


def test_rollup_is_folded_every_fold_every_rows_and_queries_count_the_rest(
    tmp_path: Path,
) -> None:
    led = Ledger(tmp_path / "l.db")
    conn = led._connect()
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone() == (
        0,
    )  # appends maintain no aggregate
    every = ledger_mod.FOLD_EVERY
    led.record_many([row(cost_usd=Decimal("0.5")) for _ in range(every - 2)])
    led.record(row(cost_usd=Decimal("0.5")))
    upto = "SELECT value FROM meta WHERE key = 'rollup_upto'"
    assert conn.execute(upto).fetchone() == ("0",)  # nothing folded yet...
    assert led.spend() == Decimal("0.5") * (every - 1)  # ...and all of it counted
    led.record(row(cost_usd=Decimal("0.5")))  # the FOLD_EVERY-th row folds
    assert conn.execute(upto).fetchone() == (str(every),)
    assert conn.execute("SELECT sum(n) FROM rollup").fetchone() == (every,)
    led.record_many([row(cost_usd=Decimal(1), feature="late") for _ in range(3)])
    by_feature = {g["feature"]: g["calls"] for g in led.summary(["feature"], bucket="day")}
    assert by_feature == {"api": every, "late": 3}
    assert led.spend(since="today") == Decimal("0.5") * every + 3
    # a batch that crosses a boundary folds too
    led.record_many([row() for _ in range(every)])
    assert int(conn.execute(upto).fetchone()[0]) >= 2 * every


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    led = Ledger(path)
    led.record(row(feature="parent"))  # the parent holds an open connection across fork()
    procs, per = 4, 200

    def write(n: int) -> None:
        for i in range(per):
            led.record(row(request_id=f"p{n}-{i}", feature="child"))

    pids = [_child(lambda n=n: write(n)) for n in range(procs)]
    for pid in pids:
        assert os.waitpid(pid, 0)[1] == 0
    assert led.count() == 1 + procs * per
    conn = sqlite3.connect(path)
    assert (
        conn.execute(
            "SELECT count(DISTINCT request_id) FROM attempts WHERE feature='child'"
        ).fetchone()[0]
        == procs * per
    )
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # the rollup plus the rows past its watermark agree with the rows; folding changes nothing
    assert led.summary([])[0]["calls"] == 1 + procs * per
    led.fold()
    assert conn.execute("SELECT sum(n) FROM rollup").fetchone()[0] == 1 + procs * per
    assert led.summary([])[0]["calls"] == 1 + procs * per


def test_sigkilled_writers_lose_no_acknowledged_row(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    Ledger(path).record(row())
    acked: set[str] = set()
    kills = 0
    rng = random.Random(5)
    for _ in range(25):
        children = []
        for _w in range(4):
            r, w = os.pipe()

            def write(w: int = w) -> None:
                led = Ledger(path)
                while True:
                    rid = led.record(row(cost_usd=Decimal("0.000001")))
                    os.write(w, rid.encode() + b"\n")  # acknowledged only after COMMIT

            pid = _child(write)
            os.close(w)
            children.append((pid, r))
        time.sleep(rng.uniform(0.01, 0.04))
        for pid, _r in children:
            os.kill(pid, signal.SIGKILL)
            kills += 1
        for pid, r in children:
            os.waitpid(pid, 0)
            data = b""
            while chunk := os.read(r, 65536):
                data += chunk
            os.close(r)
            acked.update(x.decode() for x in data.split(b"\n") if len(x) == 32)
    assert kills >= 100 and len(acked) > 100
    conn = sqlite3.connect(path)
    stored = {r[0] for r in conn.execute("SELECT id FROM attempts")}
    assert acked - stored == set()
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # killed folds rolled back whole: rollup + rows past its watermark = every row, once
    led = Ledger(path)
    assert led.summary([])[0]["calls"] == len(stored)
    assert led.spend() == Decimal(len(stored) - 1) / 10**6
    led.fold()
    n, pico = conn.execute("SELECT sum(n), sum(cost_pico) FROM rollup").fetchone()
    assert n == len(stored) and pico == (len(stored) - 1) * 10**6


def test_network_home_relocates_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "nfs-home"
    home.mkdir()
    mounts = f"/dev/vda / ext4 rw 0 0\nserver:/export {home} nfs4 rw 0 0\n"
    assert ledger_mod.fs_type(home / "x", mounts) == "nfs4"
    assert ledger_path(home, mounts="/dev/vda / ext4 rw 0 0\n") == home / "ledger.sqlite3"
    with caplog.at_level("WARNING", logger="jupyter_byok"):
        p = ledger_path(home, mounts=mounts)
    assert (
        not str(p).startswith(str(home))
        and ledger_mod.fs_type(p.parent) not in ledger_mod.NETWORK_FS
    )
    assert "network filesystem" in caplog.text
    monkeypatch.setenv("JUPYTER_BYOK_LEDGER_DIR", str(tmp_path / "chosen"))
    assert ledger_path(home, mounts=mounts) == tmp_path / "chosen" / "ledger.sqlite3"


def test_times_filters_and_summary_match_raw(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.db")
    now = datetime.now(timezone.utc)
    rows = []
    rng = random.Random(1)
    for i in range(600):
        t = (now - timedelta(hours=rng.uniform(0, 24 * 40))).timestamp()
        rows.append(row(provider=rng.choice(["openai", "anthropic"]), model=rng.choice(["a", "b"]),
                        feature=rng.choice(["magic", "pipeline"]), ts_start=t, ts_end=t + 1,
                        notebook=rng.choice(["x.ipynb", None]),
                        cost_usd=Decimal(rng.randrange(1, 10**6)) / 10**9, input_tokens=i))  # fmt: skip
    led.record_many(rows)
    df = led.frame()
    for since in ("7d", "30d", "today", "36h", None, now.date() - timedelta(days=3)):
        lo = parse_time(since)
        exact = sum(
            (r.cost_usd or Decimal(0)) for r in rows if lo is None or r.ts_start * 1e6 >= lo
        )  # type: ignore[operator]
        assert led.spend(since) == exact, since
        for prov in ("openai", "anthropic"):
            sub = [r for r in rows if r.provider == prov and (lo is None or r.ts_start * 1e6 >= lo)]  # type: ignore[operator]
            assert led.spend(since, provider=prov) == sum((r.cost_usd or Decimal(0)) for r in sub)
    until = now - timedelta(days=2, hours=5)
    lo, hi = parse_time("20d"), parse_time(until)
    want = sum((r.cost_usd or Decimal(0)) for r in rows if lo <= r.ts_start * 1e6 < hi)  # type: ignore[operator]
    assert led.spend("20d", until) == want
    by_day = led.summary(["provider"], since="20d", until=until, bucket="day")
    assert sum(Decimal(g["cost_usd_exact"]) for g in by_day) == want
    sel = df[(df["ts"] >= datetime.fromtimestamp(lo / 1e6, timezone.utc)) & (df["ts"] < until)]  # type: ignore[operator]
    pandas_days = sel.groupby([sel["ts"].dt.strftime("%Y-%m-%d"), "provider"], observed=True)[
        "input_tokens"
    ].sum()
    assert {
        (g["bucket"], g["provider"]): g["input_tokens"] for g in by_day
    } == pandas_days.to_dict()
    by_nb = led.summary(["notebook"], bucket="month")  # not in the rollup: raw GROUP BY
    assert sum(g["calls"] for g in by_nb) == 600
    assert len(led.frame("7d", provider="openai", model=["a", "b"])) == len(
        [r for r in rows if r.provider == "openai" and r.ts_start * 1e6 >= parse_time("7d")]  # type: ignore[operator]
    )
    assert len(led.recent(5)) == 5
    with pytest.raises(ConfigError):
        led.frame(colour="red")
    with pytest.raises(ConfigError):
        led.summary(["colour"])
    with pytest.raises(ConfigError):
        parse_time("last tuesday")
    assert parse_time(date(2026, 1, 2)) == parse_time("2026-01-02T00:00:00+00:00")


def test_snapshot_read_equals_sql(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.db", synchronous="NORMAL")
    led.record_many(
        [row(input_tokens=i, cost_usd=Decimal(i) / 10**9) for i in range(REFRESH_ROWS + 10)]
    )
    first = led.frame()
    snap = snapshot_path(led)
    assert snap.exists() and (snap.stat().st_mode & 0o077) == 0
    led.record_many([row(provider="gemini", input_tokens=-1, notebook="n.ipynb") for _ in range(6)])
    led.record(row(provider="gemini", input_tokens=-1, error_type="RateLimitError", key_name="k"))
    second = led.frame()
    assert len(second) == len(first) + 7
    assert list(second["provider"].iloc[-7:]) == ["gemini"] * 7
    assert (
        second["notebook"].iloc[-2] == "n.ipynb"
        and second["error_type"].iloc[-1] == "RateLimitError"
    )
    assert second["error_type"].isna().sum() == len(second) - 1
    assert second["input_tokens"].iloc[: len(first)].tolist() == first["input_tokens"].tolist()
    # a snapshot from another ledger is never used
    other = Ledger(tmp_path / "other.db")
    other.record(row())
    os.replace(snap, snapshot_path(other))
    assert len(other.frame()) == 1


def test_export_csv_and_parquet(tmp_path: Path) -> None:
    led = Ledger()
    led.record_many([row(cost_usd=Decimal("0.5")), row(provider="xai", model="grok-4.3")])
    import pandas as pd

    csv = export(tmp_path / "u.csv")
    pq = export(tmp_path / "u.parquet", provider="openai")
    assert len(pd.read_csv(csv)) == 2
    back = pd.read_parquet(pq)
    assert len(back) == 1 and back["cost_usd"].iloc[0] == 0.5
    with pytest.raises(ConfigError):
        export(tmp_path / "u.xlsx")


def test_writing_does_not_import_pandas(tmp_path: Path) -> None:
    import subprocess

    code = (
        "import sys; from jupyter_byok.ledger import Ledger, LedgerRow;"
        f"Ledger({str(tmp_path / 'x.db')!r}).record(LedgerRow('openai','m','ok'));"
        "print('pandas' in sys.modules)"
    )
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "False"
