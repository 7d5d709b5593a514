"""The shared ledger on PostgreSQL against the SQLite ledger, in one run (issue 18).

    .venv/bin/python benchmarks/bench_pg.py [--calls 600] [--server-calls 1000] [--rows 1000000]

Starts a throwaway PostgreSQL cluster (``jupyter_byok.testing.postgres``, loopback) and the
fake providers in processes of their own, then:

1. ``complete``: median µs per ``jupyter_byok.complete`` in this process (the whole engine:
   ledger row, pricing), SQLite ledger vs the PostgreSQL ledger, in alternating blocks so
   that drift hits both alike; target: PostgreSQL ÷ SQLite ≤ 1.3. Run against the cluster
   as configured by default (every commit synced to disk) and with ``fsync=off`` (a commit
   is written to the OS but not synced: it survives a crash of PostgreSQL, not of the
   machine, the durability of the SQLite ledger's WAL with ``synchronous=NORMAL``);
2. through the server: ``--server-calls`` calls at 50 ms fake latency, 64 in flight, to a
   real ``jupyter server`` in SQLite mode and in PostgreSQL mode; efficiency = ideal wall
   time (calls × 50 ms ÷ 64) ÷ measured; target: PostgreSQL within 10 % of SQLite;
3. cost by user by day over ``--rows`` rows in PostgreSQL (``summary(["user_name"],
   bucket="day", scope="all")``): median of 5; target ≤ 1 s.

Loopback only; bounded by the counts; stops by itself. Compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _home import use_home

from jupyter_byok.testing.postgres import PgCluster
from jupyter_byok.testing.process import fake_providers_process

KEY = "sk-proj-" + "b" * 40 + "T3BlbkFJ" + "c" * 20
MODEL = "openai:gpt-4o-mini"


# ------------------------------------------------------------------ 1. complete
def complete_us(env: dict[str, str], url: str, calls: int, block: int = 50) -> dict[str, float]:
    """Median µs per ``complete``: SQLite and PostgreSQL ledgers in alternating blocks;
    and ``<mode>_block``: µs per call of whole blocks, until the block's rows are in the
    ledger's database (for PostgreSQL, the rows the sender copies behind the calls are
    waited for at the end of the block: the throughput, not just the latency a caller
    sees)."""
    import jupyter_byok
    from jupyter_byok.ledger import default_ledger, shared

    os.environ.update(env)
    os.environ["OPENAI_API_KEY"] = KEY
    samples: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    blocks: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    for mode in ("sqlite", "postgresql"):  # warm both paths
        _ledger_mode(mode, url)
        for i in range(20):
            jupyter_byok.complete(MODEL, f"warm {i}")
    for start in range(0, calls, block):
        for mode in ("sqlite", "postgresql"):
            _ledger_mode(mode, url)
            began = time.perf_counter()
            for i in range(block):
                t0 = time.perf_counter()
                jupyter_byok.complete(MODEL, f"call {start + i}")
                samples[mode].append(time.perf_counter() - t0)
            default_ledger().flush()
            blocks[mode].append((time.perf_counter() - began) / block)
    os.environ.pop("JUPYTER_BYOK_LEDGER_URL", None)
    for led in shared._shared.values():
        led.close()
    shared._shared.clear()
    out = {m: statistics.median(s) * 1e6 for m, s in samples.items()}
    out.update({f"{m}_block": statistics.median(s) * 1e6 for m, s in blocks.items()})
    return out


def _ledger_mode(mode: str, url: str) -> None:
    if mode == "sqlite":
        os.environ.pop("JUPYTER_BYOK_LEDGER_URL", None)
    else:
        os.environ["JUPYTER_BYOK_LEDGER_URL"] = url


# ---------------------------------------------------------- 2. through the server
async def _burst(base: str, token: str, calls: int, inflight: int) -> float:
    """Wall seconds for ``calls`` completions, ``inflight`` at a time (aiohttp: the load
    client must cost less than the server it measures)."""
    import aiohttp

    headers = {"Authorization": f"token {token}"}
    connector = aiohttp.TCPConnector(limit=inflight)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector) as session:
        sem = asyncio.Semaphore(inflight)

        async def one(i: int) -> None:
            async with sem:
                body = {"model": MODEL, "messages": [{"role": "user", "content": f"c{i}"}]}
                async with session.post("byok/complete", json=body) as r:
                    r.raise_for_status()
                    await r.read()

        await asyncio.gather(*(one(i) for i in range(inflight)))  # warm the connections
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(calls)))
        return time.perf_counter() - t0


def server_efficiency(
    fake_env: dict[str, str], url: str | None, calls: int, latency: float, inflight: int = 64
) -> float:
    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        port, token = _free_port(), uuid.uuid4().hex
        env = {
            **os.environ,
            **fake_env,
            "JUPYTER_BYOK_HOME": str(Path(tmp) / "home"),
            "JUPYTER_RUNTIME_DIR": str(Path(tmp) / "runtime"),
            "JUPYTER_CONFIG_DIR": str(Path(tmp) / "config"),
        }
        env.pop("JUPYTER_BYOK_LEDGER_URL", None)
        if url:
            env["JUPYTER_BYOK_LEDGER_URL"] = url
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
             f"--port={port}", "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp}"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}/"
        try:
            headers = {"Authorization": f"token {token}"}
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "byok/status", headers=headers).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            httpx.post(
                base + "byok/keys", headers=headers, json={"provider": "openai", "key": KEY}
            ).raise_for_status()
            wall = asyncio.run(_burst(base, token, calls, inflight))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
    return calls * latency / inflight / wall


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------- 3. big reads
def cost_by_user_by_day(url: str, rows: int) -> tuple[float, int]:
    import psycopg

    from jupyter_byok.ledger.shared import SharedLedger

    led = SharedLedger(url)
    led.check_writable()  # the schema
    day = 86_400 * 1_000_000
    t_end = int(time.time() * 1e6)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO attempts (id, request_id, ts, ts_end, provider, model, status, "
            "cost_pico, user_name, team) SELECT md5(i::text), md5(i::text), "
            "%s - (i %% 90) * %s - i, %s - (i %% 90) * %s - i, 'openai', 'gpt-4o', 'ok', "
            "1000000 + i %% 1000, 'user' || (i %% 200), 'team' || (i %% 10) "
            "FROM generate_series(1, %s) AS i",
            (t_end, day, t_end, day, rows),
        )
        conn.execute("VACUUM ANALYZE attempts")
    times = []
    groups = 0
    for _ in range(5):
        t0 = time.perf_counter()
        out = led.summary(["user_name"], bucket="day", scope="all")
        times.append(time.perf_counter() - t0)
        groups = len(out)
    led.close()
    return statistics.median(times), groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--server-calls", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        use_home(Path(tmp) / "home")
        with PgCluster() as pg, fake_providers_process(0.0) as fast_env:
            url = pg.create_database("bench_complete")
            results["complete"] = complete_us(fast_env, url, args.calls)
            pg.execute("ALTER SYSTEM SET fsync = off")
            pg.execute("SELECT pg_reload_conf()")
            nosync = pg.create_database("bench_nosync")
            results["complete_nosync"] = complete_us(fast_env, nosync, args.calls)
            pg.execute("ALTER SYSTEM RESET fsync")
            pg.execute("SELECT pg_reload_conf()")
            with fake_providers_process(args.latency) as slow_env:
                results["server"] = {
                    mode: server_efficiency(
                        slow_env,
                        pg.create_database(f"bench_server_{mode}")
                        if mode == "postgresql"
                        else None,
                        args.server_calls,
                        args.latency,
                    )
                    for mode in ("sqlite", "postgresql")
                }
            results["read"] = cost_by_user_by_day(pg.create_database("bench_read"), args.rows)

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"(load average at the end: {load} on {os.cpu_count()} CPUs; a loaded machine hurts "
          "the PostgreSQL path first: each call waits for another process to be scheduled)")  # fmt: skip
    c, n = results["complete"], results["complete_nosync"]
    print("1. complete, median µs per call (one process, alternating blocks)")
    print(f"   SQLite ledger                      {c['sqlite']:9.0f}")
    print(f"   PostgreSQL, default (fsync on)     {c['postgresql']:9.0f}   "
          f"÷ SQLite {c['postgresql'] / c['sqlite']:.2f}")  # fmt: skip
    print(f"   SQLite ledger (again)              {n['sqlite']:9.0f}")
    print(f"   PostgreSQL, fsync=off              {n['postgresql']:9.0f}   "
          f"÷ SQLite {n['postgresql'] / n['sqlite']:.2f}   (target ≤ 1.3)")  # fmt: skip
    print("   whole blocks until their rows are in the database, µs per call (fsync on, fsync=off)")
    for label, key in (("SQLite ledger", "sqlite_block"), ("PostgreSQL", "postgresql_block")):
        print(f"   {label:34} {c[key]:9.0f} {n[key]:9.0f}")
    print(f"   ÷ SQLite                           {c['postgresql_block'] / c['sqlite_block']:9.2f}"
          f" {n['postgresql_block'] / n['sqlite_block']:9.2f}")  # fmt: skip
    s = results["server"]
    print(f"2. through the server, {args.server_calls} calls, 64 in flight, "
          f"{args.latency * 1000:.0f} ms fake latency: efficiency (ideal ÷ wall)")  # fmt: skip
    print(f"   SQLite ledger                      {s['sqlite']:9.2f}")
    print(f"   PostgreSQL ledger                  {s['postgresql']:9.2f}   "
          f"÷ SQLite {s['postgresql'] / s['sqlite']:.2f}   (target ≥ 0.90)")  # fmt: skip
    secs, groups = results["read"]
    print(f"3. cost by user by day over {args.rows:,} rows in PostgreSQL: "
          f"{secs * 1000:.0f} ms median of 5 ({groups:,} groups; target ≤ 1000 ms)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
