"""``local pull`` throughput from the loopback Hub against a plain ``curl`` of the same file.

The fake Hub (``python -m jupyter_byok.testing.hub``) runs in a process of its own and
serves the embedded SmolLM2 file (94 MiB) with ``sendfile``. Each round, interleaved and
alternating which goes first:

- **curl**: ``curl -s -o FILE URL`` of the resolve URL: bytes to a new file, nothing else;
- **pull**: ``jupyter_byok.local_models.pull("hf:...")`` into a fresh home: the model-info
  call (LFS SHA-256 and size), the metadata HEAD, the download through huggingface_hub's
  ``http_get``, the SHA-256 computed while downloading, the GGUF header read, the
  registration.

Reported: the median of each and the ratio curl time / pull time (target >= 0.8: the
verification overlaps the download instead of adding passes over the file). For scale, the
same download through ``http_get`` without hashing, and one SHA-256 pass over the file.

    .venv/bin/python benchmarks/bench_local_pull.py            # 7 rounds
    .venv/bin/python benchmarks/bench_local_pull.py --quick    # 2 rounds
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from _home import use_home

TARGET = 0.8


@contextmanager
def hub_process() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_byok.testing.hub"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("export HF_ENDPOINT="):
            raise RuntimeError(f"the fake Hub did not start: {line!r}")
        yield line.strip().split("=", 1)[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    if shutil.which("curl") is None:
        print("curl is needed: apt-get install curl", file=sys.stderr)
        return 2

    from jupyter_byok.providers.local import embedded_model_path
    from jupyter_byok.testing.hub import EMBEDDED_FILENAME, EMBEDDED_REPO

    source = embedded_model_path()
    size = source.stat().st_size
    spec = f"hf:{EMBEDDED_REPO}/{EMBEDDED_FILENAME}"
    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    results: dict[str, list[float]] = {"curl": [], "pull": [], "http_get": [], "sha256": []}
    try:
        with hub_process() as endpoint:
            os.environ["HF_ENDPOINT"] = endpoint
            os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
            url = f"{endpoint}/{EMBEDDED_REPO}/resolve/main/{EMBEDDED_FILENAME}"
            from huggingface_hub.file_download import http_get
            from tqdm import tqdm

            from jupyter_byok.local_models import pull

            class Silent(tqdm):  # type: ignore[type-arg]
                def __init__(self, *a: object, **k: object) -> None:
                    k["disable"] = True
                    super().__init__(*a, **k)

            def curl(i: int) -> None:
                # a new file each round, as the pull writes one (rewriting a file that
                # exists is several times faster on ext4, which would flatter curl)
                out = str(work / f"curl-{i}.gguf")
                subprocess.run(["curl", "-s", "-f", "-o", out, url], check=True)

            def ours(i: int) -> None:
                use_home(work / f"home-{i}")
                result = pull(spec)
                assert result.status == "pulled" and result.size_bytes == size, result

            def plain() -> None:
                (work / "http_get.gguf").unlink(missing_ok=True)
                with (work / "http_get.gguf").open("wb") as fh:
                    http_get(url, fh, tqdm_class=Silent)

            def hash_pass() -> None:
                digest = hashlib.sha256()
                with source.open("rb") as fh:
                    while block := fh.read(8 * 1024**2):
                        digest.update(block)

            curl(-1)
            ours(-1)  # warm: imports, page cache, connections
            for i in range(rounds):
                pair = [("curl", lambda i=i: curl(i)), ("pull", lambda i=i: ours(i))]
                for name, fn in pair if i % 2 == 0 else reversed(pair):
                    results[name].append(timed(fn))
                shutil.rmtree(work / f"home-{i}", ignore_errors=True)
                (work / f"curl-{i}.gguf").unlink()
                results["http_get"].append(timed(plain))
                results["sha256"].append(timed(hash_pass))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mib = size / 1024**2
    print(
        f"file: {EMBEDDED_FILENAME}, {mib:.1f} MiB; {rounds} interleaved rounds; cpus {os.cpu_count()}"
    )
    print(f"{'':28}{'median s':>10}{'MiB/s':>10}{'min s':>9}{'max s':>9}")
    labels = {
        "curl": "curl -o FILE",
        "pull": "local pull (verified)",
        "http_get": "http_get, no hashing",
        "sha256": "one SHA-256 pass",
    }
    for name, label in labels.items():
        times = results[name]
        median = statistics.median(times)
        print(
            f"{label:<28}{median:>10.3f}{mib / median:>10.0f}{min(times):>9.3f}{max(times):>9.3f}"
        )
    ratio = statistics.median(results["curl"]) / statistics.median(results["pull"])
    per_round = [c / p for c, p in zip(results["curl"], results["pull"], strict=True)]
    print(
        f"ratio curl/pull (medians): {ratio:.2f}  (per round: "
        + ", ".join(f"{r:.2f}" for r in per_round)
        + f"); target >= {TARGET}: {'PASS' if ratio >= TARGET else 'FAIL'}"
    )
    plain = statistics.median(results["http_get"]) / statistics.median(results["pull"])
    print(
        f"ratio http_get/pull (medians): {plain:.2f}  (what verification, the GGUF check and "
        "registration cost over huggingface_hub's own unverified download)"
    )
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
