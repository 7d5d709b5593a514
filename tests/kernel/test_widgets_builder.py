"""PipelineBuilder driven through its widgets (set values, click buttons), against the fake
providers and the embedded local model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipywidgets as w
import pytest

import jupyter_byok
from jupyter_byok import engine as engine_module
from jupyter_byok._runner import run_sync
from jupyter_byok.keys import Keystore
from jupyter_byok.pipeline import Pipeline
from jupyter_byok.testing import FakeProviders
from jupyter_byok.widgets import PipelineBuilder

CANARY = "sk-ant-api03-BUILDERCANARY" + "b" * 40


@pytest.fixture(autouse=True)
def fresh_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(engine_module, "_engine", None)
    yield
    engine = engine_module._engine
    if engine is not None:
        run_sync(engine.aclose())


@pytest.fixture
def fake(fake_providers: FakeProviders) -> FakeProviders:
    Keystore().set("openai", "sk-test-builder-" + "o" * 30)
    Keystore().set("tavily", "tvly-dev-builder" + "t" * 20)
    return fake_providers


def all_states(widget: w.Widget) -> list[dict[str, Any]]:
    states = [widget.get_state()]
    for child in getattr(widget, "children", ()):
        states += all_states(child)
    return states


def add(builder: PipelineBuilder, kind: str, name: str, model: str | None = None) -> None:
    builder.new_kind.value = kind
    builder.new_name.value = name
    if model is not None:
        builder.new_model.value = model
    builder.add_button.click()
    assert name in builder.pipeline, builder.status.value


def test_mixed_pipeline_built_and_run_from_the_widgets(fake: FakeProviders, tmp_path: Path) -> None:
    builder = PipelineBuilder()
    builder.name.value = "mixed"
    assert "anthropic:claude-haiku-4-5" not in {v for _, v in builder.new_model.options}
    # the key is added in the BYOK panel (the server's keystore), then the lists refresh
    Keystore().set("anthropic", CANARY)
    builder.refresh_button.click()

    options = dict((v, label) for label, v in builder.new_model.options)
    assert "openai:gpt-4o-mini" in options and "$0.15 in" in options["openai:gpt-4o-mini"]
    assert "anthropic:claude-haiku-4-5" in options and "local:smollm2" in options

    add(builder, "llm", "draft", "local:smollm2")
    add(builder, "llm", "summary", "openai:gpt-4o-mini")
    add(builder, "search", "sources")
    add(builder, "llm", "answer", "anthropic:claude-haiku-4-5")
    panels = builder.panels
    panels["draft"].template.value = "Write one line about {input.text}"
    panels["draft"].max_tokens.value = 8
    panels["summary"].template.value = "Summarize: {draft}"
    panels["summary"].max_tokens.value = 40
    panels["sources"].template.value = "{input.text}"
    panels["answer"].template.value = "Using {sources} and {summary}, answer"
    assert "{draft}" in panels["answer"].references.value
    # builder edits are the pipeline
    node = builder.pipeline["summary"]
    assert node.template == "Summarize: {draft}" and node.params["max_tokens"] == 40  # type: ignore[union-attr]
    assert builder.pipeline.name == "mixed"
    assert list(builder.inputs) == ["text"]

    builder.inputs["text"].value = "owls"
    builder.run_all_button.click()
    assert "done" in builder.status.value, builder.status.value
    for name in ("draft", "summary", "sources", "answer"):
        assert panels[name].output.value, name
        assert "tokens" in panels[name].badge.value and "$" in panels[name].badge.value
    assert panels["summary"].output.value.startswith("Echo: Summarize: ")
    assert "example.com" in panels["answer"].output.value
    assert "total" in builder.totals.value and "4 node(s)" in builder.totals.value
    assert fake.requests_for("anthropic")[0].auth == CANARY
    assert {r.provider for r in fake.requests} == {"openai", "anthropic", "tavily"}
    ledger = jupyter_byok.usage()
    assert sorted(ledger[ledger["pipeline"] == "mixed"]["node"]) == [
        "answer",
        "draft",
        "sources",
        "summary",
    ]

    # run one node after an edit: only that node asks its provider again
    fake.reset()
    panels["answer"].template.value = "Briefly, using {sources}: answer"
    panels["answer"].run_button.click()
    assert [r.provider for r in fake.requests] == ["anthropic"]
    assert "Briefly" in panels["answer"].output.value
    # pin from the toggle: the node's output is frozen
    panels["summary"].pin_toggle.value = True
    assert "summary" in builder.pipeline.pins
    fake.reset()
    builder.run_all_button.click()
    assert fake.requests == [] and "pinned" in panels["summary"].badge.value

    # save: key names and model ids, no key material anywhere (file, export box, widget state)
    builder.path.value = str(tmp_path / "mixed.json")
    builder.save_button.click()
    saved = (tmp_path / "mixed.json").read_text()
    assert CANARY not in saved and "anthropic:claude-haiku-4-5" in saved
    assert json.loads(builder.export.value)["name"] == "mixed"
    assert CANARY not in json.dumps(all_states(builder), default=str)

    # load into a fresh builder; python code export rebuilds the same pipeline
    other = PipelineBuilder()
    other.path.value = str(tmp_path / "mixed.json")
    other.load_button.click()
    assert list(other.panels) == ["draft", "summary", "sources", "answer"]
    assert other.pipeline.to_dict() == builder.pipeline.to_dict()
    other.code_button.click()
    namespace: dict[str, Any] = {}
    exec(other.export.value, namespace)
    assert namespace["p"].to_dict() == other.pipeline.to_dict()  # type: ignore[attr-defined]


def test_code_and_builder_stay_in_sync_and_errors_show_on_nodes(fake: FakeProviders) -> None:
    p = Pipeline("sync")
    p.llm("a", "openai:gpt-4o-mini", "Hello {input.who}", max_tokens=10)
    builder = PipelineBuilder(p)
    assert builder.pipeline is p and list(builder.panels) == ["a"]
    p.llm("b", "openai:gpt-4o-mini", "Then {a} and {missing}")
    builder.refresh()
    assert list(builder.panels) == ["a", "b"]
    builder.inputs["who"].value = "you"
    builder.run_all_button.click()
    assert "missing" in builder.status.value
    assert "{missing}" in builder.panels["b"].problem.value
    assert builder.panels["a"].problem.value == ""
    assert fake.requests == []

    builder.panels["b"].template.value = "Then {a}"
    builder.panels["b"].down_button.click()  # already last: stays
    builder.panels["b"].up_button.click()
    assert list(builder.pipeline.nodes) == ["b", "a"]
    builder.run_all_button.click()
    assert builder.panels["b"].output.value == "Echo: Then Echo: Hello you"
    fig = builder.dag_figure()
    assert any("$" in str(t) for t in fig.data[-1].text)
    builder.panels["b"].remove_button.click()
    assert list(builder.pipeline.nodes) == ["a"] and list(builder.panels) == ["a"]
    # a python node by import reference
    builder.new_function.value = "textwrap:dedent"
    add(builder, "python", "clean")
    assert builder.pipeline["clean"].kind == "python"
    builder.new_function.value = "no_such_module:fn"
    builder.new_kind.value = "python"
    builder.new_name.value = "bad"
    builder.add_button.click()
    assert "cannot import" in builder.status.value and "bad" not in builder.pipeline


def all_widgets(widget: w.Widget) -> list[w.Widget]:
    found = [widget]
    for child in getattr(widget, "children", ()):
        found += all_widgets(child)
    return found


def test_builder_has_no_key_field_and_links_to_the_panel(fake: FakeProviders) -> None:
    """Keys never pass through a kernel: the builder offers no field to type one into,
    only a link that runs the BYOK panel's add-key command in JupyterLab."""
    builder = PipelineBuilder()
    widgets = all_widgets(builder)
    assert not [x for x in widgets if isinstance(x, w.Password)]
    assert not [x for x in widgets if isinstance(x, w.Text) and "key" in str(x.description).lower()]
    assert not hasattr(builder, "store_key")
    assert builder.keys_hint in widgets
    hint = builder.keys_hint.value
    assert "data-commandlinker-command='byok:add-key'" in hint
    assert "BYOK: Add an API Key" in hint and "jupyter byok keys set PROVIDER" in hint
    assert builder.refresh_button in widgets
