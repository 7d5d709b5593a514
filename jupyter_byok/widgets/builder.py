"""PipelineBuilder: a workflow builder made of stock ipywidgets (no custom front end).

Invariants:

* ``builder.pipeline`` is the one source of truth: every edit in the widgets is written to
  it at once, and :meth:`PipelineBuilder.refresh` redraws the widgets from it (after code
  changed the pipeline, or after a load).
* The builder has no key field: keys never pass through a kernel or widget state. It links
  to the BYOK panel's "add key" command instead (the browser posts the key to the server).
* Everything a user can click is reachable from Python (``builder.run_all_button.click()``),
  which is how the tests drive it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..errors import ByokError
from ..pipeline import LLMNode, NodeResult, Pipeline, PipelineError, SearchNode
from ..types import DEFAULT_MAX_TOKENS

__all__ = ["NodePanel", "PipelineBuilder", "model_options"]

#: JupyterLab's command linker runs ``byok:add-key`` (the labextension's) on a click.
KEYS_HINT = (
    "<span class='jp-byok-builder-keys'>Keys are never typed here, so they never pass "
    "through the kernel: <a href='#' data-commandlinker-command='byok:add-key' "
    "title='BYOK: Add an API Key' style='color: var(--jp-content-link-color); "
    "text-decoration: underline'>add a key in the BYOK panel</a> (or run <b>BYOK: Add an "
    "API Key</b> from the command palette, or <code>jupyter byok keys set PROVIDER</code> in "
    "a terminal), then click <b>Refresh models</b>.</span>"
)


def _price_label(model_id: str) -> str:
    from ..models import parse_model
    from ..pricing import price_for

    try:
        ref = parse_model(model_id)
    except ByokError:
        return model_id
    if ref.is_local:
        return f"{model_id}  (local, $0)"
    price = price_for(ref.provider, ref.model)
    if not price or "input" not in price:
        return f"{model_id}  (no price)"
    return f"{model_id}  (${price['input']} in / ${price.get('output', '?')} out per 1M)"


def model_options(extra: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(label, model id) for providers with a key, local models and aliases, priced."""
    from ..client import get_client
    from ..config import load_settings
    from ..pricing import load_prices
    from ..providers import BUILTIN
    from ..providers.local import available_models

    try:
        sources = get_client().key_sources()
    except ByokError:
        sources = []
    ids: list[str] = []
    for name, spec in BUILTIN.items():
        if spec.wire in ("local", "tavily"):
            continue
        mine = [s for s in sources if s.provider == name]
        names = sorted({s.name for s in mine if s.source == "keystore"})
        if any(s.source == "environment" for s in mine):
            names.insert(0, "default")
        for key_name in names:
            suffix = "" if key_name == "default" else f"@{key_name}"
            ids += [f"{m}{suffix}" for m in load_prices() if m.startswith(f"{name}:")]
    ids += [f"local:{m['name']}" for m in available_models() if m.get("exists")]
    settings = load_settings()
    options = [(_price_label(i), i) for i in ids]
    options += [
        (f"{alias} -> {target}", alias) for alias, target in sorted(settings.aliases.items())
    ]
    known = {v for _, v in options}
    options += [(_price_label(m), m) for m in extra if m and m not in known]
    return options


class NodePanel(w.VBox):
    """One node's editor: model, template, parameters, buttons, output and badge."""

    def __init__(self, builder: PipelineBuilder, name: str) -> None:
        self.builder = builder
        self.node_name = name
        node = builder.pipeline[name]
        self.title = w.HTML()
        self.model = w.Dropdown(description="model", layout=w.Layout(width="95%"))
        self.template = w.Textarea(
            description="prompt", layout=w.Layout(width="95%", height="70px")
        )
        self.system = w.Text(description="system", layout=w.Layout(width="95%"))
        self.max_tokens = w.IntText(description="max tokens", value=DEFAULT_MAX_TOKENS)
        self.depth = w.Dropdown(description="depth", options=["basic", "advanced"])
        self.function = w.Text(description="function", disabled=True)
        self.references = w.HTML()
        self.run_button = w.Button(description="Run node", icon="play")
        self.remove_button = w.Button(description="Remove", icon="trash")
        self.up_button = w.Button(description="Up", icon="arrow-up")
        self.down_button = w.Button(description="Down", icon="arrow-down")
        self.pin_toggle = w.ToggleButton(description="Pin", icon="thumb-tack")
        self.output = w.Textarea(description="output", disabled=True, layout=w.Layout(width="95%"))
        self.badge = w.HTML()
        self.problem = w.HTML()

        fields: list[w.Widget] = []
        if isinstance(node, LLMNode):
            self.model.options = model_options((node.model,))
            self.model.value = node.model
            self.template.value = node.template
            self.system.value = node.system or ""
            self.max_tokens.value = int(node.params.get("max_tokens") or DEFAULT_MAX_TOKENS)
            fields = [self.model, self.system, self.template, self.max_tokens]
        elif isinstance(node, SearchNode):
            self.template.description = "query"
            self.template.value = node.template
            self.depth.value = node.depth
            fields = [self.template, self.depth]
        else:
            self.function.value = node.ref or getattr(node.fn, "__qualname__", "python function")
            fields = [self.function]
        self.pin_toggle.value = name in builder.pipeline.pins
        self.update_title()

        for widget in (self.model, self.template, self.system, self.max_tokens, self.depth):
            widget.observe(self._edited, names="value")
        self.pin_toggle.observe(self._pin, names="value")
        self.run_button.on_click(lambda _: builder.run_node(self.node_name))
        self.remove_button.on_click(lambda _: builder.remove_node(self.node_name))
        self.up_button.on_click(lambda _: builder.move_node(self.node_name, -1))
        self.down_button.on_click(lambda _: builder.move_node(self.node_name, +1))
        buttons = w.HBox(
            [self.run_button, self.pin_toggle, self.up_button, self.down_button, self.remove_button]
        )
        super().__init__(
            [self.title, *fields, self.references, buttons, self.badge, self.problem, self.output],
            layout=w.Layout(border="1px solid #ccc", padding="4px", margin="4px 0"),
        )

    def update_title(self) -> None:
        node = self.builder.pipeline[self.node_name]
        what = {"llm": "LLM", "search": "web search", "python": "python"}[node.kind]
        self.title.value = f"<b>{html.escape(self.node_name)}</b> &middot; {what}"
        refs = ["{input.NAME}"] + [
            "{" + n + "}" for n in self.builder.pipeline.nodes if n != self.node_name
        ]
        self.references.value = (
            "<small>references: " + html.escape(" ".join(refs)) + "</small>"
            if node.kind != "python"
            else ""
        )

    def _edited(self, change: dict[str, Any]) -> None:
        pipeline = self.builder.pipeline
        node = pipeline[self.node_name]
        try:
            if isinstance(node, LLMNode):
                params = dict(node.params)
                params["max_tokens"] = int(self.max_tokens.value)
                pipeline.llm(
                    self.node_name,
                    str(self.model.value or ""),
                    self.template.value,
                    self.system.value or None,
                    replace=True,
                    **params,
                )
            elif isinstance(node, SearchNode):
                pipeline.search(
                    self.node_name,
                    self.template.value,
                    self.depth.value,
                    replace=True,
                    **node.params,
                )
        except ByokError as exc:
            self.problem.value = _error_html(exc.message)
            return
        self.problem.value = ""

    def _pin(self, change: dict[str, Any]) -> None:
        try:
            if change["new"]:
                self.builder.pipeline.pin(self.node_name)
            else:
                self.builder.pipeline.unpin(self.node_name)
        except ByokError as exc:
            self.problem.value = _error_html(exc.message)
            self.pin_toggle.unobserve(self._pin, names="value")
            self.pin_toggle.value = False
            self.pin_toggle.observe(self._pin, names="value")

    def show(self, result: NodeResult | None) -> None:
        if result is None:
            self.output.value, self.badge.value = "", ""
            return
        self.output.value = result.text
        tokens = result.usage.input_tokens + result.usage.output_tokens
        cost = "?" if result.cost_usd is None else f"${result.cost_usd:.6f}"
        state = "pinned" if result.pinned else ("cached" if result.cached else "")
        saved = f" (saved ${result.saved_usd:.6f})" if result.saved_usd else ""
        self.badge.value = (
            f"<span style='background:#eef;padding:2px 6px;border-radius:8px'>{tokens} tokens "
            f"&middot; {cost}{saved} &middot; {result.latency_s:.2f}s {state}</span>"
        )


def _error_html(message: str) -> str:
    return f"<span style='color:#b00'>{html.escape(message)}</span>"


class PipelineBuilder(w.VBox):
    """Build, run and save a :class:`~jupyter_byok.pipeline.Pipeline` in the notebook."""

    def __init__(self, pipeline: Pipeline | None = None) -> None:
        self.pipeline = pipeline if pipeline is not None else Pipeline("pipeline")
        self.panels: dict[str, NodePanel] = {}
        self.result: dict[str, NodeResult] = {}

        self.name = w.Text(description="pipeline", value=self.pipeline.name)
        self.name.observe(self._renamed, names="value")
        self.new_kind = w.Dropdown(description="new node", options=["llm", "search", "python"])
        self.new_name = w.Text(placeholder="node name")
        self.new_model = w.Dropdown(
            options=model_options(("local:smollm2",)), value="local:smollm2"
        )
        self.new_function = w.Text(placeholder="module:function (python nodes)")
        self.add_button = w.Button(description="Add node", icon="plus")
        self.add_button.on_click(lambda _: self.add_node())

        self.nodes_box = w.VBox()
        self.inputs_box = w.VBox()
        self.inputs: dict[str, w.Textarea] = {}
        self.run_all_button = w.Button(description="Run all", icon="play", button_style="primary")
        self.run_all_button.on_click(lambda _: self.run_all())
        self.totals = w.HTML()
        self.status = w.HTML()

        self.path = w.Text(description="file", value=f"{self.pipeline.name}.json")
        self.save_button = w.Button(description="Save JSON", icon="save")
        self.load_button = w.Button(description="Load JSON", icon="folder-open")
        self.code_button = w.Button(description="Python code", icon="code")
        self.export = w.Textarea(layout=w.Layout(width="95%", height="120px"))
        self.save_button.on_click(lambda _: self.save())
        self.load_button.on_click(lambda _: self.load())
        self.code_button.on_click(lambda _: self.show_code())

        self.keys_hint = w.HTML(KEYS_HINT)
        self.refresh_button = w.Button(
            description="Refresh models",
            icon="refresh",
            layout=w.Layout(width="auto", flex="0 0 auto"),
        )
        self.refresh_button.on_click(lambda _: self.refresh())

        self.dag = w.Output()
        self.dag_button = w.Button(description="DAG picture", icon="sitemap")
        self.dag_button.on_click(lambda _: self.show_dag())

        super().__init__(
            [
                self.name,
                w.HBox(
                    [
                        self.new_kind,
                        self.new_name,
                        self.new_model,
                        self.new_function,
                        self.add_button,
                    ]
                ),
                self.nodes_box,
                w.HTML("<b>inputs</b>"),
                self.inputs_box,
                w.HBox([self.run_all_button, self.dag_button]),
                self.totals,
                self.status,
                w.HBox([self.path, self.save_button, self.load_button, self.code_button]),
                self.export,
                w.HBox([self.refresh_button, self.keys_hint]),
                self.dag,
            ]
        )
        self.refresh()

    # ---------------------------------------------------------------- structure
    def refresh(self) -> None:
        """Redraw every panel from ``self.pipeline`` (after code changed it, or a load)."""
        self.name.unobserve(self._renamed, names="value")
        self.name.value = self.pipeline.name
        self.name.observe(self._renamed, names="value")
        chosen = self.new_model.value
        self.new_model.options = model_options(("local:smollm2", str(chosen or "")))
        self.new_model.value = chosen
        self.panels = {n: NodePanel(self, n) for n in self.pipeline.nodes}
        self.nodes_box.children = tuple(self.panels.values())
        old = {k: v.value for k, v in self.inputs.items()}
        self.inputs = {
            n: w.Textarea(
                description=f"input.{n}", value=old.get(n, ""), layout=w.Layout(width="95%")
            )
            for n in self.pipeline.input_names()
        }
        self.inputs_box.children = tuple(self.inputs.values())
        for name, panel in self.panels.items():
            panel.show(self.result.get(name))
        self._show_totals()

    def add_node(self) -> None:
        name, kind = self.new_name.value.strip(), self.new_kind.value
        try:
            if kind == "llm":
                self.pipeline.llm(name, str(self.new_model.value), "{input.text}", max_tokens=256)
            elif kind == "search":
                self.pipeline.search(name, "{input.text}")
            else:
                self.pipeline.python(name, self.new_function.value.strip())
        except ByokError as exc:
            self.status.value = _error_html(exc.message)
            return
        self.status.value = ""
        self.new_name.value = ""
        self.refresh()

    def remove_node(self, name: str) -> None:
        self.pipeline.remove(name)
        self.result.pop(name, None)
        self.refresh()

    def move_node(self, name: str, step: int) -> None:
        order = list(self.pipeline.nodes)
        self.pipeline.move(name, order.index(name) + step)
        self.refresh()

    def _renamed(self, change: dict[str, Any]) -> None:
        if str(change["new"]).strip():
            self.pipeline.name = str(change["new"]).strip()

    # ------------------------------------------------------------------ running
    def input_values(self) -> dict[str, str]:
        return {n: t.value for n, t in self.inputs.items()}

    def _run(self, action: Callable[[], Any]) -> None:
        for panel in self.panels.values():
            panel.problem.value = ""
        self.status.value = "<i>running...</i>"
        try:
            result = action()
        except PipelineError as exc:
            self.status.value = _error_html(exc.message)
            for node, problems in exc.problems.items():
                if node in self.panels:
                    self.panels[node].problem.value = _error_html("; ".join(problems))
            return
        except ByokError as exc:
            self.status.value = _error_html(exc.message)
            failed: str | None = getattr(exc, "node", None)
            partial = getattr(exc, "partial", None)
            if partial is not None:
                self.result.update(partial.nodes)
            if failed is not None and failed in self.panels:
                self.panels[failed].problem.value = _error_html(exc.message)
            self._show_all()
            return
        self.result.update(result.nodes)
        self.status.value = f"<span style='color:#070'>done in {result.wall_s:.2f}s</span>"
        self._show_all()

    def run_all(self) -> None:
        self._run(lambda: self.pipeline.run(**self.input_values()))

    def run_node(self, name: str) -> None:
        self._run(lambda: self.pipeline.run_node(name, **self.input_values()))

    def _show_all(self) -> None:
        for name, panel in self.panels.items():
            panel.show(self.result.get(name))
        self._show_totals()

    def _show_totals(self) -> None:
        shown = [r for n, r in self.result.items() if n in self.pipeline]
        cost = sum((r.cost_usd or Decimal(0) for r in shown), Decimal(0))
        tokens = sum(r.usage.input_tokens + r.usage.output_tokens for r in shown)
        cached = sum(1 for r in shown if r.cached)
        self.totals.value = (
            f"<b>total</b>: ${cost:.6f} &middot; {tokens} tokens &middot; {len(shown)} node(s), "
            f"{cached} from cache"
        )

    # ---------------------------------------------------------------- save/load
    def save(self) -> None:
        try:
            path = self.pipeline.save(self.path.value)
        except ByokError as exc:
            self.status.value = _error_html(exc.message)
            return
        self.export.value = Path(path).read_text(encoding="utf-8")
        self.status.value = f"saved to {html.escape(str(path))}"

    def load(self) -> None:
        try:
            text = self.export.value.strip()
            if self.path.value and Path(self.path.value).is_file():
                self.pipeline = Pipeline.load(self.path.value)
            elif text:
                self.pipeline = Pipeline.from_dict(json.loads(text))
            else:
                raise ByokError(f"no pipeline file at {self.path.value}: give a path or paste JSON")
        except (ByokError, ValueError) as exc:
            self.status.value = _error_html(str(exc))
            return
        self.result = {}
        self.status.value = f"loaded {html.escape(self.pipeline.name)}"
        self.refresh()

    def show_code(self) -> None:
        self.export.value = self.pipeline.to_python()

    # --------------------------------------------------------------------- DAG
    def dag_figure(self) -> Any:
        """A Plotly picture of the DAG: one marker per node, labelled with cost and latency."""
        import plotly.graph_objects as go

        order = self.pipeline.validate(check_keys=False)
        nodes = self.pipeline.nodes
        level: dict[str, int] = {}
        for name in order:
            deps = self.pipeline._deps(nodes[name])
            level[name] = 1 + max((level[d] for d in deps), default=-1)
        rows: dict[int, int] = {}
        pos: dict[str, tuple[int, int]] = {}
        for name in order:
            rows[level[name]] = rows.get(level[name], -1) + 1
            pos[name] = (level[name], -rows[level[name]])
        fig = go.Figure()
        for name in order:
            for dep in self.pipeline._deps(nodes[name]):
                (x0, y0), (x1, y1) = pos[dep], pos[name]
                fig.add_trace(
                    go.Scatter(
                        x=[x0, x1],
                        y=[y0, y1],
                        mode="lines",
                        line={"color": "#999"},
                        hoverinfo="skip",
                    )
                )
        labels = []
        for name in order:
            r = self.result.get(name)
            if r is None:
                labels.append(name)
            else:
                cost = "?" if r.cost_usd is None else f"${r.cost_usd:.5f}"
                labels.append(f"{name}<br>{cost} · {r.latency_s:.2f}s")
        fig.add_trace(
            go.Scatter(
                x=[pos[n][0] for n in order],
                y=[pos[n][1] for n in order],
                mode="markers+text",
                text=labels,
                textposition="top center",
                marker={
                    "size": 22,
                    "color": ["#4a7" if n in self.result else "#bbb" for n in order],
                },
            )
        )
        fig.update_layout(
            showlegend=False, xaxis={"visible": False}, yaxis={"visible": False}, height=300
        )
        return fig

    def show_dag(self) -> None:
        try:
            fig = self.dag_figure()
        except ByokError as exc:
            self.status.value = _error_html(exc.message)
            return
        self.dag.clear_output()
        with self.dag:
            from IPython.display import display

            display(fig)

    # --------------------------------------------------------------- conveniences
    def set_template(self, node: str, template: str) -> None:
        self.panels[node].template.value = template

    def __repr__(self) -> str:
        return f"PipelineBuilder({self.pipeline!r})"
