"""PipelineBuilder: a node canvas for a :class:`~jupyter_byok.pipeline.Pipeline`, as an anywidget.

The browser half is one ESM bundle (React Flow + dagre, built by ``labextension``'s
``build:canvas`` into ``widgets/static/``, shipped in the wheel; nothing from a CDN). This
half keeps the pipeline and answers the canvas's messages.

Invariants:

* ``builder.pipeline`` is the one source of truth: every canvas edit is applied to it at
  once (through its public API), and :meth:`PipelineBuilder.refresh` redraws the canvas
  from it (after code changed the pipeline, or after a load).
* Wires are the pipeline's :attr:`~Pipeline.edges`: drawing one inserts ``{source}`` into
  the target's prompt, deleting one removes the reference. An edit that would add an
  unknown reference or a cycle is refused, the node is left as it was, and the card shows
  the validator's message.
* Runs are tasks on the kernel's event loop: the message handler returns at once; "Stop"
  cancels the task (the engine records the cancelled attempts in the ledger). Node states
  reach the browser at most every :data:`FLUSH_S` seconds, however fast events come.
* No key ever enters the widget state: model ids carry key *names*; the model list comes
  from :class:`~jupyter_byok.client.Client` metadata. Keys are added in the BYOK panel,
  which the canvas links to (``byok:add-key``).
* Every message the canvas sends can be sent from Python (:meth:`PipelineBuilder.handle`),
  which is how the kernel-side tests drive it.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets as t

from ..errors import ByokError
from ..pipeline import LLMNode, NodeEvent, NodeResult, Pipeline, PipelineError, SearchNode
from ..pipeline import PipelineRunError as _RunError
from ..types import DEFAULT_MAX_TOKENS

if TYPE_CHECKING:
    import pandas

__all__ = ["FLUSH_S", "PipelineBuilder", "model_options"]

STATIC = Path(__file__).resolve().parent / "static"
#: at most one state update to the browser per this many seconds (10 a second)
FLUSH_S = 0.1
#: the streaming text shown on a card is cut to its last this many characters
TEXT_LIMIT = 4000
KINDS = ("llm", "search", "python", "input")


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


def _ref_pattern(name: str) -> re.Pattern[str]:
    """``{name}``, ``{name.attr}``, ``{name[0]}``... but not the escaped ``{{name}}``."""
    access = r"(?:\.[A-Za-z_][A-Za-z0-9_]*|\[[^\]{}]*\])*"
    return re.compile(r"(?<!\{)\{" + re.escape(name) + access + r"\}(?!\})")


def replace_references(text: str, name: str, new: str | None) -> str:
    """``text`` with every reference to ``name`` renamed to ``new``, or removed (None)."""
    pattern = _ref_pattern(name)
    if new is None:
        out = pattern.sub("", text)
        return re.sub(r"[ \t]{2,}", " ", out).strip() if out != text else text
    return pattern.sub(lambda m: "{" + new + m.group(0)[1 + len(name) :], text)


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class PipelineBuilder(anywidget.AnyWidget):
    """Build, run and save a :class:`~jupyter_byok.pipeline.Pipeline` on a node canvas."""

    _esm = t.Unicode().tag(sync=True)
    _css = t.Unicode().tag(sync=True)

    pipeline_name = t.Unicode("pipeline").tag(sync=True)
    #: one dict per card (nodes, then inputs as ``input.NAME``); see :meth:`_node_view`
    nodes = t.List(t.Dict()).tag(sync=True)
    #: ``{"source", "target"}`` per wire
    edges = t.List(t.Dict()).tag(sync=True)
    #: values typed for the run's inputs (``{input.NAME}``)
    inputs = t.Dict().tag(sync=True)
    #: ``{"id", "label"}``: models with a key, local models, aliases; priced
    models = t.List(t.Dict()).tag(sync=True)
    #: node name -> live state (state, text, tokens, cost, latency, rows...)
    node_state = t.Dict().tag(sync=True)
    #: the header: status, message, estimate and total
    run_state = t.Dict().tag(sync=True)
    path = t.Unicode("").tag(sync=True)
    #: the JupyterLab command that opens the BYOK panel's key form
    keys_command = t.Unicode("byok:add-key").tag(sync=True)

    def __init__(self, pipeline: Pipeline | None = None, **kwargs: Any) -> None:
        bundle = STATIC / "canvas.js"
        if not bundle.is_file():
            raise ByokError(
                "the pipeline canvas is not built: run `cd labextension && jlpm build:canvas` "
                "(a released wheel ships it)"
            )
        css = STATIC / "canvas.css"
        super().__init__(
            _esm=bundle.read_text(encoding="utf-8"),
            _css=css.read_text(encoding="utf-8") if css.is_file() else "",
            **kwargs,
        )
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self._own = False
        self._unwatch: Callable[[], None] | None = None
        self._pipeline = Pipeline("pipeline")
        self.pipeline = pipeline if pipeline is not None else self._pipeline
        self.path = self.path or f"{self.pipeline.name}.json"
        #: the latest result of each node (shown on its card)
        self.result: dict[str, NodeResult] = {}
        #: inputs added from the palette that no prompt refers to yet
        self.declared_inputs: list[str] = []
        self._refused: dict[str, str] = {}
        self._task: asyncio.Task[Any] | None = None
        self._pending: dict[str, dict[str, Any]] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._last_flush = 0.0
        #: how many node-state updates were sent to the browser (the throttle's witness)
        self.updates_sent = 0
        self.on_msg(lambda _widget, content, _buffers: self.handle(content))
        self.observe(self._renamed, names="pipeline_name")
        self.refresh()

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline shown; its runs and maps started from code show on the canvas too."""
        return self._pipeline

    @pipeline.setter
    def pipeline(self, pipeline: Pipeline) -> None:
        if self._unwatch is not None:
            self._unwatch()
        self._pipeline = pipeline
        self._unwatch = pipeline.observe(self._watch)

    # ------------------------------------------------------------------ the view
    def refresh(self) -> None:
        """Redraw the canvas from ``self.pipeline`` (after code changed it, or a load)."""
        p = self.pipeline
        with self.hold_trait_notifications():
            self.pipeline_name = p.name
            used = {str(getattr(n, "model", "")) for n in p.nodes.values()}
            self.models = [
                {"id": v, "label": label}
                for label, v in model_options(("local:smollm2", *sorted(used - {""})))
            ]
            self._redraw()
            self.estimate()

    def _input_names(self) -> list[str]:
        names = list(self.pipeline.input_names())
        return names + [n for n in self.declared_inputs if n not in names]

    def _node_view(self, name: str, problems: dict[str, list[str]]) -> dict[str, Any]:
        p = self.pipeline
        node = p[name]
        x, y = p.positions.get(name, (None, None))
        view: dict[str, Any] = {
            "name": name,
            "kind": node.kind,
            "x": x,
            "y": y,
            "pinned": name in p.pins,
            "problem": self._refused.get(name)
            or ("; ".join(f"node {name!r} {text}" for text in problems.get(name, [])) or None),
        }
        if isinstance(node, LLMNode):
            view.update(
                model=node.model,
                template=node.template,
                system=node.system or "",
                max_tokens=int(node.params.get("max_tokens") or DEFAULT_MAX_TOKENS),
                temperature=node.params.get("temperature"),
            )
        elif isinstance(node, SearchNode):
            view.update(template=node.template, depth=node.depth)
        else:
            view.update(function=node.ref or getattr(node.fn, "__qualname__", "python function"))
        return view

    def _redraw(self) -> None:
        p = self.pipeline
        problems = p.graph_problems()
        views = [self._node_view(n, problems) for n in p.nodes]
        edges = [{"source": s, "target": d} for s, d in p.edges]
        inputs = self._input_names()
        for name in inputs:
            key = f"input.{name}"
            x, y = p.positions.get(key, (None, None))
            views.append({"name": key, "kind": "input", "x": x, "y": y, "problem": None})
        for name, node in p.nodes.items():
            for used in sorted(node.input_names):
                edges.append({"source": f"input.{used}", "target": name})
        self.nodes = views
        self.edges = edges
        old = dict(self.inputs)
        self.inputs = {n: old.get(n, "") for n in inputs}
        self.node_state = {n: s for n, s in self.node_state.items() if n in p}

    def card(self, name: str) -> dict[str, Any]:
        """The card ``name`` as the canvas shows it (a dict of the synced ``nodes``)."""
        for view in self.nodes:
            if view["name"] == name:
                return dict(view)
        raise ByokError(f"the canvas has no card {name!r}")

    # --------------------------------------------------------------- messages
    def handle(self, message: Mapping[str, Any]) -> Any:
        """Answer one message from the canvas (``{"type": ..., ...}``); returns the run task
        for ``run``/``run_node``. Bad messages set the header's message, never raise."""
        kind = str(message.get("type", ""))
        handler: Callable[..., Any] | None = getattr(self, f"_on_{kind}", None)
        if handler is None:
            self._say("error", f"the canvas sent an unknown message {kind!r}")
            return None
        try:
            return handler(message)
        except ByokError as exc:
            self._say("error", exc.message)
        except (TypeError, ValueError, KeyError) as exc:
            self._say("error", f"the canvas sent a bad {kind!r} message ({exc})")
        return None

    def _say(self, status: str, message: str, **more: Any) -> None:
        self.run_state = {**self.run_state, "status": status, "message": message, **more}

    def _on_refresh(self, message: Mapping[str, Any]) -> None:
        self._refused.clear()
        self.refresh()

    def _on_add(self, message: Mapping[str, Any]) -> None:
        kind = str(message.get("kind", ""))
        if kind not in KINDS:
            raise ByokError(f"cannot add a node of kind {kind!r}: use one of {', '.join(KINDS)}")
        p = self.pipeline
        name = str(message.get("name") or "").strip() or self._free_name(kind)
        if kind == "input":
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ByokError(f"input name {name!r} must be a Python identifier, e.g. text")
            if name not in self._input_names():
                self.declared_inputs.append(name)
            key = f"input.{name}"
        elif kind == "llm":
            model = str(message.get("model") or "") or self._default_model()
            p.llm(name, model, str(message.get("template") or ""), max_tokens=256)
            key = name
        elif kind == "search":
            p.search(name, str(message.get("template") or ""))
            key = name
        else:
            function = str(message.get("function") or "").strip()
            if not function:
                raise ByokError(
                    "a python node needs its function as module:function, e.g. textwrap:dedent"
                )
            p.python(name, function)
            key = name
        if message.get("x") is not None and message.get("y") is not None:
            p.set_position(key, message["x"], message["y"])
        self._say("idle", f"added {key}")
        self._redraw()
        self.estimate()

    def _free_name(self, kind: str) -> str:
        taken = set(self.pipeline.nodes) | set(self._input_names())
        base = {"llm": "llm", "search": "search", "python": "python", "input": "text"}[kind]
        i = 1
        while f"{base}_{i}" in taken:
            i += 1
        return f"{base}_{i}"

    def _default_model(self) -> str:
        ids = [m["id"] for m in self.models]
        return ids[0] if ids else "local:smollm2"

    def _on_update(self, message: Mapping[str, Any]) -> None:
        name = str(message["name"])
        changes = dict(message.get("changes") or {})
        p = self.pipeline
        node = p[name]
        new_name = str(changes.pop("name", name)).strip() or name
        if changes:
            if isinstance(node, LLMNode):
                params = dict(node.params)
                if "max_tokens" in changes:
                    params["max_tokens"] = _int(changes.pop("max_tokens"), "max tokens", 1)
                if "temperature" in changes:
                    temp = changes.pop("temperature")
                    if temp in (None, ""):
                        params.pop("temperature", None)
                    else:
                        params["temperature"] = _float(temp, "temperature", 0.0, 2.0)
                model = str(changes.pop("model", node.model))
                template = str(changes.pop("template", node.template))
                system = changes.pop("system", node.system) or None
                self._edit(
                    name,
                    lambda: p.llm(name, model, template, system, replace=True, **params),
                )
            elif isinstance(node, SearchNode):
                template = str(changes.pop("template", node.template))
                depth = str(changes.pop("depth", node.depth))
                if depth not in ("basic", "advanced"):
                    raise ByokError(f"search depth {depth!r}: use basic or advanced")
                self._edit(
                    name,
                    lambda: p.search(name, template, depth, replace=True, **node.params),
                )
            elif "function" in changes:
                function = str(changes.pop("function"))
                self._edit(name, lambda: p.python(name, function, replace=True))
        if new_name != name:
            self.rename(name, new_name)
        self._redraw()

    def _edit(self, name: str, change: Callable[[], Any]) -> bool:
        """Apply ``change`` to node ``name``; refuse it (restoring the node) if it adds an
        unknown reference or a cycle."""
        p = self.pipeline
        old = p[name]
        before = p.graph_problems()
        try:
            change()
        except ByokError as exc:
            self._refused[name] = exc.message
            return False
        after = p.graph_problems()
        new = {n: [x for x in texts if x not in before.get(n, [])] for n, texts in after.items()}
        new = {n: texts for n, texts in new.items() if texts}
        if new:
            p.add(old, replace=True)
            texts = new.get(name) or next(iter(new.values()))
            self._refused[name] = "refused: " + "; ".join(f"node {name!r} {x}" for x in texts)
            return False
        self._refused.pop(name, None)
        self.estimate()
        return True

    def rename(self, old: str, new: str) -> None:
        """Rename a node and every reference to it (the wires stay)."""
        p = self.pipeline
        p.rename(old, new)
        for other in list(p.nodes.values()):
            self._rewrite(other.name, old, new)
        if old in self.result:
            self.result[new] = self.result.pop(old)
        self._refused.pop(old, None)

    def _rewrite(self, target: str, source: str, new: str | None) -> bool:
        """Rename (or remove, ``new=None``) references to ``source`` in ``target``'s prompt."""
        p = self.pipeline
        node = p[target]
        if isinstance(node, LLMNode):
            template = replace_references(node.template, source, new)
            system = replace_references(node.system, source, new) if node.system else None
            if (template, system) == (node.template, node.system):
                return False
            p.llm(target, node.model, template, system, replace=True, **node.params)
            return True
        if isinstance(node, SearchNode):
            template = replace_references(node.template, source, new)
            if template == node.template:
                return False
            p.search(target, template, node.depth, replace=True, **node.params)
            return True
        return False

    def _on_connect(self, message: Mapping[str, Any]) -> None:
        source, target = str(message["source"]), str(message["target"])
        p = self.pipeline
        node = p[target]
        if source.startswith("input."):
            if not re.fullmatch(r"input\.[A-Za-z_][A-Za-z0-9_]*", source):
                raise ByokError(f"{source!r} is not an input (inputs are input.NAME)")
        elif source not in p:
            raise ByokError(f"cannot wire from {source!r}: there is no such node")
        if node.kind == "python":
            self._refused[target] = (
                f"python node {target!r} takes its inputs by parameter name: give its function "
                f"a parameter named {source.removeprefix('input.')!r} instead of a wire"
            )
            self._redraw()
            return
        assert isinstance(node, LLMNode | SearchNode)
        if _ref_pattern(source).search(node.template):
            return
        template = f"{node.template.rstrip()} {{{source}}}".strip()
        if isinstance(node, LLMNode):
            self._edit(
                target,
                lambda: p.llm(
                    target, node.model, template, node.system, replace=True, **node.params
                ),
            )
        else:
            self._edit(
                target,
                lambda: p.search(target, template, node.depth, replace=True, **node.params),
            )
        self._redraw()

    def _on_disconnect(self, message: Mapping[str, Any]) -> None:
        source, target = str(message["source"]), str(message["target"])
        self._rewrite(target, source, None)
        self._refused.pop(target, None)
        self._redraw()
        self.estimate()

    def _on_remove(self, message: Mapping[str, Any]) -> None:
        name = str(message["name"])
        p = self.pipeline
        if name.startswith("input."):
            short = name.removeprefix("input.")
            if short in self.declared_inputs:
                self.declared_inputs.remove(short)
            for other in list(p.nodes):
                self._rewrite(other, name, None)
        else:
            p.remove(name)
            for other in list(p.nodes):
                self._rewrite(other, name, None)
            self.result.pop(name, None)
            self._refused.pop(name, None)
        self._redraw()
        self.estimate()

    def _on_move(self, message: Mapping[str, Any]) -> None:
        for name, point in dict(message["positions"]).items():
            if name in self.pipeline or (
                name.startswith("input.") and name.removeprefix("input.") in self._input_names()
            ):
                self.pipeline.set_position(name, point[0], point[1])
        self._redraw()

    def _on_pin(self, message: Mapping[str, Any]) -> None:
        name = str(message["name"])
        try:
            if message.get("value", True):
                self.pipeline.pin(name)
            else:
                self.pipeline.unpin(name)
        except ByokError as exc:
            self._refused[name] = exc.message
        else:
            self._refused.pop(name, None)
        self._redraw()

    def _on_inputs(self, message: Mapping[str, Any]) -> None:
        values = dict(message.get("values") or {})
        self.inputs = {n: str(values.get(n, v)) for n, v in self.inputs.items()}
        self.estimate()

    def _on_save(self, message: Mapping[str, Any]) -> None:
        path = str(message.get("path") or self.path)
        self.path = path
        saved = self.pipeline.save(path)
        self._say("idle", f"saved to {saved}")

    def _on_load(self, message: Mapping[str, Any]) -> None:
        path = str(message.get("path") or self.path)
        self.path = path
        self.pipeline = Pipeline.load(path)
        self.result, self._refused, self.declared_inputs = {}, {}, []
        self.node_state = {}
        self.refresh()
        self._say("idle", f"loaded {self.pipeline.name} from {path}")

    def _on_estimate(self, message: Mapping[str, Any]) -> None:
        self.estimate()

    def _on_run(self, message: Mapping[str, Any]) -> asyncio.Task[Any] | None:
        return self.start(None)

    def _on_run_node(self, message: Mapping[str, Any]) -> asyncio.Task[Any] | None:
        return self.start(str(message["name"]))

    def _on_stop(self, message: Mapping[str, Any]) -> None:
        self.stop()

    def _renamed(self, change: dict[str, Any]) -> None:
        name = str(change["new"]).strip()
        if name and name != self.pipeline.name:
            self.pipeline.name = name

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def task(self) -> asyncio.Task[Any] | None:
        """The current (or last) run or map task; await it to wait for the end."""
        return self._task

    def estimate(self) -> None:
        """Put the pipeline's expected cost (``Pipeline.estimate``) in the header."""
        values: dict[str, Any] = dict(self._run_inputs())
        try:
            found = self.pipeline.estimate(**values) if len(self.pipeline) else None
        except ByokError as exc:
            self.run_state = {**self.run_state, "estimate_usd": None, "estimate_note": exc.message}
            return
        self.run_state = {
            **self.run_state,
            "estimate_usd": None if found is None else str(found.cost_usd),
            "estimate_note": "" if found is None else str(found),
        }

    def _run_inputs(self) -> dict[str, str]:
        return {n: str(v) for n, v in self.inputs.items()}

    def start(self, node: str | None = None) -> asyncio.Task[Any] | None:
        """Start a run (of the pipeline, or of ``node`` with its upstream from the cache) as
        a task on the running event loop (the kernel's), and return it at once."""
        if self.running:
            self._say("running", "a run is already going: press Stop first")
            return None
        if node is not None:
            self.pipeline[node]
        coro = self._arun(node, self._run_inputs())
        return self._launch(coro)

    def map(
        self, df: pandas.DataFrame, inputs: Mapping[str, str] | None = None, **kwargs: Any
    ) -> asyncio.Task[Any] | None:
        """Start ``pipeline.amap(df, ...)`` from the canvas: each card counts rows done,
        errors and dollars; Stop cancels. Await the returned task for the DataFrame.

        ``mode="batch"`` goes through the providers' batch APIs (see ``Pipeline.map``):
        a batch node's card is running while its batches are, then counts its rows. Stop
        stops waiting; the batches keep running at the provider, and the same map
        attaches to them again."""
        if self.running:
            self._say("running", "a run is already going: press Stop first")
            return None
        if kwargs.get("mode") == "batch" and kwargs.get("wait") is False:
            raise ByokError(
                "the canvas waits for its batches: for a handle, call "
                'p.map(df, mode="batch", wait=False) on the pipeline'
            )
        return self._launch(self._amap(df, inputs, kwargs))

    def _launch(self, coro: Any) -> asyncio.Task[Any]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop()
        self._task = loop.create_task(coro)
        return self._task

    def stop(self) -> bool:
        """Cancel the current run or map (the ledger records the cancelled attempts)."""
        if not self.running:
            return False
        assert self._task is not None
        self._say("stopping", "stopping...")
        return self._task.cancel()

    async def _arun(self, node: str | None, inputs: dict[str, str]) -> Any:
        p = self.pipeline
        started = asyncio.get_running_loop().time()
        if self._refused:
            self._refused.clear()
            self._redraw()
        self.node_state = {}
        self._say("running", "running...", total_usd=None, wall_s=None)
        stop_observing = p.observe(self._on_event, stream=True)
        self._own = True
        try:
            if node is None:
                result = await p.arun(**inputs)
            else:
                result = await p.arun_node(node, **inputs)
        except asyncio.CancelledError:
            self._finish("cancelled", "stopped: the run was cancelled", started)
            raise
        except PipelineError as exc:
            for name, problems in exc.problems.items():
                if name in p:
                    self._refused[name] = "; ".join(f"node {name!r} {x}" for x in problems)
            self._finish("error", exc.message, started)
            self._redraw()
            return None
        except ByokError as exc:
            if isinstance(exc, _RunError):
                self.result.update(exc.partial.nodes)
            self._finish("error", exc.message, started)
            return None
        finally:
            self._own = False
            stop_observing()
        self.result.update(result.nodes)
        self._finish("done", f"done in {result.wall_s:.2f}s", started, result.cost_usd)
        return result

    async def _amap(
        self, df: pandas.DataFrame, inputs: Mapping[str, str] | None, kwargs: dict[str, Any]
    ) -> Any:
        p = self.pipeline
        started = asyncio.get_running_loop().time()
        self.node_state = {}
        self._say("running", f"map over {len(df)} row(s)...", total_usd=None, wall_s=None)
        stop_observing = p.observe(self._on_event)
        self._own = True
        kwargs.setdefault("progress", False)
        try:
            out = await p.amap(df, inputs, **kwargs)
        except asyncio.CancelledError:
            if kwargs.get("mode") == "batch":
                why = (
                    "stopped waiting: the batches keep running at the provider; run the "
                    "same map again to attach, or `jupyter byok batches cancel ID`"
                )
            else:
                why = "stopped: the map was cancelled"
            self._finish("cancelled", why, started)
            raise
        except ByokError as exc:
            self._finish("error", exc.message, started)
            raise
        finally:
            self._own = False
            stop_observing()
        total = Decimal(str(float(out["cost_usd"].sum()))) if "cost_usd" in out else None
        self._finish("done", f"map done: {len(out)} row(s)", started, total)
        return out

    def _finish(
        self, status: str, message: str, started: float, total: Decimal | None = None
    ) -> None:
        if total is None:
            spent = [s.get("cost_usd") for s in {**self.node_state, **self._pending}.values()]
            total = sum((Decimal(c) for c in spent if c), Decimal(0))
        self._flush()
        wall = asyncio.get_running_loop().time() - started
        self._say(status, message, total_usd=str(total), wall_s=round(wall, 3))

    # ------------------------------------------------------------ live states
    def _on_event(self, event: NodeEvent) -> None:
        """A node event of a run or map started here (on this loop)."""
        with self._lock:
            self._record(event)
        self._schedule()

    def _watch(self, event: NodeEvent) -> None:
        """A node event of a run or map started from code, on any thread (``p.map`` in a
        kernel runs on a background loop thread while the cell waits)."""
        if self._own:
            return
        with self._lock:
            self._record(event)
            wait = self._last_flush + FLUSH_S - time.monotonic()
            if wait <= 0:
                self._flush()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._timed_flush)
                self._timer.daemon = True
                self._timer.start()

    def _timed_flush(self) -> None:
        with self._lock:
            self._timer = None
            self._flush()

    def _record(self, event: NodeEvent) -> None:
        name = event.node
        state = self._pending.get(name) or dict(self.node_state.get(name) or {})
        if event.row is not None:
            _count_row(state, event)
        elif event.state == "text":
            state.update(state="streaming", text=(event.text or "")[-TEXT_LIMIT:])
        elif event.state == "done" and event.result is not None:
            r = event.result
            state.update(_result_view(r))
            self.result[name] = r
        elif event.state == "error":
            state.update(state="error", error=str(event.error) or type(event.error).__name__)
        else:
            state.update(state=event.state)
            if event.state == "queued":
                state.clear()
            if event.state in ("queued", "running"):
                state.update(state=event.state)
                for key in ("text", "error", "cost_usd", "tokens_in", "tokens_out", "latency_s"):
                    state.pop(key, None)
        self._pending[name] = state

    def _schedule(self) -> None:
        if self._flush_handle is not None:
            return
        delay = max(0.0, self._last_flush + FLUSH_S - time.monotonic())
        self._flush_handle = asyncio.get_running_loop().call_later(delay, self._flush)

    def _flush(self) -> None:
        with self._lock:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
            self._last_flush = time.monotonic()
            if not self._pending:
                return
            pending, self._pending = self._pending, {}
            self.node_state = {**self.node_state, **pending}
            self.updates_sent += 1

    def __repr__(self) -> str:
        return f"PipelineBuilder({self.pipeline!r})"


def _result_view(r: NodeResult) -> dict[str, Any]:
    state = "pinned" if r.pinned else "cached" if r.cached else "done"
    return {
        "state": state,
        "text": r.text[-TEXT_LIMIT:],
        "model": r.model,
        "tokens_in": r.usage.input_tokens,
        "tokens_out": r.usage.output_tokens,
        "cost_usd": _money(r.cost_usd),
        "saved_usd": _money(r.saved_usd),
        "latency_s": round(r.latency_s, 4),
        "error": None,
    }


def _count_row(state: dict[str, Any], event: NodeEvent) -> None:
    """A map's per-node progress: rows done, errors, tokens and dollars so far."""
    if state.get("map") != event.row:  # a new map starts from zero
        state.clear()
        state["map"] = event.row
    state.setdefault("rows_done", 0)
    state.setdefault("rows_error", 0)
    if event.state == "done" and event.result is not None:
        r = event.result
        state["rows_done"] += 1
        state["tokens_in"] = state.get("tokens_in", 0) + r.usage.input_tokens
        state["tokens_out"] = state.get("tokens_out", 0) + r.usage.output_tokens
        spent = Decimal(state.get("cost_usd") or 0) + (r.cost_usd or Decimal(0))
        state["cost_usd"] = str(spent)
        state["state"] = "done"  # so far: the next row's start makes it running again
    elif event.state == "error":
        state["rows_error"] += 1
        state["error"] = str(event.error) or type(event.error).__name__
    elif event.state == "running":
        state["state"] = "running"


def _int(value: Any, what: str, low: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ByokError(f"{what} must be a whole number, got {value!r}")
    if number < low:
        raise ByokError(f"{what} must be at least {low}, got {number}")
    return number


def _float(value: Any, what: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ByokError(f"{what} must be a number, got {value!r}")
    if not low <= number <= high:
        raise ByokError(f"{what} must be between {low} and {high}, got {number}")
    return number
