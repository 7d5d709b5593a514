"""Backup and restore benchmark (issue 20): a 1,000,000-row ledger, and the KDF's cost.

Times ``create_backup`` (ledger snapshot with SQLite's online backup API, zlib, AES-GCM,
the default Argon2id), ``restore_backup`` into an empty home (every row merged), the same
restore again (nothing to add: every row already there), and the Argon2id derivation
alone with the default parameters (the cost of each passphrase try, for a user and for an
attacker). Loopback-free, bounded, one run.

    .venv/bin/python benchmarks/bench_backup.py [--rows 1000000] [--kdf-runs 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import secrets
import shutil
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from _home import use_home


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--kdf-runs", type=int, default=5)
    opts = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    home_a, home_b = tmp / "home-a", tmp / "home-b"
    use_home(home_a)

    from jupyter_byok.backup import DEFAULT_KDF, create_backup, restore_backup
    from jupyter_byok.backup._format import derive
    from jupyter_byok.keys import Keystore
    from jupyter_byok.ledger import Ledger, LedgerRow, ledger_path

    try:
        print(
            f"== Argon2id cost as chosen: t={DEFAULT_KDF.t}, m={DEFAULT_KDF.m_kib // 1024} MiB, "
            f"p={DEFAULT_KDF.p} ({os.cpu_count()} CPUs)"
        )
        times = []
        for _ in range(opts.kdf_runs):
            start = time.perf_counter()
            derive("a passphrase", secrets.token_bytes(16), DEFAULT_KDF)
            times.append(time.perf_counter() - start)
        print(
            f"   derive: median {statistics.median(times):.3f} s, min {min(times):.3f} s, "
            f"max {max(times):.3f} s over {len(times)} runs"
        )

        print(f"== a ledger of {opts.rows:,} rows")
        rng = random.Random(0)
        led = Ledger(ledger_path())
        start = time.perf_counter()
        batch = 50_000
        now = time.time()
        for first in range(0, opts.rows, batch):
            led.record_many(
                LedgerRow(
                    rng.choice(["openai", "anthropic", "gemini", "xai", "tavily"]),
                    rng.choice(["gpt-4o-mini", "claude-sonnet-4-6", "gemini-2.5-flash", "o3"]),
                    rng.choice(["ok"] * 9 + ["error"]),
                    feature=rng.choice(["magic", "pipeline", "api", "widget"]),
                    notebook=rng.choice(["a.ipynb", "b.ipynb", None]),
                    input_tokens=rng.randrange(10_000),
                    output_tokens=rng.randrange(2000),
                    cost_usd=Decimal(rng.randrange(10**7)) / 10**9,
                    latency_s=rng.random(),
                    ts_end=now - (opts.rows - i) * 30,
                )
                for i in range(first, min(first + batch, opts.rows))
            )
        count_a, spend_a = led.count(), led.spend()
        led.close()
        size = ledger_path().stat().st_size
        print(f"   built in {time.perf_counter() - start:.1f} s: {size / 2**20:,.0f} MiB")

        store = Keystore(machine_id=hashlib.sha256(b"bench-a").digest())
        for n in range(5):
            store.set("openai", f"sk-proj-BENCH{n:02d}" + "x" * 60, f"k{n}")

        out = tmp / "bench.byokbak"
        passphrase = "bench orbit lantern walnut 42"
        start = time.perf_counter()
        manifest = create_backup(out, passphrase, keystore=store)
        backup_s = time.perf_counter() - start
        print(
            f"== backup: {backup_s:.2f} s (KDF included), file {out.stat().st_size / 2**20:,.1f}"
            f" MiB ({out.stat().st_size / size:.0%} of the ledger), "
            f"{manifest['counts']['ledger_rows']:,} rows, {manifest['counts']['keys']} keys"
        )

        use_home(home_b)
        store_b = Keystore(machine_id=hashlib.sha256(b"bench-b").digest())
        start = time.perf_counter()
        report = restore_backup(out, passphrase, keystore=store_b)
        restore_s = time.perf_counter() - start
        print(
            f"== restore into an empty home: {restore_s:.2f} s (KDF included); "
            f"{report['ledger']['added']:,} rows added, {report['keys']['added']} keys"
        )
        start = time.perf_counter()
        again = restore_backup(out, passphrase, keystore=store_b)
        again_s = time.perf_counter() - start
        print(
            f"== restore again (idempotent): {again_s:.2f} s; {again['ledger']['added']} rows "
            f"added, {again['ledger']['present']:,} already there"
        )
        led_b = Ledger(ledger_path(home_b))
        same = (led_b.count(), led_b.spend()) == (count_a, spend_a)
        print(f"   ledger totals equal after restore: {same}; integrity {led_b.integrity_check()}")
        led_b.close()
        assert same
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
