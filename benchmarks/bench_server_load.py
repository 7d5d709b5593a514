"""Load through the Jupyter server: N concurrent streamed completions, status probes meanwhile.

Loopback only, bounded, stops by itself. Starts a real ``jupyter server`` with jupyter_byok
and the fake providers at a fixed latency, stores a key through the REST API, then:

* measures one streamed completion alone (the ideal for one call at this latency);
* sends ``--calls`` streamed completions at once and measures the wall time;
* meanwhile issues ``GET /byok/status`` every 50 ms and records its latency.

Prints the ratio wall / ideal (target: at most 1.5) and the slowest status probe (target:
under 100 ms). Run: ``.venv/bin/python benchmarks/bench_server_load.py [--calls 200]``;
with ``BYOK_BENCH_PROFILE=out.txt`` (and py-spy on PATH) it also samples the server process.
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

from jupyter_byok.testing.process import fake_providers_process


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


def load_client(calls: int, **kwargs: object) -> httpx.AsyncClient:
    """The load generator's own client must not be the bottleneck: httpx's API over
    aiohttp's transport (plain httpx rescans its pool per request: encode/httpx#3215)."""
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=calls + 8, max_keepalive_connections=calls + 8)
    return httpx.AsyncClient(
        timeout=120, transport=AiohttpTransport(limits=limits, trust_env=False), **kwargs
    )  # type: ignore[arg-type]


async def direct_to_fake(fake_env: dict[str, str], calls: int) -> tuple[float, float]:
    """The same streams sent straight to the fake: what the fake itself can serve."""
    url = fake_env["JUPYTER_BYOK_OPENAI_BASE_URL"] + "/chat/completions"
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "call number 1 streams a few words back"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": "Bearer sk-proj-benchmark"}

    async with load_client(calls) as client:

        async def one() -> float:
            started = time.perf_counter()
            async with client.stream("POST", url, json=body, headers=headers) as response:
                async for _ in response.aiter_lines():
                    pass
            return time.perf_counter() - started

        for _ in range(3):
            await one()
        single = statistics.median([await one() for _ in range(5)])
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(calls)))
        return single, time.perf_counter() - started


async def run(url: str, token: str, calls: int) -> dict[str, float]:
    auth = {"Authorization": f"token {token}"}
    async with (
        load_client(calls, base_url=url, headers=auth) as client,
        httpx.AsyncClient(base_url=url, headers=auth, timeout=30, trust_env=False) as prober,
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
    with tempfile.TemporaryDirectory() as tmp, fake_providers_process(args.latency) as fake_env:
        port, token = free_port(), uuid.uuid4().hex
        env = {
            **os.environ,
            **fake_env,
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
            spy = None
            if os.environ.get("BYOK_BENCH_PROFILE"):
                spy = subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "-p",
                        str(proc.pid),
                        "-o",
                        os.environ["BYOK_BENCH_PROFILE"],
                        "-f",
                        "raw",
                        "-d",
                        "6",
                        "--nonblocking",
                    ]
                )
                time.sleep(1)
            result = asyncio.run(run(url, token, args.calls))
            single_direct, wall_direct = asyncio.run(direct_to_fake(fake_env, args.calls))
            if spy is not None:
                spy.wait()
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
    print(
        f"  the fake alone: one stream {single_direct * 1000:.1f} ms, {args.calls} at once "
        f"{wall_direct * 1000:.1f} ms (its own ratio {wall_direct / single_direct:.2f}); "
        f"through the server ÷ straight to the fake: {result['wall_s'] / wall_direct:.2f}"
    )
    print(f"  median call latency:    {result['p50_call_s'] * 1000:8.1f} ms")
    print(
        f"  GET /byok/status meanwhile: max {result['status_max_ms']:.1f} ms, median {result['status_p50_ms']:.1f} ms "
        f"over {result['status_probes']:.0f} probes (target max < 100 ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
