"""Pipeline DAGs against the loopback fake providers: concurrency, validation, cache, pins,
run-one-node, cancellation, ledger attribution and JSON without key material."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from waiting import until

import jupyter_byok
from jupyter_byok import engine as engine_module
from jupyter_byok._runner import run_sync
from jupyter_byok.keys import Keystore
from jupyter_byok.pipeline import Pipeline, PipelineError, PipelineRunError
from jupyter_byok.testing import FakeProviders

OPENAI_CANARY = "sk-proj-PIPECANARY" + "q" * 40 + "T3BlbkFJ" + "z" * 20
ANTHROPIC_CANARY = "sk-ant-api03-PIPECANARY" + "w" * 40
TAVILY_CANARY = "tvly-dev-PIPECANARY" + "e" * 20


@pytest.fixture(autouse=True)
def fresh_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process-wide engine binds its ledger and keystore to the home it first saw."""
    monkeypatch.setattr(engine_module, "_engine", None)
    yield
    engine = engine_module._engine
    if engine is not None:
        run_sync(engine.aclose())


@pytest.fixture
def keys(fake_providers: FakeProviders) -> FakeProviders:
    store = Keystore()
    store.set("openai", OPENAI_CANARY)
    store.set("anthropic", ANTHROPIC_CANARY)
    store.set("tavily", TAVILY_CANARY)
    return fake_providers


def user_texts(fake: FakeProviders, provider: str) -> list[str]:
    out = []
    for r in fake.requests_for(provider):
        msgs = r.body.get("messages") or []
        out.append(" ".join(str(m.get("content")) for m in msgs if m.get("role") == "user"))
    return out


def diamond(latency_model: str = "openai:gpt-4o-mini") -> Pipeline:
    p = Pipeline("diamond")
    p.llm("a", latency_model, "Start {input.topic}", max_tokens=40)
    p.llm("b", "anthropic:claude-haiku-4-5", "Left {a}", max_tokens=40)
    p.llm("c", "openai:gpt-4o-mini", "Right {a}", max_tokens=40)
    p.llm("d", "openai:gpt-4o-mini", "Join {b} and {c}", max_tokens=80)
    return p


def test_diamond_runs_middle_nodes_concurrently(keys: FakeProviders) -> None:
    warm = Pipeline("warm")  # engine, ledger and connections set up outside the timing
    warm.llm("w", "openai:gpt-4o-mini", "warm {input.x}").llm(
        "v", "anthropic:claude-haiku-4-5", "{w}"
    )
    warm.run(x=1)
    keys.reset()
    keys.latency = 0.4
    p = diamond()
    r = p.run(topic="owls")
    # when each request reached the provider (each answers after 0.4 s)
    times = {
        text.split()[0]: req.time
        for text, req in zip(
            user_texts(keys, "openai") + user_texts(keys, "anthropic"),
            keys.requests_for("openai") + keys.requests_for("anthropic"),
            strict=True,
        )
    }
    # the middle nodes were sent together: each before the other's answer came back
    # (one after another, they would be 0.4 s apart)
    assert abs(times["Left"] - times["Right"]) < 0.35
    assert times["Left"] - times["Start"] >= 0.35
    assert times["Join"] - max(times["Left"], times["Right"]) >= 0.35
    # outputs flow by name; each node reports its own usage and price
    assert r["a"].text == "Echo: Start owls"
    assert r["d"].text == "Echo: Join Echo: Left Echo: Start owls and Echo: Right Echo: Start owls"
    for name in "abcd":
        assert r[name].usage.output_tokens > 0
        assert r[name].cost_usd is not None and r[name].cost_usd > 0
        assert not r[name].cached
    assert r.cost_usd == sum((r[n].cost_usd or Decimal(0) for n in "abcd"), Decimal(0))
    assert r["b"].model == "anthropic:claude-haiku-4-5"
    # the ledger breaks cost down by node
    ledger = jupyter_byok.usage()
    rows = ledger[ledger["pipeline"] == "diamond"]
    assert sorted(rows["node"]) == ["a", "b", "c", "d"]
    assert set(rows["feature"]) == {"pipeline"}
    by_node = rows.groupby("node")["cost_usd"].sum()
    assert by_node["b"] == pytest.approx(float(r["b"].cost_usd))


def test_cycles_and_unknown_references_are_rejected_before_any_request(
    keys: FakeProviders,
) -> None:
    p = Pipeline("broken")
    p.llm("a", "openai:gpt-4o-mini", "From {c} about {input.topic}")
    p.llm("b", "openai:gpt-4o-mini", "From {a}")
    p.llm("c", "openai:gpt-4o-mini", "From {b}")
    p.llm("d", "openai:gpt-4o-mini", 'Uses {sumary} but keeps {{literal}} and {"json": 1}')
    with pytest.raises(PipelineError) as info:
        p.run(topic="x")
    message = str(info.value)
    assert "\n" not in message
    assert "cycle" in message and "'a'" in message and "'b'" in message and "'c'" in message
    assert "{sumary}" in message and "'d'" in message
    assert set(info.value.problems) == {"a", "b", "c", "d"}
    assert keys.requests == []

    p.remove("d")
    p.llm("self", "openai:gpt-4o-mini", "I am {self}")
    with pytest.raises(PipelineError, match="'self' is part of a cycle"):
        p.validate()
    assert keys.requests == []


def test_unknown_models_missing_keys_and_inputs_named_in_one_error(
    fake_providers: FakeProviders,
) -> None:
    p = Pipeline("needs")
    p.llm("ok", "local:smollm2", "Hi {input.text}")
    p.llm("nokey", "anthropic:claude-haiku-4-5", "Hi {ok}")
    p.llm("badmodel", "nonsense", "Hi {ok}")
    p.llm("badlocal", "local:not-a-model", "Hi {ok}")
    p.search("web", "{ok}")
    with pytest.raises(PipelineError) as info:
        p.run()
    problems = info.value.problems
    assert set(problems) == {"ok", "nokey", "badmodel", "badlocal", "web"}
    assert "needs input text" in problems["ok"][0]
    assert "no key for anthropic" in problems["nokey"][0]
    assert "ANTHROPIC_API_KEY" in problems["nokey"][0]
    assert "no key for tavily" in problems["web"][0]
    assert "not-a-model" in problems["badlocal"][0]
    assert fake_providers.requests == []
    with pytest.raises(jupyter_byok.ByokError, match="api_key cannot be a node parameter"):
        p.llm("leak", "openai:gpt-4o-mini", "x", api_key="sk-nope")


def test_unchanged_rerun_sends_nothing_and_an_edit_reruns_only_descendants(
    keys: FakeProviders,
) -> None:
    p = diamond()
    first = p.run(topic="cats")
    assert len(keys.requests) == 4

    keys.reset()
    again = p.run(topic="cats")
    assert keys.requests == []
    assert again.cached == ["a", "b", "c", "d"]
    assert again.cost_usd == 0
    assert again["d"].text == first["d"].text
    assert again["d"].saved_usd == first["d"].cost_usd

    # edit b: b and d (its descendant) run again; a and c come from the cache
    p.llm("b", "anthropic:claude-haiku-4-5", "Left side of {a}", replace=True, max_tokens=40)
    keys.reset()
    third = p.run(topic="cats")
    assert sorted(t.split()[0] for t in user_texts(keys, "openai")) == ["Join"]
    assert [t.split()[0] for t in user_texts(keys, "anthropic")] == ["Left"]
    assert third.cached == ["a", "c"]
    assert "Left side of" in third["d"].text

    # a different input changes everything downstream of it
    keys.reset()
    p.run(topic="dogs")
    assert len(keys.requests) == 4

    # with the cache off every node is asked again
    p.cache = False
    keys.reset()
    p.run(topic="dogs")
    assert len(keys.requests) == 4


def test_pin_freezes_a_node_and_run_node_uses_cached_upstream(keys: FakeProviders) -> None:
    p = diamond()
    p.run(topic="bees")
    p.pin("b", "PINNED TEXT")
    keys.reset()
    r = p.run(topic="bees")
    assert user_texts(keys, "anthropic") == []
    assert user_texts(keys, "openai") == ["Join PINNED TEXT and Echo: Right Echo: Start bees"]
    assert r["b"].pinned and r["b"].text == "PINNED TEXT" and r["b"].cost_usd == 0
    p.unpin("b")
    keys.reset()
    r = p.run(topic="bees")
    assert keys.requests == [] and not r["b"].pinned

    # pin the last output itself, then edit c and run only c
    p.pin("a")
    p.llm("c", "openai:gpt-4o-mini", "Right now {a}", replace=True, max_tokens=40)
    keys.reset()
    one = p.run_node("c")  # the last run's inputs are reused
    assert user_texts(keys, "openai") == ["Right now Echo: Start bees"]
    assert list(one) == ["a", "c"] and one["a"].pinned
    assert p.last_result["c"].text == "Echo: Right now Echo: Start bees"

    # a cold pipeline: run_node runs what the node needs, and nothing else
    p2 = diamond()
    p2.llm("a", "openai:gpt-4o-mini", "Begin {input.topic}", replace=True)
    keys.reset()
    two = p2.run_node("b", topic="moths")
    assert list(two) == ["a", "b"]
    assert len(keys.requests) == 2
    with pytest.raises(jupyter_byok.ByokError, match="has not run yet"):
        p2.pin("d")


def test_cancellation_stops_pending_nodes(keys: FakeProviders) -> None:
    keys.set_latency("openai", 0.6)
    p = Pipeline("cancel")
    p.llm("first", "openai:gpt-4o-mini", "One {input.x}")
    p.llm("second", "anthropic:claude-haiku-4-5", "Two {first}")

    async def go() -> None:
        task = asyncio.ensure_future(p.arun(x="y"))
        # Cancel once the first node's request is at the provider (not after a guessed
        # delay: on a loaded machine the request may not have left yet).
        await until(lambda: keys.requests_for("openai"), timeout=20)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_sync(go())
    assert len(keys.requests_for("openai")) == 1
    assert keys.requests_for("anthropic") == []
    rows = jupyter_byok.usage()
    assert list(rows[rows["pipeline"] == "cancel"]["status"]) == ["cancelled"]


def test_a_failing_node_is_named_and_finished_nodes_are_kept(keys: FakeProviders) -> None:
    keys.add_fault("anthropic", "auth")
    p = diamond()
    with pytest.raises(PipelineRunError) as info:
        p.run(topic="owls")
    assert info.value.node == "b"
    assert "'b'" in str(info.value)
    assert OPENAI_CANARY not in str(info.value) and ANTHROPIC_CANARY not in str(info.value)
    assert "a" in info.value.partial
    assert "d" not in info.value.partial
    keys.reset()
    r = p.run(topic="owls")  # a (and c) are cached, b and d run now
    assert "a" in r.cached and not r["b"].cached


def test_search_and_python_nodes(keys: FakeProviders) -> None:
    p = Pipeline("research")
    p.llm("question", "openai:gpt-4o-mini", "{input.text}", max_tokens=20)
    p.search("sources", "{question}", depth="advanced")
    p.python("count", lambda sources: len(sources.results))
    p.llm("answer", "anthropic:claude-haiku-4-5", "Using {sources} ({count} hits) answer")
    r = p.run(text="owls at night")
    assert r["count"].value == 5
    assert "https://example.com/" in r["answer"].text
    assert r["sources"].cost_usd is not None and r["sources"].cost_usd > 0
    assert r["sources"].usage.search_credits == 2
    tavily = keys.requests_for("tavily")
    assert tavily[0].body["query"] == "Echo: owls at night"
    keys.reset()
    r2 = p.run(text="owls at night")
    assert keys.requests == [] and r2["sources"].cached
    assert r2["count"].value == 5


def test_saved_json_has_key_names_and_no_key_material(
    keys: FakeProviders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_canary = "sk-proj-ENVCANARY" + "r" * 40 + "T3BlbkFJ" + "t" * 20
    monkeypatch.setenv("XAI_API_KEY", "xai-" + "C" * 50)
    monkeypatch.setenv("OPENAI_API_KEY", env_canary)
    Keystore().set("openai", OPENAI_CANARY, name="work")
    p = Pipeline("saved")
    p.llm(
        "a", "openai:gpt-4o-mini@work", "Summarize {input.text}", system="Be brief", max_tokens=20
    )
    p.llm("b", "xai:grok-4.3", "More on {a}")
    p.search("s", "{a}", depth="basic")
    p.python("n", "textwrap:dedent")  # its parameter `text` is the run input
    r = p.run(text="owls")
    assert r["a"].text == "Echo: Summarize owls"
    assert keys.requests_for("openai")[0].auth == OPENAI_CANARY
    p.pin("b")
    path = p.save(tmp_path / "p.json")
    text = path.read_text()
    for secret in (OPENAI_CANARY, ANTHROPIC_CANARY, TAVILY_CANARY, env_canary, "C" * 50):
        assert secret not in text
    data = json.loads(text)
    assert data["format"] == "jupyter_byok.pipeline" and data["version"] == 1
    assert data["inputs"] == ["text"]
    assert {"provider": "openai", "key_name": "work"} in data["keys"]
    assert data["nodes"][0]["model"] == "openai:gpt-4o-mini@work"
    assert data["nodes"][3] == {"name": "n", "kind": "python", "function": "textwrap:dedent"}

    loaded = Pipeline.load(path)
    assert loaded.to_dict() == p.to_dict()
    keys.reset()
    again = loaded.run(text="owls")
    assert keys.requests == []  # same configuration: answered from the node cache
    assert again["b"].pinned

    # refused: a notebook function, and a key pasted into a template
    p.python("local", lambda a: a)
    with pytest.raises(jupyter_byok.ByokError, match="cannot be imported"):
        p.save(tmp_path / "q.json")
    p.remove("local")
    p.llm("oops", "openai:gpt-4o-mini", f"my key is {OPENAI_CANARY}")
    with pytest.raises(jupyter_byok.ByokError, match="oops") as info:
        p.save(tmp_path / "r.json")
    assert OPENAI_CANARY not in str(info.value)
    assert not (tmp_path / "r.json").exists()
    with pytest.raises(jupyter_byok.ByokError, match="newer"):
        Pipeline.from_dict({**data, "version": 99})
    code = loaded.to_python()
    namespace: dict[str, object] = {}
    exec(code, namespace)
    rebuilt = namespace["p"]
    assert isinstance(rebuilt, Pipeline) and rebuilt.to_dict() == loaded.to_dict()


def test_import_is_cheap_and_pipeline_is_exported() -> None:
    import subprocess
    import sys

    code = (
        "import sys, jupyter_byok, jupyter_byok.pipeline;"
        "bad=[m for m in ('pandas','ipywidgets','plotly','llama_cpp') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_example_notebook_runs_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    source = Path(__file__).parents[2] / "notebooks" / "pipeline.ipynb"
    nb = nbformat.read(source, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # committed clean
    for var in ("HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # any attempt to leave the machine fails
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = json.dumps([o.get("data", {}).get("text/plain", o.get("text", "")) for o in outputs])
    assert "cost_usd" in text and "total paid now: $0" in text


def test_node_cache_hits_are_recorded_in_the_ledger(keys: FakeProviders) -> None:
    p = diamond()
    first = p.run(topic="tides")
    sent = len(keys.requests)
    again = p.run(topic="tides")
    assert len(keys.requests) == sent, "an unchanged re-run sends nothing"
    assert set(again.cached) == {"a", "b", "c", "d"}
    frame = jupyter_byok.usage()
    hits = frame[frame["status"] == "cache_hit"]
    assert sorted(hits["node"]) == ["a", "b", "c", "d"]
    assert set(hits["pipeline"]) == {"diamond"} and set(hits["feature"]) == {"pipeline"}
    assert (hits["cost_usd"] == 0).all()
    saved = {row["node"]: row["saved_usd"] for _, row in hits.iterrows()}
    for node in "abcd":
        assert abs(saved[node] - float(first[node].cost_usd or 0)) < 1e-12, node
