"""Pipeline.map over 1,000 rows, concurrency 32, against the fake providers at 50 ms latency.

Prints wall time against the ideal (rows / concurrency x latency), against the same calls
made straight through the client with a semaphore (the floor a pipeline sits on), and the
cached re-run. Usage::

    .venv/bin/python benchmarks/bench_pipeline_map.py [--rows 1000] [--concurrency 32]
        [--latency 0.05] [--repeat 3]

The fake runs in a child process (``python -m jupyter_byok.testing``) so that its threads do
not share this process's GIL with the client being measured.
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

from _home import use_home


def start_fake(latency: float) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_byok.testing", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    env: dict[str, str] = {}
    assert proc.stdout is not None
    while len(env) < 5:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("the fake providers did not start")
        if line.startswith("export "):
            name, _, value = line[7:].strip().partition("=")
            env[name] = value
    return proc, env


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    use_home(tempfile.mkdtemp(prefix="byok-bench-"))
    proc, env = start_fake(args.latency)
    os.environ.update(env)
    os.environ["OPENAI_API_KEY"] = "sk-bench-" + "x" * 32
    try:
        import pandas as pd

        import jupyter_byok
        from jupyter_byok._runner import run_sync
        from jupyter_byok.client import get_client
        from jupyter_byok.pipeline import Pipeline
        from jupyter_byok.types import Message, Request

        n, c = args.rows, args.concurrency
        ideal = -(-n // c) * args.latency

        async def direct(tag: str) -> float:
            client = get_client()
            sem = asyncio.Semaphore(c)

            async def one(i: int) -> None:
                async with sem:
                    await client.acomplete(
                        Request(
                            model="openai:gpt-4o-mini",
                            messages=[Message("user", f"Summarize: {tag} row {i}")],
                            params={"max_tokens": 16},
                            feature="pipeline",
                        )
                    )

            started = time.monotonic()
            await asyncio.gather(*(one(i) for i in range(n)))
            return time.monotonic() - started

        run_sync(direct("warm"))  # connections, imports, ledger schema
        direct_walls, map_walls, cached_walls = [], [], []
        for rep in range(args.repeat):
            direct_walls.append(run_sync(direct(f"direct{rep}")))
            p = Pipeline(f"bench{rep}")
            p.llm("summary", "openai:gpt-4o-mini", "Summarize: {input.text}", max_tokens=16)
            df = pd.DataFrame({"text": [f"map{rep} row {i}" for i in range(n)]})
            started = time.monotonic()
            out = p.map(df, {"text": "text"}, concurrency=c, progress=False)
            map_walls.append(time.monotonic() - started)
            assert out["summary"].notna().all()
            started = time.monotonic()
            again = p.map(df, {"text": "text"}, concurrency=c, progress=False)
            cached_walls.append(time.monotonic() - started)
            assert (again["cached_nodes"] == 1).all()
            rows = jupyter_byok.usage(pipeline=f"bench{rep}")
            ok = int((rows["status"] == "ok").sum())
            assert ok == n, f"{ok} ledger rows for {n} calls"

        d, m, k = (statistics.median(x) for x in (direct_walls, map_walls, cached_walls))
        print(f"rows={n} concurrency={c} latency={args.latency * 1000:.0f}ms ideal={ideal:.2f}s")
        print(f"direct client calls : {d:.2f}s  ({d / ideal:.2f}x ideal)")
        print(f"Pipeline.map        : {m:.2f}s  ({m / ideal:.2f}x ideal, {m / d:.2f}x direct)")
        print(f"map, all cached     : {k:.2f}s  ({k / m:.3f}x the first map)")
        print(f"ledger rows per LLM node: {n} (checked)")
        print(f"target <= 1.3x ideal: {'met' if m <= 1.3 * ideal else 'NOT met'}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
