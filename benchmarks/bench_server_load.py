"""Load through the Jupyter server: N concurrent streamed completions, status probes meanwhile.

Loopback only, bounded, stops by itself. Starts a real ``jupyter server`` with jupyter_byok
and the fake providers at a fixed latency, stores a key through the REST API, then, each
part driven from a process of its own so that no client shares a GIL with another:

* the framework floor: ``--calls`` concurrent ``GET /api/status`` (jupyter_server's own
  trivial authenticated endpoint) and the same for ``GET /byok/status``;
* one streamed completion alone (the ideal for one call at this latency);
* ``--rounds`` bursts of ``--calls`` streamed completions at once (the load process), while
  another process issues ``GET /byok/status`` every ``--probe-interval`` seconds;
* the same streams sent straight to the fake (what the fake and the load client can do).

For every burst it reports the wall time, the ratio wall / ideal (target: at most 1.5), the
status probes issued during it (target: every one under 100 ms), and the CPU seconds each
process (server, fake, load client, prober) spent in it, so that it shows whether the server
is CPU-bound and whether the load generator is. Run:
``flock /tmp/byok-bench.lock .venv/bin/python benchmarks/bench_server_load.py --calls 200``;
with ``BYOK_BENCH_PROFILE=out.txt`` (and py-spy installed) the server process is sampled
across the bursts (raw collapsed stacks; ``BYOK_BENCH_PROFILE_RATE`` samples a second,
``BYOK_BENCH_PROFILE_ARGS="--idle --threads"`` for more py-spy options).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _server import jupyter_server

CLK_TCK = os.sysconf("SC_CLK_TCK")
STREAM_MODEL = "openai:gpt-4o-mini"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (``/proc/<pid>/stat``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine spent busy (``/proc/stat``): with the CPU of our
    own processes taken out, what other work on the machine took during a burst."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


# ----------------------------------------------------------------------------- load role
def stream_body(i: int) -> dict[str, Any]:
    return {
        "model": STREAM_MODEL,
        "messages": [{"role": "user", "content": f"call number {i} streams a few words back"}],
        "stream": True,
        "feature": "benchmark",
    }


async def load_role(args: argparse.Namespace) -> dict[str, Any]:
    """One load generator process: aiohttp (C parser, one pool that scales), nothing else."""
    import aiohttp

    headers = {"Authorization": f"token {args.token}"}
    connector = aiohttp.TCPConnector(limit=args.calls + 8, limit_per_host=args.calls + 8)
    watch = [int(p) for p in args.watch.split(",") if p]
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:

        async def stream_call(i: int) -> float:
            started = time.perf_counter()
            done = False
            async with session.post(args.url + "byok/complete", json=stream_body(i)) as resp:
                resp.raise_for_status()
                async for line in resp.content:
                    if line.startswith(b"event: done"):
                        done = True
            assert done, "the stream ended without its done event"
            return time.perf_counter() - started

        async def get(path: str) -> float:
            started = time.perf_counter()
            async with session.get(args.url + path) as resp:
                resp.raise_for_status()
                await resp.read()
            return time.perf_counter() - started

        fake_body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "call number 1 streams a few words back"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }

        async def fake_call(i: int) -> float:
            started = time.perf_counter()
            async with session.post(
                args.url,
                json=fake_body,
                headers={"Authorization": "Bearer sk-proj-benchmark"},
            ) as resp:
                resp.raise_for_status()
                async for _ in resp.content:
                    pass
            return time.perf_counter() - started

        async def burst(make: Any) -> dict[str, Any]:
            cpu0 = {pid: cpu_seconds(pid) for pid in watch}
            busy0 = machine_busy_seconds()
            own0 = time.process_time()
            t0 = time.monotonic()
            latencies = await asyncio.gather(*(make(i) for i in range(args.calls)))
            t1 = time.monotonic()
            own = time.process_time() - own0
            busy = machine_busy_seconds() - busy0
            cpu = {str(pid): cpu_seconds(pid) - cpu0[pid] for pid in watch}
            return {
                "t0": t0,
                "t1": t1,
                "wall_s": t1 - t0,
                "p50_s": statistics.median(latencies),
                "max_s": max(latencies),
                "client_cpu_s": own,
                "cpu_s": cpu,
                "machine_busy_s": busy,
            }

        async def single(make: Any, n: int = 5) -> float:
            for _ in range(3):
                await make(-1)
            return statistics.median([await make(-1) for _ in range(n)])

        if args.role == "floor":
            for path in ("api/status", "byok/status"):
                out[path] = {
                    "single_s": await single(lambda _i, p=path: get(p), 20),
                    **await burst(lambda _i, p=path: get(p)),
                }
        elif args.role == "streams":
            out["ideal_s"] = await single(stream_call)
            out["rounds"] = []
            for _ in range(args.rounds):
                await asyncio.sleep(0.3)
                out["rounds"].append(await burst(stream_call))
        elif args.role == "fake":
            out["single_s"] = await single(fake_call)
            out["round"] = await burst(fake_call)
    return out


# ---------------------------------------------------------------------------- probe role
def probe_role(args: argparse.Namespace) -> list[tuple[float, float]]:
    """``GET /byok/status`` every ``--probe-interval`` s on one keep-alive connection, until
    stdin closes: blocking http.client, the cheapest client there is, in its own process."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    parts = urlsplit(args.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Authorization": f"token {args.token}"}
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    probes: list[tuple[float, float]] = []
    print("ready", flush=True)
    while not stop.is_set():
        t0 = time.monotonic()
        conn.request("GET", parts.path + "byok/status", headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"GET /byok/status answered {response.status}")
        probes.append((t0, time.monotonic() - t0))
        stop.wait(args.probe_interval)
    return probes


# ---------------------------------------------------------------------------- orchestrator
def run_role(role: str, url: str, token: str, args: argparse.Namespace, watch: str) -> Any:
    cmd = [sys.executable, __file__, "--role", role, "--url", url, "--token", token,
           "--calls", str(args.calls), "--rounds", str(args.rounds), "--watch", watch]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {role} process failed:\n{done.stderr}")
    return json.loads(done.stdout)


def start_profiler(pid: int) -> subprocess.Popen[bytes] | None:
    out = os.environ.get("BYOK_BENCH_PROFILE")
    if not out:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    rate = os.environ.get("BYOK_BENCH_PROFILE_RATE", "250")
    cmd = [spy, "record", "-p", str(pid), "-o", out, "-f", "raw", "-r", rate, "--nonblocking"]
    cmd += os.environ.get("BYOK_BENCH_PROFILE_ARGS", "").split()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    time.sleep(1)
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=3, help="bursts of --calls streams")
    parser.add_argument("--probe-interval", type=float, default=0.02)
    parser.add_argument(
        "--role", choices=("floor", "streams", "fake", "probe"), help=argparse.SUPPRESS
    )
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--watch", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "probe":
        print(json.dumps(probe_role(args)))
        return 0
    if args.role:
        print(json.dumps(asyncio.run(load_role(args))))
        return 0

    import httpx

    from jupyter_byok.testing.process import fake_providers_process

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        fake_env = stack.enter_context(fake_providers_process(args.latency))
        fake_pids = [p for p in children_of(os.getpid()) if "jupyter_byok.testing" in
                     Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]  # fmt: skip
        server = stack.enter_context(jupyter_server(Path(tmp), fake_env))
        proc, url, token, headers = server.proc, server.url, server.token, server.headers
        watch = ",".join(str(p) for p in [proc.pid, *fake_pids])
        key = "sk-proj-" + "b" * 40 + "T3BlbkFJ" + "c" * 20
        httpx.post(
            url + "byok/keys",
            headers=headers,
            json={"provider": "openai", "key": key},
            trust_env=False,
        ).raise_for_status()

        floor = run_role("floor", url, token, args, watch)
        prober = subprocess.Popen(
            [sys.executable, __file__, "--role", "probe", "--url", url, "--token", token,
             "--probe-interval", str(args.probe_interval)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert prober.stdin is not None and prober.stdout is not None
        assert prober.stdout.readline().strip() == "ready"
        spy = start_profiler(proc.pid)
        prober_cpu0 = cpu_seconds(prober.pid)
        streams = run_role("streams", url, token, args, watch)
        prober_cpu = cpu_seconds(prober.pid) - prober_cpu0
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        prober.stdin.close()
        probes = json.loads(prober.stdout.read())
        prober.wait(timeout=30)
        fake_url = fake_env["JUPYTER_BYOK_OPENAI_BASE_URL"] + "/chat/completions"
        fake = run_role("fake", fake_url, token, args, watch)
    report(args, floor, streams, probes, prober_cpu, fake, proc.pid, fake_pids)
    return 0


def report(
    args: argparse.Namespace,
    floor: dict[str, Any],
    streams: dict[str, Any],
    probes: list[tuple[float, float]],
    prober_cpu: float,
    fake: dict[str, Any],
    server_pid: int,
    fake_pids: list[int],
) -> None:
    n, ideal = args.calls, streams["ideal_s"]

    def cpu(r: dict[str, Any]) -> str:
        server = r["cpu_s"].get(str(server_pid), float("nan"))
        fakes = sum(r["cpu_s"].get(str(p), 0.0) for p in fake_pids)
        ours = server + fakes + r["client_cpu_s"]
        others = max(r["machine_busy_s"] - ours, 0.0)
        return (
            f"CPU s: server {server:.2f} ({server / r['wall_s'] * 100:.0f}% of one core), "
            f"fake {fakes:.2f}, load client {r['client_cpu_s']:.2f}, rest of the machine "
            f"{others:.2f} ({others / r['wall_s']:.1f} cores)"
        )

    print(f"{n} concurrent requests through the Jupyter server, fake provider latency "
          f"{args.latency * 1000:.0f} ms, {os.cpu_count()} cores")  # fmt: skip
    print("framework floor (no provider call):")
    for path, r in floor.items():
        print(f"  GET /{path:<12} alone {r['single_s'] * 1000:6.1f} ms; {n} at once "
              f"{r['wall_s'] * 1000:6.1f} ms ({r['wall_s'] / n * 1e6:.0f} µs a request); {cpu(r)}")  # fmt: skip
    print("streamed completions:")
    print(f"  one call alone (ideal):  {ideal * 1000:7.1f} ms")
    ratios, in_burst = [], []
    for k, r in enumerate(streams["rounds"], 1):
        ratio = r["wall_s"] / ideal
        ratios.append(ratio)
        during = [lat for t0, lat in probes if r["t0"] <= t0 <= r["t1"]]
        in_burst += during
        status = (
            f"status during it: {len(during)} probes, median {statistics.median(during) * 1000:.1f} ms, "
            f"max {max(during) * 1000:.1f} ms"
            if during
            else "no status probe fell in it"
        )
        print(f"  burst {k}: {n} at once {r['wall_s'] * 1000:7.1f} ms, ratio {ratio:5.2f} "
              f"(target <= 1.5); call p50 {r['p50_s'] * 1000:.1f} ms, max {r['max_s'] * 1000:.1f} ms")  # fmt: skip
        print(f"           {cpu(r)}; {status}")
    idle = [
        lat for t0, lat in probes if not any(r["t0"] <= t0 <= r["t1"] for r in streams["rounds"])
    ]
    print(f"  median ratio over {len(ratios)} bursts: {statistics.median(ratios):.2f}")
    if in_burst:
        print(f"  GET /byok/status during the bursts: {len(in_burst)} probes, median "
              f"{statistics.median(in_burst) * 1000:.1f} ms, max {max(in_burst) * 1000:.1f} ms "
              f"(target max < 100 ms); idle: median {statistics.median(idle) * 1000:.1f} ms "
              f"over {len(idle)}; prober CPU {prober_cpu:.2f} s")  # fmt: skip
    fr = fake["round"]
    print("straight to the fake (same load client):")
    print(f"  one stream {fake['single_s'] * 1000:.1f} ms, {n} at once {fr['wall_s'] * 1000:.1f} ms "
          f"(ratio {fr['wall_s'] / fake['single_s']:.2f}); {cpu(fr)}")  # fmt: skip
    best = min(r["wall_s"] for r in streams["rounds"])
    med = statistics.median(r["wall_s"] for r in streams["rounds"])
    server_cpu = statistics.median(
        r["cpu_s"].get(str(server_pid), float("nan")) for r in streams["rounds"]
    )
    floor_cpu = floor["api/status"]["cpu_s"].get(str(server_pid), float("nan"))
    print("what the wall time is made of (median burst):")
    print(f"  {med * 1000:.0f} ms = provider latency {args.latency * 1000:.0f} ms + "
          f"{(med - args.latency) * 1000:.0f} ms; through the server ÷ straight to the fake: "
          f"{med / fr['wall_s']:.2f} (fastest burst {best * 1000:.0f} ms)")  # fmt: skip
    print(f"  the server process (one loop, a few threads, one GIL) spent {server_cpu * 1000:.0f} ms CPU on the {n} streams "
          f"({server_cpu / n * 1e6:.0f} µs a stream); jupyter_server spends {floor_cpu / n * 1e6:.0f} µs "
          f"on a trivial authenticated request ({floor_cpu / server_cpu * 100:.0f}% of a stream's)")  # fmt: skip
    print(f"  lower bounds on this machine: framework only, latency + {n} trivial requests' CPU = "
          f"{(args.latency + floor_cpu) * 1000:.0f} ms (ratio {(args.latency + floor_cpu) / ideal:.2f}); "
          f"this server's CPU for the streams = {server_cpu * 1000:.0f} ms "
          f"(ratio {server_cpu / ideal:.2f}); the target 1.5 × ideal = {1.5 * ideal * 1000:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
