"""``Pipeline.map(..., mode="batch")`` against the fake providers' batch endpoints: uploads
within size limits, one ledger row per item at batch rates, resuming after a killed
kernel, failed and expired items, cancellation, budgets, and keys kept out of batch files.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

import jupyter_byok
from jupyter_byok import budgets, pricing
from jupyter_byok import engine as engine_module
from jupyter_byok._runner import run_sync
from jupyter_byok.errors import BudgetExceededError, ByokError
from jupyter_byok.keys import Keystore
from jupyter_byok.ledger import default_ledger
from jupyter_byok.pipeline import Pipeline
from jupyter_byok.providers.batches import SizeLimits
from jupyter_byok.providers.batches import openai as openai_batches
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Usage

OPENAI_KEY = "sk-canary-batch-" + "o" * 32
ANTHROPIC_KEY = "sk-ant-canary-batch-" + "a" * 32
POLL = 0.02


@pytest.fixture(autouse=True)
def fresh_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(engine_module, "_engine", None)
    yield
    engine = engine_module._engine
    if engine is not None:
        run_sync(engine.aclose())


@pytest.fixture
def fake(fake_providers: FakeProviders) -> FakeProviders:
    Keystore().set("openai", OPENAI_KEY)
    Keystore().set("anthropic", ANTHROPIC_KEY)
    return fake_providers


def two_node(name: str = "tickets") -> Pipeline:
    p = Pipeline(name)
    p.llm("summary", "openai:gpt-4o-mini", "Summarize: {input.text}", max_tokens=32)
    p.llm("label", "anthropic:claude-haiku-4-5", "Label this: {summary}", max_tokens=32)
    return p


def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"ticket {i} printer broken" for i in range(n)]})


def creates(fake: FakeProviders) -> dict[str, int]:
    """Batch-creating requests seen by the fake, by kind."""
    out = {"openai_files": 0, "openai_batches": 0, "anthropic": 0, "gemini": 0}
    for r in fake.requests:
        if r.method != "POST":
            continue
        if r.provider == "openai" and r.path.endswith("/files"):
            out["openai_files"] += 1
        elif r.provider == "openai" and r.path.endswith("/batches"):
            out["openai_batches"] += 1
        elif r.provider == "anthropic" and r.path.endswith("/messages/batches"):
            out["anthropic"] += 1
        elif r.provider == "gemini" and r.path.endswith(":batchGenerateContent"):
            out["gemini"] += 1
    return out


def batch_rows() -> pd.DataFrame:
    rows = jupyter_byok.usage()
    return rows[rows["feature"] == "batch"]


def test_ten_thousand_rows_two_nodes_one_upload_each_and_batch_prices(
    fake: FakeProviders,
) -> None:
    p = two_node()
    df = frame(10_000)
    out = p.map(df, mode="batch", poll_s=POLL)

    assert creates(fake) == {"openai_files": 1, "openai_batches": 1, "anthropic": 1, "gemini": 0}
    (upload,) = [r for r in fake.requests if r.path.endswith("/files")]
    assert str(upload.body).count('"custom_id"') == 10_000
    assert len(str(upload.body).encode()) <= openai_batches.LIMITS.max_bytes
    (labels,) = [r for r in fake.requests if r.path.endswith("/messages/batches")]
    assert len(labels.body["requests"]) == 10_000
    assert list(out.index) == list(df.index) and out["error"].isna().all()
    assert out.loc[7, "summary"] == "Echo: Summarize: ticket 7 printer broken"
    assert out.loc[7, "label"] == "Echo: Label this: Echo: Summarize: ticket 7 printer broken"

    rows = batch_rows()
    assert rows.groupby("node").size().to_dict() == {"label": 10_000, "summary": 10_000}
    assert (rows["status"] == "ok").all() and (rows["cost_source"] == "computed").all()
    # every item priced at the batch rate from its own usage, to 1e-9
    batch_total = sync_total = Decimal(0)
    for r in rows.itertuples():
        usage = Usage(input_tokens=int(r.input_tokens), output_tokens=int(r.output_tokens))
        at_batch = pricing.compute_cost(r.provider, r.model, usage, service_tier="batch")
        now = pricing.compute_cost(r.provider, r.model, usage)
        assert at_batch.cost_usd is not None and now.cost_usd is not None
        assert abs(Decimal(str(r.cost_usd)) - at_batch.cost_usd) < Decimal("1e-9")
        batch_total += Decimal(str(r.cost_usd))
        sync_total += now.cost_usd
    assert abs(batch_total - sync_total / 2) < Decimal("1e-9")
    assert abs(Decimal(str(out["cost_usd"].sum())) - batch_total) < Decimal("1e-6")
    # the same usage bought synchronously costs twice as much
    sync = p.map(df.head(3))
    assert list(sync["input_tokens"]) == list(out["input_tokens"].head(3))
    for got, want in zip(sync["cost_usd"], out["cost_usd"].head(3), strict=True):
        assert abs(got - 2 * want) < 1e-12
    assert fake.errors == []


def test_size_limits_split_a_node_into_several_uploads(
    fake: FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openai_batches, "LIMITS", SizeLimits(max_requests=40, max_bytes=10**6))
    p = Pipeline("split")
    p.llm("summary", "openai:gpt-4o-mini", "Summarize: {input.text}", max_tokens=8)
    out = p.map(frame(100), mode="batch", poll_s=POLL)
    assert creates(fake)["openai_batches"] == 3 and creates(fake)["openai_files"] == 3
    sizes = []
    for r in fake.requests:
        if r.path.endswith("/files"):
            sizes.append(str(r.body).count('"custom_id"'))
    assert sizes == [40, 40, 20]
    assert out["error"].isna().all() and len(batch_rows()) == 100


def test_estimate_shows_both_prices(fake: FakeProviders) -> None:
    est = two_node().estimate(frame(50))
    assert est.batch_cost_usd is not None
    assert abs(est.batch_cost_usd * 2 - est.cost_usd) < Decimal("1e-12")
    assert est.compare() == (
        f"≈ ${est.batch_cost_usd:.2f} in batch mode vs ≈ ${est.cost_usd:.2f} now"
    )


def test_a_blocking_budget_uploads_nothing(fake: FakeProviders) -> None:
    budgets.set_budget("day", "0.0001")
    with pytest.raises(BudgetExceededError, match="before anything is uploaded"):
        two_node().map(frame(200), mode="batch", poll_s=POLL)
    assert creates(fake) == {"openai_files": 0, "openai_batches": 0, "anthropic": 0, "gemini": 0}
    assert [r.method for r in fake.requests] == []
    rows = batch_rows()
    assert list(rows["status"]) == ["blocked"]


def test_failed_and_expired_items_per_row_then_retried(fake: FakeProviders) -> None:
    fake.batches.fail_items("openai", "error", custom_ids=["r1"])
    fake.batches.fail_items("openai", "expired", custom_ids=["r3"])
    p = two_node("retry")
    df = frame(6)
    handle = p.map(df, mode="batch", wait=False, poll_s=POLL)
    out = handle.result()
    assert out["error"].notna().tolist() == [False, True, False, True, False, False]
    assert "error:" in out.loc[1, "error"] and "expired" in out.loc[3, "error"]
    assert pd.isna(out.loc[1, "summary"]) and pd.isna(out.loc[1, "label"])
    rows = batch_rows()
    failed = rows[rows["status"] == "error"]
    assert len(failed) == 2 and failed["cost_usd"].isna().all()
    assert len(rows[(rows["node"] == "label")]) == 4  # failed rows are not sent downstream

    fake.batches.clear_failures()
    before = creates(fake)
    fixed = handle.retry_failed(mode="sync")
    assert fixed["error"].isna().all()
    assert fixed.loc[3, "label"] == "Echo: Label this: Echo: Summarize: ticket 3 printer broken"
    assert creates(fake) == before  # sync: no new batch
    assert fixed.loc[0, "cost_usd"] == out.loc[0, "cost_usd"]  # kept, not paid again


def test_retry_failed_in_batch_mode(fake: FakeProviders) -> None:
    fake.batches.fail_items("anthropic", "expired", custom_ids=["r0", "r2"])
    handle = two_node("retry-b").map(frame(4), mode="batch", wait=False, poll_s=POLL)
    assert handle.result()["error"].notna().sum() == 2
    fake.batches.clear_failures()
    fixed = handle.retry_failed(mode="batch")
    assert fixed["error"].isna().all()
    assert creates(fake)["anthropic"] == 2 and creates(fake)["openai_batches"] == 1
    label_batches = [r for r in fake.requests if r.path.endswith("/messages/batches")]
    assert len(label_batches[-1].body["requests"]) == 2  # only the two that expired


def test_cancel_ends_every_batch_in_flight(fake: FakeProviders) -> None:
    fake.batches.hold = True
    p = Pipeline("cancel")
    p.llm("a", "openai:gpt-4o-mini", "A {input.text}", max_tokens=8)
    p.llm("b", "anthropic:claude-haiku-4-5", "B {input.text}", max_tokens=8)
    p.llm("c", "anthropic:claude-haiku-4-5", "C {a} {b}", max_tokens=8)
    handle = p.map(frame(5), mode="batch", wait=False, poll_s=POLL)
    table = handle.status()
    assert sorted(table["node"]) == ["a", "b"] and set(table["state"]) <= {
        "validating", "in_progress"
    }  # fmt: skip
    table = handle.cancel()
    assert set(table["state"]) <= {"cancelling", "cancelled"}
    out = handle.result()
    assert all(b.cancelled_at is not None for b in fake.batches.batches.values())
    assert {b.provider for b in fake.batches.batches.values()} == {"openai", "anthropic"}
    assert out["error"].str.contains("cancelled").all()
    assert creates(fake)["anthropic"] == 1  # node c was never submitted
    rows = batch_rows()
    assert set(rows["status"]) == {"cancelled"} and (rows["cost_usd"] == 0).all()


def test_nodes_without_a_batch_api_run_as_a_map_with_a_note(
    fake: FakeProviders, capsys: pytest.CaptureFixture[str]
) -> None:
    Keystore().set("xai", "xai-canary-" + "x" * 30)
    p = Pipeline("mixed")
    p.llm("a", "xai:grok-4.3", "A {input.text}", max_tokens=32)
    p.python("n", lambda a: len(a))
    p.llm("b", "openai:gpt-4o-mini", "B {a} {n}", max_tokens=32)
    out = p.map(frame(3), mode="batch", poll_s=POLL)
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "'a' (xai:grok-4.3) has no provider batch API" in err
    assert out.loc[0, "n"] == len("Echo: A ticket 0 printer broken")
    assert out.loc[0, "b"] == f"Echo: B Echo: A ticket 0 printer broken {out.loc[0, 'n']}"
    assert creates(fake)["openai_batches"] == 1


def test_bad_options_are_one_line_errors(fake: FakeProviders) -> None:
    p = two_node()
    with pytest.raises(ByokError, match='mode must be "sync" or "batch"'):
        p.map(frame(1), mode="fast")
    with pytest.raises(ByokError, match='only apply with mode="batch"'):
        p.map(frame(1), wait=False)


def test_keys_never_reach_batch_files_the_ledger_or_the_result(fake: FakeProviders) -> None:
    out = two_node().map(frame(5), mode="batch", poll_s=POLL)
    for r in fake.requests:
        assert OPENAI_KEY not in str(r.body) and ANTHROPIC_KEY not in str(r.body)
        assert OPENAI_KEY not in r.path and ANTHROPIC_KEY not in r.path
    for content in fake.batches.files.values():
        assert OPENAI_KEY.encode() not in content
    default_ledger().close()
    home = Path(os.environ["JUPYTER_BYOK_HOME"])
    for path in home.rglob("*"):
        if path.is_file() and path.name != "keystore.json":
            data = path.read_bytes()
            assert OPENAI_KEY.encode() not in data and ANTHROPIC_KEY.encode() not in data
    assert OPENAI_KEY not in out.to_csv()


KILLED = textwrap.dedent(
    """
    import pandas as pd
    from jupyter_byok.pipeline import Pipeline
    p = Pipeline("resume")
    p.llm("summary", "openai:gpt-4o-mini", "Summarize: {input.text}", max_tokens=32)
    p.llm("label", "anthropic:claude-haiku-4-5", "Label this: {summary}", max_tokens=32)
    df = pd.DataFrame({"text": [f"ticket {i} printer broken" for i in range(20)]})
    p.map(df, mode="batch", poll_s=0.02)
    """
)


def test_kernel_killed_mid_wait_then_map_again_submits_nothing_new(
    fake: FakeProviders, tmp_path: Path
) -> None:
    fake.batches.hold = True
    script = tmp_path / "kernel.py"
    script.write_text(KILLED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    kernel = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        deadline = time.monotonic() + 30
        polls = 0
        while time.monotonic() < deadline and polls < 3:
            polls = sum(1 for r in fake.requests if r.method == "GET" and "/batches/" in r.path)
            assert kernel.poll() is None, "the kernel ended before it was killed"
            time.sleep(0.02)
        assert polls >= 3, "the kernel never waited on its batch"
    finally:
        kernel.send_signal(signal.SIGKILL)
        kernel.wait()
    assert creates(fake) == {"openai_files": 1, "openai_batches": 1, "anthropic": 0, "gemini": 0}
    # the batch and its items survived the kill, in the ledger database
    db = sqlite3.connect(Path(os.environ["JUPYTER_BYOK_HOME"]) / "ledger.sqlite3")
    assert db.execute("SELECT count(*) FROM batch_items").fetchone() == (20,)
    db.close()

    fake.batches.hold = False
    p = two_node("resume")
    out = p.map(frame(20), mode="batch", poll_s=POLL)
    assert creates(fake) == {"openai_files": 1, "openai_batches": 1, "anthropic": 1, "gemini": 0}
    assert out["error"].isna().all() and out.loc[19, "label"].endswith("ticket 19 printer broken")
    assert batch_rows().groupby("node").size().to_dict() == {"label": 20, "summary": 20}
    assert "attached" in " ".join(out.attrs["notes"])


def test_gemini_nodes_go_inline_or_as_a_file(
    fake: FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_byok.providers.batches import gemini as gemini_batches

    Keystore().set("gemini", "AIzaSy" + "G" * 33)
    monkeypatch.setattr(gemini_batches, "INLINE_MAX", 5)
    p = Pipeline("gem")
    p.llm("short", "gemini:gemini-2.5-flash", "Short: {input.text}", max_tokens=32)
    small = p.map(frame(4), mode="batch", poll_s=POLL)
    assert not [r for r in fake.requests if "/upload/" in r.path]
    big = p.map(frame(12), mode="batch", poll_s=POLL)
    assert len([r for r in fake.requests if "/upload/" in r.path]) == 2  # start, finalize
    assert creates(fake)["gemini"] == 2
    for out in (small, big):
        assert out["error"].isna().all()
        assert out.loc[3, "short"] == "Echo: Short: ticket 3 printer broken"
    assert len(batch_rows()) == 16


def test_progress_shows_states_counts_elapsed_and_spend(
    fake: FakeProviders, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.batches.set_timing(validating=0.3, in_progress=0.1)
    budgets.set_budget("month", "100")  # an estimate is made, and shown
    out = two_node("progress").map(frame(3), mode="batch", poll_s=POLL, progress=True)
    err = capsys.readouterr().err
    assert err.startswith("estimate: ≈ $0.00 in batch mode vs ≈ $0.00 now\n")
    assert out.attrs["estimate"] == err.splitlines()[0].removeprefix("estimate: ")
    assert "summary [openai batch_" in err and "label [anthropic msgbatch_" in err
    assert re.search(r"summary \[openai batch_\w+\]: (validating|in_progress), 0/3 done", err)
    assert "completed, 3/3 done, 0 failed" in err
    assert "label: waiting for its inputs" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("elapsed ") and ", spent $0.0" in last and not last.endswith("$0.0000")


def test_every_batch_provider_model_has_a_dated_sourced_batch_rate() -> None:
    import json

    table = json.loads(Path(pricing.BUILTIN_PATH).read_text())
    assert "batch" in table["sources"] and table["version"]
    for key, entry in table["models"].items():
        if key.split(":")[0] in ("openai", "anthropic", "gemini"):
            assert entry["service_tiers"]["batch"] == {"multiplier": "0.5"}, key
            assert entry["source"] in table["sources"], key


def test_local_models_run_as_a_concurrent_map_with_a_note(
    fake: FakeProviders, capsys: pytest.CaptureFixture[str]
) -> None:
    p = Pipeline("local-mix")
    p.llm("draft", "local:smollm2", "Say yes to {input.text}.", max_tokens=4, n_threads=1)
    p.llm("check", "openai:gpt-4o-mini", "Check: {draft}", max_tokens=64)
    out = p.map(frame(2), mode="batch", poll_s=POLL, concurrency=1)
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "'draft' (local:smollm2) has no provider batch API" in err
    assert out["error"].isna().all() and all(out["draft"].str.len() > 0)
    # the fake echoes the prompt's words
    assert out.loc[1, "check"] == " ".join(["Echo:", "Check:", *out.loc[1, "draft"].split()])
    rows = jupyter_byok.usage()
    assert set(rows[rows["provider"] == "local"]["feature"]) == {"pipeline"}
    assert len(batch_rows()) == 2 and creates(fake)["openai_batches"] == 1


def test_a_whole_batch_that_expires_is_reported_per_row(fake: FakeProviders) -> None:
    fake.batches.expire_batch("openai")
    out = two_node("expire").map(frame(3), mode="batch", poll_s=POLL)
    assert out["error"].str.startswith("node 'summary': expired").all()
    rows = batch_rows()
    assert list(rows["status"]) == ["error"] * 3 and rows["cost_usd"].isna().all()


@pytest.mark.asyncio
async def test_interrupting_the_wait_says_the_batches_keep_running(
    fake: FakeProviders, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    fake.batches.hold = True
    p = two_node("interrupt")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(p.amap(frame(2), mode="batch", poll_s=POLL), 0.5)
    assert "run the same map again to attach" in capsys.readouterr().err
    fake.batches.hold = False
    out = await p.amap(frame(2), mode="batch", poll_s=POLL)
    assert out["error"].isna().all() and creates(fake)["openai_batches"] == 1


def test_a_result_file_over_the_cap_is_refused_and_nothing_is_lost(
    fake: FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = Pipeline("capped")
    p.llm("summary", "openai:gpt-4o-mini", "Summarize: {input.text}", max_tokens=32)
    df = frame(50)
    monkeypatch.setenv("JUPYTER_BYOK_MAX_BATCH_RESULT_BYTES", "2000")
    with pytest.raises(ByokError, match=r"batch results are larger than 2,000 bytes") as refused:
        p.map(df, mode="batch", poll_s=POLL)
    assert "\n" not in str(refused.value) and OPENAI_KEY not in str(refused.value)
    assert "JUPYTER_BYOK_MAX_BATCH_RESULT_BYTES" in str(refused.value)
    assert len(batch_rows()) == 0  # nothing recorded from a file that was not read
    monkeypatch.setenv("JUPYTER_BYOK_MAX_BATCH_RESULT_BYTES", "zero")
    with pytest.raises(ByokError, match="not a positive whole number"):
        p.map(df, mode="batch", poll_s=POLL)
    monkeypatch.delenv("JUPYTER_BYOK_MAX_BATCH_RESULT_BYTES")
    out = p.map(df, mode="batch", poll_s=POLL)  # attaches to the same batch
    assert creates(fake)["openai_batches"] == 1
    assert (
        out["error"].isna().all()
        and out.loc[9, "summary"] == "Echo: Summarize: ticket 9 printer broken"
    )
    assert len(batch_rows()) == 50
