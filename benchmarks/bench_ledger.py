"""Ledger benchmark: append latency, chart aggregation and usage() read time vs pandas.read_sql.

One run, ratios printed side by side (absolute times drift between runs on shared machines).
Targets from issue 5: append p50 <= 0.2 ms; cost by provider by day <= 0.5 s on 1M rows;
usage() <= 0.6 x pandas.read_sql of the same file, on the first read (no snapshot yet) too.

    .venv/bin/python benchmarks/bench_ledger.py [--rows 100000] [--sqlite3-path]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from _home import use_home


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--appends", type=int, default=2_000)
    ap.add_argument(
        "--sqlite3-path",
        action="store_true",
        help="also time a first read without the Arrow driver (the fallback path)",
    )
    opts = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    use_home(tmp / "home")

    from jupyter_byok.ledger import Ledger, LedgerRow
    from jupyter_byok.ledger.frame import FrameReader, snapshot_path

    def make(i: int, rng: random.Random, t: float | None = None) -> LedgerRow:
        return LedgerRow(
            rng.choice(["openai", "anthropic", "gemini", "xai", "tavily"]),
            rng.choice(["gpt-4o-mini", "claude-sonnet-4-6", "gemini-2.5-flash", "grok-4.3", "o3"]),
            rng.choice(["ok"] * 9 + ["error"]),
            request_id=f"r{i}",
            feature=rng.choice(["magic", "pipeline", "api", "widget"]),
            notebook=rng.choice(["a.ipynb", "b.ipynb", None]),
            input_tokens=rng.randrange(10_000),
            cached_input_tokens=rng.randrange(1000),
            output_tokens=rng.randrange(2000),
            cost_usd=Decimal(rng.randrange(10**7)) / 10**9,
            latency_s=rng.random(),
            ts_start=t,
            ts_end=t,
        )

    rng = random.Random(0)
    print(f"== append: {opts.appends} one-row transactions on an open WAL connection")
    for sync in ("FULL", "NORMAL"):
        led = Ledger(tmp / f"append-{sync}.db", synchronous=sync)
        led.record(make(0, rng))
        lat = []
        for i in range(opts.appends):
            row = make(i, rng)
            t0 = time.perf_counter()
            led.record(row)
            lat.append(time.perf_counter() - t0)
        lat.sort()
        p50, p99 = statistics.median(lat) * 1e3, lat[int(0.99 * len(lat))] * 1e3
        print(f"synchronous={sync:<6} p50 {p50:.3f} ms  p99 {p99:.3f} ms  (target p50 <= 0.2 ms)")

    n = opts.rows
    print(f"\n== a {n:,}-row ledger over 400 days")
    path = tmp / "big.db"
    led = Ledger(path, synchronous="NORMAL")
    now = time.time()
    t0 = time.perf_counter()
    batch = 20_000
    for start in range(0, n, batch):
        rows = [
            make(i, rng, now - rng.uniform(0, 400 * 86400))
            for i in range(start, min(n, start + batch))
        ]
        led.record_many(rows)
    print(
        f"generated in {time.perf_counter() - t0:.1f} s "
        "(batched; the writers fold the rollup every FOLD_EVERY rows)"
    )
    led.close()

    reader = FrameReader()  # arrow_reads: which path each first read took
    led = Ledger(path, frames=reader)
    t0 = time.perf_counter()
    groups = led.summary(["provider"], bucket="day")
    t_rollup = time.perf_counter() - t0
    conn = sqlite3.connect(path)
    t0 = time.perf_counter()
    raw = conn.execute(
        "SELECT strftime('%Y-%m-%d', ts/1000000, 'unixepoch'), provider, sum(cost_pico) "
        "FROM attempts GROUP BY 1, 2"
    ).fetchall()
    t_group = time.perf_counter() - t0
    assert len(raw) == len(groups)
    print(
        f"cost by provider by day: summary() {t_rollup:.3f} s ({len(groups)} groups) | "
        f"SQLite GROUP BY over rows {t_group:.3f} s | ratio {t_rollup / t_group:.3f} "
        "(target <= 0.5 s at 1M rows)"
    )

    import pandas as pd

    t0 = time.perf_counter()
    ref = pd.read_sql("SELECT * FROM attempts", conn)
    t_pd = time.perf_counter() - t0
    snap = snapshot_path(led)
    if snap.exists():
        snap.unlink()
    arrow_used = reader.arrow_reads
    t0 = time.perf_counter()
    cold = led.frame()
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = led.frame()
    t_warm = time.perf_counter() - t0
    led.record(make(n + 1, rng))
    t0 = time.perf_counter()
    tail = led.frame()
    t_tail = time.perf_counter() - t0
    assert len(ref) == len(cold) == len(warm) == len(tail) - 1
    path_used = "Arrow driver" if arrow_used == [True] else f"sqlite3 ({arrow_used})"
    print(f"pandas.read_sql(SELECT *)             {t_pd:.3f} s   1.00x")
    print(
        f"usage() first read (builds snapshot)  {t_cold:.3f} s   {t_cold / t_pd:.2f}x  "
        f"(target <= 0.6x; read through the {path_used})"
    )
    print(f"usage() next read                     {t_warm:.3f} s   {t_warm / t_pd:.2f}x")
    print(f"usage() after one more append         {t_tail:.3f} s   {t_tail / t_pd:.2f}x")
    if opts.sqlite3_path:
        snap.unlink()
        reader.arrow = False
        t0 = time.perf_counter()
        plain = led.frame()
        t_plain = time.perf_counter() - t0
        assert len(plain) == len(tail)
        print(
            f"usage() first read, sqlite3 fallback  {t_plain:.3f} s   {t_plain / t_pd:.2f}x  "
            "(no pyarrow/driver)"
        )


if __name__ == "__main__":
    main()
