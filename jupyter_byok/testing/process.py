"""The fake providers in a process of their own (so they do not share a GIL with the code
under test or a load generator): ``with fake_providers_process(latency=0.05) as env: ...``
gives the ``JUPYTER_BYOK_<PROVIDER>_BASE_URL`` variables that point at it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

__all__ = ["fake_providers_process"]


@contextlib.contextmanager
def fake_providers_process(latency: float = 0.0) -> Iterator[dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_byok.testing", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        env: dict[str, str] = {}
        while len(env) < 5:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("the fake providers process ended before it was ready")
            if line.startswith("export "):
                name, value = line.strip().removeprefix("export ").split("=", 1)
                env[name] = value
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=10)
