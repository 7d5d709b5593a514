"""One abusive provider against a real Jupyter server: is the server still responsive, and
does its memory come back?

Loopback only, bounded, stops by itself. Starts the fake providers in a process of their own
(scripted with abusive answers, ``jupyter_byok/testing/abuse.py``) and a real ``jupyter
server`` with jupyter_byok pointed at them, stores a key, then, while another process sends
``GET /byok/status`` every ``--probe-interval`` seconds (20 ms), runs each phase in turn:

* ``huge``: a non-streamed answer of ``--huge-mb`` (200) MB: refused at the size cap, from
  its ``Content-Length``; ``huge-chunk``: the same without a length (read up to the cap);
* ``parse``: a non-streamed answer of 30 MB made of millions of tiny JSON values (under the
  cap, seconds of ``json.loads``): parsed in a worker process, the answer arrives;
* ``endless``: an endless stream, read until the server ends it at the cap;
* ``disconnect``: a slow (dripping) stream the client drops after 1 s (the call must be
  cancelled: a ``cancelled`` row, the provider connection closed).

For each phase it prints the status poll's worst and median latency during it (target: worst
under 250 ms) and the server's RSS; at the end the RSS before, at its peak, and after
(target: back within 50 MB of the baseline). Run:
``.venv/bin/python benchmarks/bench_abuse.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _server import jupyter_server

MIB = 1024 * 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------- roles
def fake_role() -> int:
    """The fake providers; stdin takes one JSON fault a line: [provider, kind, {opts}]."""
    from jupyter_byok.testing import FakeProviders

    with FakeProviders() as fake:
        print(json.dumps(fake.env()), flush=True)
        for line in sys.stdin:
            provider, kind, opts = json.loads(line)
            fake.add_fault(provider, kind, **opts)
            print("ok", flush=True)
    return 0


def probe_role(url: str, token: str, interval: float) -> int:
    """``GET /byok/status`` every ``interval`` s on one keep-alive connection until stdin
    closes; prints [(start, latency), ...]."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    headers = {"Authorization": f"token {token}"}
    stop = threading.Event()

    def wait_for_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_stdin, daemon=True).start()
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
        stop.wait(interval)
    print(json.dumps(probes))
    return 0


# ------------------------------------------------------------------------------- phases
def post(url: str, token: str, body: dict[str, Any], *, stream: bool) -> tuple[int, str]:
    import httpx

    headers = {"Authorization": f"token {token}"}
    with httpx.Client(timeout=120, trust_env=False) as client:
        if not stream:
            r = client.post(url + "byok/complete", json=body, headers=headers)
            return r.status_code, r.text[:300]
        with client.stream("POST", url + "byok/complete", json=body, headers=headers) as r:
            tail = ""
            for text in r.iter_text():
                tail = (tail + text)[-600:]
            return r.status_code, tail


def drop_stream(url: str, token: str, body: dict[str, Any], after: float) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    data = json.dumps(body).encode()
    head = (
        f"POST {parts.path}byok/complete HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: token {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port or 80)) as sock:
        sock.sendall(head + data)
        sock.settimeout(0.5)
        until = time.monotonic() + after
        while time.monotonic() < until:
            try:
                sock.recv(1 << 20)
            except TimeoutError:
                pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--huge-mb", type=int, default=200)
    parser.add_argument("--probe-interval", type=float, default=0.02)
    parser.add_argument("--role", choices=("fake", "probe"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "fake":
        return fake_role()
    if args.role == "probe":
        return probe_role(args.url, args.token, args.probe_interval)

    import httpx

    fake = subprocess.Popen(
        [sys.executable, __file__, "--role", "fake"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert fake.stdin is not None and fake.stdout is not None
    fake_env = json.loads(fake.stdout.readline())

    def fault(kind: str, **opts: Any) -> None:
        assert fake.stdin is not None and fake.stdout is not None
        fake.stdin.write(json.dumps(["openai", kind, opts]) + "\n")
        fake.stdin.flush()
        assert fake.stdout.readline().strip() == "ok"

    with tempfile.TemporaryDirectory() as tmp, jupyter_server(Path(tmp), fake_env) as server:
        proc, url, token, headers = server.proc, server.url, server.token, server.headers
        peak = [0.0]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], rss_mb(proc.pid))
                time.sleep(0.02)

        phases: list[tuple[str, float, float, str]] = []
        try:
            key = "sk-proj-" + "b" * 40 + "T3BlbkFJ" + "c" * 20
            httpx.post(
                url + "byok/keys", headers=headers, json={"provider": "openai", "key": key},
                trust_env=False,
            ).raise_for_status()  # fmt: skip
            call = {"model": "openai:gpt-4o-mini", "prompt": "hello", "feature": "bench"}
            for _ in range(5):  # warm: imports, pools, the first full collection
                assert post(url, token, call, stream=False)[0] == 200
                assert post(url, token, {**call, "stream": True}, stream=True)[0] == 200
            time.sleep(1.0)
            baseline = rss_mb(proc.pid)
            threading.Thread(target=sample, daemon=True).start()
            prober = subprocess.Popen(
                [sys.executable, __file__, "--role", "probe", "--url", url, "--token", token,
                 "--probe-interval", str(args.probe_interval)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert prober.stdin is not None and prober.stdout is not None
            assert prober.stdout.readline().strip() == "ready"
            time.sleep(0.5)

            def phase(name: str, run: Any) -> None:
                t0 = time.monotonic()
                outcome = run()
                phases.append((name, t0, time.monotonic(), outcome))
                time.sleep(0.5)

            fault("huge_body", size=args.huge_mb * MIB)
            phase("huge", lambda: post(url, token, call, stream=False))
            fault("huge_body", size=args.huge_mb * MIB, declare=False)
            phase("huge-chunk", lambda: post(url, token, call, stream=False))
            fault("huge_body", size=30 * MIB, shape="nested")
            phase("parse", lambda: post(url, token, call, stream=False))
            fault("endless_stream")
            phase("endless", lambda: post(url, token, {**call, "stream": True}, stream=True))
            fault("drip", interval=0.002)
            phase("disconnect", lambda: drop_stream(url, token, {**call, "stream": True}, 1.0))
            time.sleep(2.0)
            after = rss_mb(proc.pid)
            prober.stdin.close()
            probes = json.loads(prober.stdout.read())
            prober.wait(timeout=30)
            usage = httpx.get(
                url + "byok/usage", params={"since": "1d", "by": "status", "limit": "20"},
                headers=headers, trust_env=False,
            ).json()  # fmt: skip
        finally:
            sampling.set()
            fake.terminate()
            fake.wait(timeout=10)

    print(f"one abusive provider against a real Jupyter server; status poll every "
          f"{args.probe_interval * 1000:.0f} ms, {os.cpu_count()} cores")  # fmt: skip
    everything = []
    for name, t0, t1, outcome in phases:
        during = [lat for start, lat in probes if t0 <= start <= t1]
        everything += during
        summary = (
            f"{len(during)} polls, median {statistics.median(during) * 1000:.1f} ms, worst "
            f"{max(during) * 1000:.1f} ms"
            if during
            else "no poll"
        )
        said = outcome if isinstance(outcome, str) else (outcome or ("", ""))[1]
        status = (
            "" if outcome is None else f"HTTP {outcome[0]}: " if isinstance(outcome, tuple) else ""
        )
        print(f"  {name:<10} {t1 - t0:6.2f} s; status poll: {summary}")
        print(f"             {status}{' '.join(str(said).split())[-160:]}")
    print(f"status poll over all phases: {len(everything)} polls, worst "
          f"{max(everything) * 1000:.1f} ms (target < 250 ms)")  # fmt: skip
    print(f"server RSS: baseline {baseline:.0f} MB, peak {peak[0]:.0f} MB, after {after:.0f} MB "
          f"(after - baseline {after - baseline:+.0f} MB; target within 50 MB)")  # fmt: skip
    recent = [(r.get("status"), r.get("error_type"), r.get("cost_usd")) for r in usage["recent"]]
    print(f"ledger rows of the phases (status, error, cost): {recent[: len(phases)]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
