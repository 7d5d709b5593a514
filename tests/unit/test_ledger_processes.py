"""Many processes calling providers at once share one ledger: nothing lost, nothing doubled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from jupyter_byok.ledger import default_ledger
from jupyter_byok.testing import FakeProviders

WORKER = """
import sys
import jupyter_byok
for i in range(int(sys.argv[1])):
    jupyter_byok.complete("openai:gpt-4o-mini", f"worker {sys.argv[2]} call {i}", feature="load")
"""


def test_8_processes_x_500_calls_through_the_engine(
    fake_providers: FakeProviders, byok_home: Path
) -> None:
    procs, calls = 8, 500
    env = {**os.environ, **fake_providers.env(), "OPENAI_API_KEY": "sk-proj-" + "L" * 60}
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(calls), str(n)], env=env)
        for n in range(procs)
    ]
    assert [w.wait(timeout=300) for w in workers] == [0] * procs

    ledger = default_ledger()
    frame = ledger.frame()
    assert len(frame) == procs * calls == ledger.count()
    assert frame["id"].is_unique and frame["request_id"].is_unique
    assert set(frame["status"]) == {"ok"} and set(frame["feature"]) == {"load"}
    assert ledger.integrity_check() == "ok"
    assert len(fake_providers.requests_for("openai")) == procs * calls
