"""``jupyter byok batches list|status|cancel|fetch`` on batches a map submitted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from jupyter_byok import engine as engine_module
from jupyter_byok._runner import run_sync
from jupyter_byok.cli import main
from jupyter_byok.keys import Keystore
from jupyter_byok.pipeline import Pipeline
from jupyter_byok.testing import FakeProviders


@pytest.fixture(autouse=True)
def fresh_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(engine_module, "_engine", None)
    yield
    engine = engine_module._engine
    if engine is not None:
        run_sync(engine.aclose())


def test_list_status_cancel_fetch(
    fake_providers: FakeProviders, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    Keystore().set("openai", "sk-cli-batch-" + "c" * 30)
    fake_providers.batches.hold = True
    p = Pipeline("cli")
    p.llm("summary", "openai:gpt-4o-mini", "Summarize: {input.text}", max_tokens=16)
    df = pd.DataFrame({"text": ["one", "two", "three"]})
    handle = p.map(df, mode="batch", wait=False, poll_s=0.02)
    (first,) = handle.status()["batch"]

    assert main(["batches", "list", "--active"]) == 0
    listed = capsys.readouterr().out
    assert first[:12] in listed and "cli/summary" in listed and "in_progress" in listed

    assert main(["batches", "fetch", first[:12]]) == 0
    assert "still running" in capsys.readouterr().out

    fake_providers.batches.hold = False
    assert main(["batches", "status", first[:12]]) == 0
    assert "completed" in capsys.readouterr().out
    out = tmp_path / "items.csv"
    assert main(["batches", "fetch", first[:12], "--output", str(out)]) == 0
    assert "3 item(s) written" in capsys.readouterr().out
    items = pd.read_csv(out)
    assert list(items["text"]) == [
        "Echo: Summarize: one",
        "Echo: Summarize: two",
        "Echo: Summarize: three",
    ]
    assert (items["cost_usd"] > 0).all()
    # the map's handle sees what the CLI fetched
    assert list(handle.result()["summary"]) == list(items["text"])

    fake_providers.batches.hold = True
    second = p.map(df.head(1), mode="batch", wait=False, poll_s=0.02)
    (bid,) = second.status()["provider_batch_id"]
    assert main(["batches", "cancel", bid]) == 0
    assert "cancelling" in capsys.readouterr().out
    assert main(["batches", "status", "no-such-batch"]) == 1
    assert "batches list" in capsys.readouterr().err
    assert main(["batches", "forget", bid]) == 1  # still cancelling
    assert "cancel it first" in capsys.readouterr().err
    assert main(["batches", "forget", first[:12]]) == 0
    assert "ledger rows stay" in capsys.readouterr().out
    assert main(["batches", "list"]) == 0
    assert first[:12] not in capsys.readouterr().out
