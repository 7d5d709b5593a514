"""A map in batch mode over 100,000 rows: the kernel-side time and memory to prepare and
submit the rows, and to turn 100,000 result lines into the result DataFrame.

Target (issue 19): at most 5 s and 500 MB peak RSS for the whole job. The batch service
runs in this process (no Jupyter server: the case where all the work is the kernel's),
so the figures include building the provider's JSONL, the upload, parsing the result
file, pricing every item and writing its ledger row. The fake providers run in a child
process; "kernel CPU" is this process's CPU time (``time.process_time``), which leaves
out the time spent waiting for the fake. Usage::

    .venv/bin/python benchmarks/bench_batch.py [--rows 100000] [--provider openai]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from typing import Any

from _home import use_home


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--provider", choices=("openai", "anthropic", "gemini"), default="openai")
    args = parser.parse_args()
    model = {
        "openai": "openai:gpt-4o-mini",
        "anthropic": "anthropic:claude-haiku-4-5",
        "gemini": "gemini:gemini-2.5-flash",
    }[args.provider]

    use_home(tempfile.mkdtemp(prefix="byok-bench-batch-"))
    from jupyter_byok.testing.process import fake_providers_process

    with fake_providers_process() as env:
        os.environ.update(env)
        for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
            os.environ[var] = "sk-bench-batch-" + "x" * 32
        import pandas as pd

        from jupyter_byok._runner import run_sync
        from jupyter_byok.pipeline import Pipeline
        from jupyter_byok.pipeline._batch import amap_batch
        from jupyter_byok.pipeline._batch_run import BatchRun

        p = Pipeline("bench")
        p.llm("label", model, "Classify this support ticket: {input.text}", max_tokens=8)
        df = pd.DataFrame(
            {"text": [f"ticket {i}: the printer on floor {i % 7} jams" for i in range(args.rows)]}
        )
        # warm the imports and the connection with a tiny map first
        run_sync(amap_batch(p, df.head(3), poll_s=0.01, progress=False))
        base_rss = current_rss_mb()

        phases: dict[str, tuple[float, float]] = {}
        clock = [time.perf_counter(), time.process_time()]

        def lap(name: str) -> None:
            now = [time.perf_counter(), time.process_time()]
            phases[name] = (now[0] - clock[0], now[1] - clock[1])
            clock[:] = now

        # What the batch service does (it runs in the Jupyter server when the kernel has
        # one): its CPU time, measured around each call, is told apart from the kernel's.
        from jupyter_byok.batch._service import BatchService, Submission

        service_cpu = [0.0]
        wire_cpu = [0.0]

        def timed(fn: Any) -> Any:
            async def wrapper(*a: Any, **k: Any) -> Any:
                start = time.process_time()
                try:
                    return await fn(*a, **k)
                finally:
                    service_cpu[0] += time.process_time() - start

            return wrapper

        for name in ("submit", "refresh", "check_budget"):
            setattr(BatchService, name, timed(getattr(BatchService, name)))
        original_submit = BatchService.submit

        async def submit(self: BatchService, sub: Submission) -> Any:
            # the request body a kernel would POST to the server: its cost is the kernel's
            start = time.process_time()
            json.dumps(sub.to_dict())
            wire_cpu[0] += time.process_time() - start
            return await original_submit(self, sub)

        BatchService.submit = submit  # type: ignore[method-assign]

        async def job() -> pd.DataFrame:
            from jupyter_byok.pipeline._batch import _start

            run: BatchRun = _start(p, df, None, concurrency=16, confirm_above=None)
            state = run.nodes["label"]
            state.started = True
            await run._submit("label", state)  # render, build the JSONL, upload, create
            lap("prepare + submit")
            while not run.done:  # poll; fetch, parse, price, write ledger rows
                await asyncio.sleep(0.01)
                await run.step()
            lap("poll + fetch + ledger rows")
            frame = run.frame()
            lap("result lines -> DataFrame")
            return frame

        started = (time.perf_counter(), time.process_time())
        frame = run_sync(job())
        wall = time.perf_counter() - started[0]
        cpu = time.process_time() - started[1]
        kernel = cpu - service_cpu[0]
        peak = rss_mb()
        assert len(frame) == args.rows and frame["error"].isna().all()
        assert frame["label"].iloc[-1].startswith("Echo: Classify this support ticket")

    print(f"batch map, {args.rows:,} rows, {model}, batch service in this process")
    print(f"{'phase':30} {'wall s':>8} {'CPU s':>13}")
    for name, (w, c) in phases.items():
        print(f"{name:30} {w:8.2f} {c:13.2f}")
    print(f"{'whole job':30} {wall:8.2f} {cpu:13.2f}")
    print(
        f"of which the batch service (the server's part when there is one): "
        f"{service_cpu[0]:.2f} s CPU; kernel-side {kernel:.2f} s CPU, of which "
        f"{wire_cpu[0]:.2f} s encoding the submission as a server would receive it"
    )
    print(f"peak RSS {peak:.0f} MB (before the job {base_rss:.0f} MB; target <= 500 MB)")
    ok = kernel <= 5.0 and peak <= 500
    print("target met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
