"""PipelineBuilder (the node canvas) driven through its model, without a browser: the
messages the canvas sends (``builder.handle``) and the synced traits it draws from, against
the fake providers and the embedded local model."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import jupyter_byok
from jupyter_byok import engine as engine_module
from jupyter_byok._runner import run_sync
from jupyter_byok.keys import Keystore
from jupyter_byok.pipeline import Pipeline
from jupyter_byok.testing import FakeProviders
from jupyter_byok.widgets import PipelineBuilder
from jupyter_byok.widgets.builder import FLUSH_S, replace_references

CANARY = "sk-ant-api03-BUILDERCANARY" + "b" * 40
OPENAI = "sk-test-builder-" + "o" * 30


@pytest.fixture(autouse=True)
def fresh_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(engine_module, "_engine", None)
    yield
    engine = engine_module._engine
    if engine is not None:
        run_sync(engine.aclose())


@pytest.fixture
def fake(fake_providers: FakeProviders) -> FakeProviders:
    Keystore().set("openai", OPENAI)
    Keystore().set("tavily", "tvly-dev-builder" + "t" * 20)
    return fake_providers


def edges(builder: PipelineBuilder) -> set[tuple[str, str]]:
    return {(e["source"], e["target"]) for e in builder.edges}


def state_text(builder: PipelineBuilder) -> str:
    return json.dumps(builder.get_state(), default=str)


def ledger_rows(pipeline: str) -> Any:
    rows = jupyter_byok.usage()
    return rows[rows["pipeline"] == pipeline]


def test_palette_adds_every_kind_and_the_model_list_is_priced(fake: FakeProviders) -> None:
    builder = PipelineBuilder()
    ids = {m["id"]: m["label"] for m in builder.models}
    assert "openai:gpt-4o-mini" in ids and "$0.15 in" in ids["openai:gpt-4o-mini"]
    assert "local:smollm2" in ids and "$0" in ids["local:smollm2"]
    # no key for anthropic yet: its models are not offered; after the panel adds one, they are
    assert "anthropic:claude-haiku-4-5" not in ids
    Keystore().set("anthropic", CANARY)
    builder.handle({"type": "refresh"})
    assert "anthropic:claude-haiku-4-5" in {m["id"] for m in builder.models}

    builder.handle({"type": "add", "kind": "llm", "model": "openai:gpt-4o-mini", "x": 5, "y": 6})
    builder.handle({"type": "add", "kind": "search"})
    builder.handle({"type": "add", "kind": "python", "function": "textwrap:dedent"})
    builder.handle({"type": "add", "kind": "input", "name": "text"})
    assert list(builder.pipeline.nodes) == ["llm_1", "search_1", "python_1"]
    assert [c["kind"] for c in builder.nodes] == ["llm", "search", "python", "input"]
    assert builder.card("llm_1")["model"] == "openai:gpt-4o-mini"
    assert builder.pipeline.positions["llm_1"] == (5.0, 6.0)
    assert builder.card("input.text")["kind"] == "input"

    builder.handle({"type": "add", "kind": "python"})
    assert "module:function" in builder.run_state["message"]
    builder.handle({"type": "add", "kind": "llm", "name": "llm_1"})
    assert "already has a node 'llm_1'" in builder.run_state["message"]
    builder.handle({"type": "add", "kind": "robot"})
    assert "use one of llm, search, python, input" in builder.run_state["message"]

    # the card editor: model, prompt, max tokens, temperature, rename
    builder.handle(
        {
            "type": "update",
            "name": "llm_1",
            "changes": {
                "template": "Summarize {input.text}",
                "max_tokens": "40",
                "temperature": "0.5",
                "model": "local:smollm2",
            },
        }
    )
    node = builder.pipeline["llm_1"]
    assert node.template == "Summarize {input.text}"  # type: ignore[union-attr]
    assert node.params == {"max_tokens": 40, "temperature": 0.5}  # type: ignore[union-attr]
    assert node.model == "local:smollm2"  # type: ignore[union-attr]
    builder.handle({"type": "update", "name": "llm_1", "changes": {"temperature": "9"}})
    assert "between 0.0 and 2.0" in builder.run_state["message"]
    assert CANARY not in state_text(builder) and OPENAI not in state_text(builder)


def test_references_are_wires_both_ways(fake: FakeProviders) -> None:
    p = Pipeline("wires")
    p.llm("a", "openai:gpt-4o-mini", "Hello {input.who}", max_tokens=10)
    p.llm("b", "openai:gpt-4o-mini", "Then {a}")
    p.search("c", "about {input.who}")
    builder = PipelineBuilder(p)
    assert edges(builder) == {("a", "b"), ("input.who", "a"), ("input.who", "c")}
    assert p.edges == [("a", "b")]

    # drawing a wire inserts the reference; deleting it removes the reference
    builder.handle({"type": "connect", "source": "b", "target": "c"})
    assert p["c"].template == "about {input.who} {b}"  # type: ignore[union-attr]
    assert ("b", "c") in edges(builder)
    builder.handle({"type": "disconnect", "source": "input.who", "target": "c"})
    assert p["c"].template == "about {b}"  # type: ignore[union-attr]
    assert ("input.who", "c") not in edges(builder)
    builder.handle({"type": "connect", "source": "input.who", "target": "b"})
    assert p["b"].template == "Then {a} {input.who}"  # type: ignore[union-attr]

    # code edits and refresh() redraw the canvas
    p.llm("d", "local:smollm2", "Last: {b} {c.results[0]}", max_tokens=8)
    builder.refresh()
    assert {("b", "d"), ("c", "d")} <= edges(builder)
    # renaming a card renames the references: the wires stay
    builder.handle({"type": "update", "name": "c", "changes": {"name": "sources"}})
    assert p["d"].template == "Last: {b} {sources.results[0]}"  # type: ignore[union-attr]
    assert ("sources", "d") in edges(builder)
    # removing a card removes the references to it
    builder.handle({"type": "remove", "name": "b"})
    assert "b" not in p and p["d"].template == "Last: {sources.results[0]}"  # type: ignore[union-attr]
    assert not [e for e in builder.edges if "b" in (e["source"], e["target"])]
    # a python node takes values by parameter name: a wire to it is refused, on its card
    builder.handle({"type": "add", "kind": "python", "name": "py", "function": "textwrap:dedent"})
    builder.handle({"type": "connect", "source": "a", "target": "py"})
    assert "parameter named 'a'" in builder.card("py")["problem"]
    assert replace_references("x {a} {{a}} {ab} {a.b[0]}", "a", None) == "x {{a}} {ab}"


def test_cycles_and_unknown_references_are_refused_on_the_card(fake: FakeProviders) -> None:
    p = Pipeline("loops")
    p.llm("a", "openai:gpt-4o-mini", "Start {input.x}")
    p.llm("b", "openai:gpt-4o-mini", "Then {a}")
    p.llm("c", "openai:gpt-4o-mini", "And {b}")
    builder = PipelineBuilder(p)

    builder.handle({"type": "connect", "source": "c", "target": "a"})
    assert p["a"].template == "Start {input.x}"  # type: ignore[union-attr]  # unchanged
    problem = builder.card("a")["problem"]
    assert problem.startswith("refused: ") and "is part of a cycle (a -> b -> c -> a)" in problem
    assert ("c", "a") not in edges(builder)
    assert p.graph_problems() == {}
    # the same message the validator gives
    q = Pipeline("loops")
    q.llm("a", "openai:gpt-4o-mini", "Start {input.x} {c}")
    q.llm("b", "openai:gpt-4o-mini", "Then {a}")
    q.llm("c", "openai:gpt-4o-mini", "And {b}")
    assert q.graph_problems()["a"] == ["is part of a cycle (a -> b -> c -> a)"]

    builder.handle({"type": "update", "name": "b", "changes": {"template": "Then {nope}"}})
    assert p["b"].template == "Then {a}"  # type: ignore[union-attr]
    assert "refers to unknown {nope}" in builder.card("b")["problem"]
    # a good edit clears the card
    builder.handle({"type": "update", "name": "b", "changes": {"template": "Next {a}"}})
    assert builder.card("b")["problem"] is None
    # a self-wire is a cycle too
    builder.handle({"type": "connect", "source": "c", "target": "c"})
    assert "cycle" in builder.card("c")["problem"]
    assert p["c"].template == "And {b}"  # type: ignore[union-attr]


def test_positions_are_saved_and_old_files_still_load(fake: FakeProviders, tmp_path: Path) -> None:
    p = Pipeline("places")
    p.llm("a", "openai:gpt-4o-mini", "Hi {input.text}")
    p.search("s", "{a}")
    builder = PipelineBuilder(p)
    assert all(c["x"] is None for c in builder.nodes)  # first render: the canvas lays out
    builder.handle(
        {"type": "move", "positions": {"a": [10, 20.5], "s": [300, 20], "input.text": [-200, 0]}}
    )
    assert builder.card("a")["x"] == 10 and builder.card("a")["y"] == 20.5
    target = tmp_path / "places.json"
    builder.handle({"type": "save", "path": str(target)})
    saved = json.loads(target.read_text())
    assert saved["positions"] == {
        "a": [10.0, 20.5],
        "s": [300.0, 20.0],
        "input.text": [-200.0, 0.0],
    }
    assert saved["version"] == 1

    other = PipelineBuilder()
    other.handle({"type": "load", "path": str(target)})
    assert other.pipeline.to_dict() == p.to_dict()
    assert other.card("s")["x"] == 300 and other.card("input.text")["x"] == -200
    assert f"loaded places from {target}" == other.run_state["message"]

    # a file written before the canvas (no "positions") loads; the canvas lays it out
    old = dict(saved)
    del old["positions"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = Pipeline.load(tmp_path / "old.json")
    assert loaded.positions == {} and "positions" not in loaded.to_dict()
    assert all(c["x"] is None for c in PipelineBuilder(loaded).nodes)
    bad = {**saved, "positions": {"a": "here"}}
    with pytest.raises(jupyter_byok.ByokError, match=r"position of 'a' must be \[x, y\]"):
        Pipeline.from_dict(bad)
    # renaming and removing keep positions in step
    p.rename("a", "first")
    assert "first" in p.positions and "a" not in p.positions
    p.remove("s")
    assert "s" not in p.positions


def test_run_from_the_canvas_is_a_task_with_live_states_equal_to_the_ledger(
    fake: FakeProviders,
) -> None:
    p = Pipeline("live")
    p.llm("draft", "local:smollm2", "One line about {input.text}", max_tokens=8)
    p.llm("summary", "openai:gpt-4o-mini", "Summarize: {draft}", max_tokens=40)
    p.search("sources", "{input.text}")
    p.llm("answer", "openai:gpt-4o-mini", "Using {sources} and {summary}, answer")
    builder = PipelineBuilder(p)
    builder.handle({"type": "inputs", "values": {"text": "owls"}})
    assert builder.inputs == {"text": "owls"}
    estimate = builder.run_state["estimate_usd"]
    assert estimate is not None and Decimal(estimate) > 0

    seen: list[dict[str, Any]] = []
    builder.observe(lambda change: seen.append(change["new"]), names="node_state")

    async def go() -> Any:
        task = builder.handle({"type": "run"})
        assert isinstance(task, asyncio.Task) and not task.done()  # the handler returned
        assert builder.running
        return await task

    result = run_sync(go())
    assert result is not None, builder.run_state
    assert builder.run_state["status"] == "done", builder.run_state
    rows = ledger_rows("live")
    total = Decimal(0)
    for name in ("draft", "summary", "sources", "answer"):
        state = builder.node_state[name]
        assert state["state"] == "done", (name, state)
        row = rows[rows["node"] == name]
        assert len(row) == 1 and row.iloc[0]["status"] == "ok"
        assert Decimal(state["cost_usd"]) == Decimal(str(row.iloc[0]["cost_usd"])), name
        assert state["tokens_in"] == row.iloc[0]["input_tokens"]
        assert state["tokens_out"] == row.iloc[0]["output_tokens"]
        assert state["latency_s"] > 0
        total += Decimal(state["cost_usd"])
    assert Decimal(builder.run_state["total_usd"]) == total
    assert builder.node_state["draft"]["cost_usd"] == "0"  # local
    assert builder.node_state["summary"]["text"].startswith("Echo: Summarize: ")
    # the browser saw queued/running/streaming states before the end, but not every event
    states = {s.get("state") for update in seen for s in update.values()}
    assert {"queued", "running", "done"} <= states, states
    assert len(seen) == builder.updates_sent

    # run one node alone: its upstream comes from the cache, only it asks its provider
    fake.reset()
    builder.handle(
        {"type": "update", "name": "answer", "changes": {"template": "Briefly {summary}"}}
    )

    async def one() -> Any:
        task = builder.handle({"type": "run_node", "name": "answer"})
        return await task

    assert run_sync(one()) is not None
    assert [r.provider for r in fake.requests] == ["openai"]
    assert builder.node_state["summary"]["state"] == "cached"
    assert builder.node_state["answer"]["state"] == "done"
    # pin from the card: no request at all
    builder.handle({"type": "pin", "name": "summary", "value": True})
    assert builder.card("summary")["pinned"] and "summary" in p.pins
    fake.reset()
    run_sync(one())
    assert builder.node_state["summary"]["state"] == "pinned"
    assert OPENAI not in state_text(builder)


def test_stop_cancels_the_run_and_the_ledger_says_cancelled(fake: FakeProviders) -> None:
    fake.set_latency("openai", 10)
    p = Pipeline("stoppable")
    p.llm("slow", "openai:gpt-4o-mini", "Take your time {input.x}")
    p.llm("after", "openai:gpt-4o-mini", "Then {slow}")
    builder = PipelineBuilder(p)
    builder.handle({"type": "inputs", "values": {"x": "y"}})

    async def go() -> float:
        task = builder.handle({"type": "run"})
        deadline = time.monotonic() + 20
        while not fake.requests_for("openai") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(FLUSH_S * 2)
        assert builder.node_state["slow"]["state"] in ("running", "streaming")
        assert builder.node_state["after"]["state"] == "queued"
        started = time.monotonic()
        builder.handle({"type": "stop"})
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    took = run_sync(go())
    assert took < 2
    assert builder.run_state["status"] == "cancelled", builder.run_state
    assert builder.node_state["slow"]["state"] == "cancelled"
    assert builder.node_state["after"]["state"] == "cancelled"
    assert not builder.running
    rows = ledger_rows("stoppable")
    assert list(rows["status"]) == ["cancelled"] and list(rows["node"]) == ["slow"]
    # stopping when nothing runs is harmless
    builder.handle({"type": "stop"})
    assert builder.run_state["status"] == "cancelled"


def test_a_problem_found_at_run_time_shows_on_its_card(fake: FakeProviders) -> None:
    p = Pipeline("nokey")
    p.llm("a", "anthropic:claude-haiku-4-5", "Hi {input.x}")
    builder = PipelineBuilder(p)

    async def go() -> Any:
        return await builder.handle({"type": "run"})

    assert run_sync(go()) is None
    assert builder.run_state["status"] == "error"
    assert "has no key for anthropic" in builder.card("a")["problem"]
    assert fake.requests == []
    builder.handle({"type": "telepathy"})
    assert "unknown message 'telepathy'" in builder.run_state["message"]


def test_map_from_the_canvas_counts_rows_and_is_throttled(fake: FakeProviders) -> None:
    import pandas as pd

    p = Pipeline("rows", cache=False)
    p.llm("a", "openai:gpt-4o-mini", "Row {input.text}", max_tokens=5)
    builder = PipelineBuilder(p)
    df = pd.DataFrame({"text": [f"r{i}" for i in range(300)]})

    async def go() -> Any:
        started = time.monotonic()
        task = builder.map(df, concurrency=16)
        assert task is not None
        out = await task
        return out, time.monotonic() - started

    out, wall = run_sync(go())
    assert len(out) == 300
    state = builder.node_state["a"]
    assert state["rows_done"] == 300 and state["rows_error"] == 0
    ledger = ledger_rows("rows")
    assert len(ledger) == 300 and set(ledger["status"]) == {"ok"}
    assert abs(float(state["cost_usd"]) - float(ledger["cost_usd"].sum())) < 1e-9
    # at most one update per FLUSH_S, plus the last one
    assert builder.updates_sent <= wall / FLUSH_S + 2, (builder.updates_sent, wall)
    assert builder.run_state["status"] == "done"


def test_pipeline_observers_see_every_step_and_the_stream(fake: FakeProviders) -> None:
    """The public hook the canvas draws from: queued, running, text so far, done."""
    p = Pipeline("observed")
    p.llm("a", "openai:gpt-4o-mini", "Hello {input.x}", max_tokens=20)
    p.llm("b", "openai:gpt-4o-mini", "Then {a}", max_tokens=20)
    events: list[Any] = []
    quiet: list[Any] = []
    stop = p.observe(events.append, stream=True)
    stop_quiet = p.observe(quiet.append)
    result = p.run(x="there")
    steps = [(e.node, e.state) for e in events if e.state != "text"]
    assert steps == [
        ("a", "queued"),
        ("b", "queued"),
        ("a", "running"),
        ("a", "done"),
        ("b", "running"),
        ("b", "done"),
    ]
    texts = [e.text for e in events if e.state == "text" and e.node == "b"]
    assert len(texts) > 1 and texts[-1] == result["b"].text
    assert all(e.state != "text" for e in quiet)  # only streaming observers get the text
    assert [e.result for e in events if e.state == "done"] == [result["a"], result["b"]]
    stop()
    stop_quiet()
    events.clear()
    p.run(x="there")
    assert events == []


def test_runs_and_maps_started_from_code_show_on_the_canvas(fake: FakeProviders) -> None:
    import pandas as pd

    p = Pipeline("from-code", cache=False)
    p.llm("a", "openai:gpt-4o-mini", "Row {input.text}", max_tokens=5)
    builder = PipelineBuilder(p)

    def settled() -> dict[str, Any]:
        time.sleep(FLUSH_S * 3)  # the last update follows at most FLUSH_S after the end
        return dict(builder.node_state["a"])

    started = time.monotonic()
    p.map(pd.DataFrame({"text": [f"r{i}" for i in range(120)]}), concurrency=8)
    state = settled()
    assert state["rows_done"] == 120 and state["rows_error"] == 0 and state["state"] == "done"
    assert builder.updates_sent <= (time.monotonic() - started) / FLUSH_S + 2
    # the next map counts from zero
    p.map(pd.DataFrame({"text": ["x", "y", "z"]}))
    again = settled()
    assert again["rows_done"] == 3 and Decimal(again["cost_usd"]) < Decimal(state["cost_usd"])
    # a run from code: the card shows the result, equal to the run's
    result = p.run(text="solo")
    state = settled()
    assert state["state"] == "done" and "rows_done" not in state
    assert Decimal(state["cost_usd"]) == result["a"].cost_usd
    assert builder.result["a"] is result["a"]
    # a pipeline no longer shown is no longer watched
    builder.pipeline = Pipeline("other")
    before = builder.updates_sent
    p.run(text="again")
    time.sleep(FLUSH_S * 3)
    assert builder.updates_sent == before


def test_batch_mode_from_the_canvas_counts_each_nodes_rows(fake: FakeProviders) -> None:
    """``builder.map(df, mode="batch")``: the LLM node goes through the provider's batch
    API and the Python node after it runs row by row; both cards count rows and dollars,
    and the batch node's dollars are its ledger rows' (at the batch rate)."""
    import pandas as pd

    from jupyter_byok.errors import ByokError

    p = Pipeline("batched", cache=False)
    p.llm("a", "openai:gpt-4o-mini", "Row {input.text}", max_tokens=5)
    p.python("n", lambda a: len(a))
    builder = PipelineBuilder(p)
    df = pd.DataFrame({"text": [f"r{i}" for i in range(40)]})
    seen: list[str] = []
    p.observe(lambda e: seen.append(f"{e.node}:{e.state}"))

    async def go() -> Any:
        task = builder.map(df, mode="batch", poll_s=0.02)
        assert task is not None
        return await task

    out = run_sync(go())
    assert out["error"].isna().all() and out.loc[4, "n"] == len("Echo: Row r4")
    uploads = [r for r in fake.requests if r.path.endswith("/batches")]
    assert len(uploads) == 1
    rows = ledger_rows("batched")
    assert len(rows) == 40 and set(rows["feature"]) == {"batch"}
    a, n = builder.node_state["a"], builder.node_state["n"]
    assert (a["rows_done"], a["rows_error"], n["rows_done"]) == (40, 0, 40)
    assert Decimal(a["cost_usd"]) == sum(Decimal(str(c)) for c in rows["cost_usd"])
    assert Decimal(a["cost_usd"]) > 0 and a["tokens_in"] == int(rows["input_tokens"].sum())
    assert seen.count("a:running") == 1 and seen.count("a:done") == 40
    assert builder.run_state["status"] == "done"
    with pytest.raises(ByokError, match="the canvas waits for its batches"):
        builder.map(df, mode="batch", wait=False)
