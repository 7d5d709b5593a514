"""Load through the Jupyter server: N concurrent streamed completions, status probes meanwhile.

Loopback only, bounded, stops by itself. Starts a real ``jupyter server`` with jupyter_byok
and the fake providers at a fixed latency, stores a key through the REST API, then:

* measures one streamed completion alone (the ideal for one call at this latency);
* sends ``--calls`` streamed completions at once and measures the wall time;
* meanwhile issues ``GET /byok/status`` every 50 ms and records its latency.

Prints the ratio wall / ideal (target: at most 1.5) and the slowest status probe (target:
under 100 ms). Run: ``.venv/bin/python benchmarks/bench_server_load.py [--calls 200]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from jupyter_byok.testing import FakeProviders


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def one_call(client: httpx.AsyncClient, i: int) -> float:
    body = {
        "model": "openai:gpt-4o-mini",
        "messages": [{"role": "user", "content": f"call number {i} streams a few words back"}],
        "stream": True,
        "feature": "benchmark",
    }
    started = time.perf_counter()
    text = ""
    async with client.stream("POST", "byok/complete", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("event: done"):
                text = "done"
    assert text == "done"
    return time.perf_counter() - started


async def probe_status(client: httpx.AsyncClient, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        response = await client.get("byok/status")
        response.raise_for_status()
        out.append(time.perf_counter() - started)
        await asyncio.sleep(0.05)


async def run(url: str, token: str, calls: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=calls)
    async with (
        httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"token {token}"},
            timeout=120,
            limits=limits,
            trust_env=False,
        ) as client,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"token {token}"}, timeout=30, trust_env=False
        ) as prober,
    ):
        for _ in range(3):  # warm up: connections, imports, first ledger writes
            await one_call(client, -1)
        ideal = statistics.median([await one_call(client, -1) for _ in range(5)])
        stop, probes = asyncio.Event(), []
        probe_task = asyncio.create_task(probe_status(prober, stop, probes))
        started = time.perf_counter()
        latencies = await asyncio.gather(*(one_call(client, i) for i in range(calls)))
        wall = time.perf_counter() - started
        stop.set()
        await probe_task
    return {
        "ideal_s": ideal,
        "wall_s": wall,
        "ratio": wall / ideal,
        "p50_call_s": statistics.median(latencies),
        "status_max_ms": max(probes) * 1000 if probes else float("nan"),
        "status_p50_ms": statistics.median(probes) * 1000 if probes else float("nan"),
        "status_probes": float(len(probes)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeProviders(latency=args.latency) as fake:
        port, token = free_port(), uuid.uuid4().hex
        env = {
            **os.environ,
            **fake.env(),
            "JUPYTER_BYOK_HOME": str(Path(tmp) / "home"),
            "JUPYTER_RUNTIME_DIR": str(Path(tmp) / "runtime"),
            "JUPYTER_CONFIG_DIR": str(Path(tmp) / "config"),
        }
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser", f"--port={port}",
             "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={tmp}"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}/"
        try:
            headers = {"Authorization": f"token {token}"}
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (
                        httpx.get(url + "byok/status", headers=headers, trust_env=False).status_code
                        == 200
                    ):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            key = "sk-proj-" + "b" * 40 + "T3BlbkFJ" + "c" * 20
            httpx.post(
                url + "byok/keys",
                headers=headers,
                json={"provider": "openai", "key": key},
                trust_env=False,
            ).raise_for_status()
            result = asyncio.run(run(url, token, args.calls))
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()
    print(
        f"{args.calls} concurrent streamed completions through the server, provider latency {args.latency * 1000:.0f} ms"
    )
    print(f"  one call alone (ideal): {result['ideal_s'] * 1000:8.1f} ms")
    print(
        f"  all {args.calls} at once:      {result['wall_s'] * 1000:8.1f} ms   ratio {result['ratio']:.2f} (target <= 1.5)"
    )
    print(f"  median call latency:    {result['p50_call_s'] * 1000:8.1f} ms")
    print(
        f"  GET /byok/status meanwhile: max {result['status_max_ms']:.1f} ms, median {result['status_p50_ms']:.1f} ms "
        f"over {result['status_probes']:.0f} probes (target max < 100 ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
