"""``%%byok`` and ``%byok``: thin IPython magics over :class:`~jupyter_byok.client.Client`.

The cell magic streams the answer into one display that updates in place, renders it
per ``-f``, and adds a footer with model, tokens, cost and latency. Prompt interpolation
is brace-safe (see :mod:`jupyter_byok.interpolate`): only referenced names that exist are
read from the user namespace. Expected failures print one red line, never a traceback,
and no output or metadata ever carries a key.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import HTML, JSON, Markdown, display

from ._format import format_cost
from .client import get_client
from .engine import build_messages
from .errors import ByokError
from .interpolate import MISSING, interpolate
from .types import DEFAULT_MAX_TOKENS, Completion, Message, Request

__all__ = ["ByokMagics", "footer_text", "load_ipython_extension"]

FORMATS = ("markdown", "text", "code", "json", "html")
_FENCE = re.compile(r"^```[\w+-]*\s*\n(.*?)\n```\s*$", re.DOTALL)
_STREAM_INTERVAL_S = 0.05
#: The key form of ``%byok keys set``, rendered by the labextension (``keyform.ts``).
KEYFORM_MIME = "application/vnd.jupyter.byok.keyform+json"


def keyform_bundle(provider: str, name: str = "default", tier: str | None = None) -> dict[str, Any]:
    """The display bundle of ``%byok keys set``: a key form the labextension renders.

    The browser posts the key typed into it straight to the server's ``POST /byok/keys``,
    so no key ever passes through the kernel or lands in the notebook; the bundle holds only
    what names the key. Where nothing renders the form, ``text/plain`` says what to do.
    """
    from .keys import label as key_label
    from .keys import validate_name
    from .providers import SECRET_NAMESPACE, known_provider_names

    if provider == "local" or (
        provider != SECRET_NAMESPACE and provider not in known_provider_names()
    ):
        known = ", ".join(sorted(known_provider_names() - {"local"}))
        raise ByokError(f"unknown provider {provider!r}: use one of {known} or 'secret'")
    validate_name(name)
    label = key_label(provider, name)
    command = f"jupyter byok keys set {provider}"
    command += "" if name == "default" else f" --name {name}"
    command += f" --tier {tier}" if tier else ""
    return {
        KEYFORM_MIME: {"provider": provider, "name": name, "tier": tier, "label": label},
        "text/plain": (
            f"To store the {label} key, use `{command}` in a terminal, or the BYOK panel in "
            "JupyterLab (keys never pass through the kernel; this front end cannot show the "
            "key form)."
        ),
    }


def _error(message: str) -> None:
    print(f"byok: {message}", file=sys.stderr, flush=True)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def footer_text(completion: Completion) -> str:
    u = completion.usage
    tokens = f"{u.input_tokens:,} → {u.output_tokens:,} tokens"
    if u.cached_input_tokens:
        tokens += f" ({u.cached_input_tokens:,} cached)"
    parts = [completion.model, tokens, format_cost(completion.cost_usd, completion.cost_source)]
    latency = completion.latency_s
    parts.append(f"{latency * 1000:.0f} ms" if latency < 1 else f"{latency:.2f} s")
    if completion.cached:
        parts.append("from cache")
    return " · ".join(parts)


def provenance(completion: Completion) -> dict[str, Any]:
    u = completion.usage
    return {
        "jupyter_byok": {
            "provider": completion.provider,
            "model": completion.model,
            "request_id": completion.request_id,
            "response_id": completion.response_id,
            "ledger_id": completion.ledger_id,
            "input_tokens": u.input_tokens,
            "cached_input_tokens": u.cached_input_tokens,
            "output_tokens": u.output_tokens,
            "cost_usd": None if completion.cost_usd is None else str(completion.cost_usd),
            "cost_source": completion.cost_source,
            "cached": completion.cached,
        }
    }


def strip_fences(text: str) -> str:
    match = _FENCE.match(text.strip())
    return match.group(1) if match else text.strip()


def parse_json_answer(text: str) -> Any:
    """The JSON in an answer: the whole text, a fenced block, or the outermost object/array.

    Models often wrap JSON in a sentence or a code fence; anything else raises ValueError.
    """
    raw = strip_fences(text)
    try:
        return json.loads(raw)
    except ValueError as first:
        starts = [i for i in (raw.find("{"), raw.find("[")) if i >= 0]
        if not starts:
            raise first from None
        start = min(starts)
        end = raw.rfind("}" if raw[start] == "{" else "]")
        if end <= start:
            raise first from None
        return json.loads(raw[start : end + 1])


@magics_class
class ByokMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.chats: dict[str, list[Message]] = {}

    @property
    def ip(self) -> Any:
        """The shell (never None once the magics are registered)."""
        assert self.shell is not None
        return self.shell

    # ------------------------------------------------------------ cell magic
    @magic_arguments()
    @argument("model", nargs="?", default=None, help="provider:model, an alias, or the default")
    @argument("-s", "--system", default=None, help="system prompt")
    @argument("-t", "--temperature", type=float, default=None)
    @argument("--max-tokens", type=int, default=None)
    @argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    @argument("-f", "--format", default="markdown", help="markdown|text|code|json|html")
    @argument("-o", "--output", default=None, metavar="VAR", help="store the Completion in VAR")
    @argument("--no-stream", action="store_true")
    @argument("--cache", action="store_true", help="reuse an identical earlier answer")
    @argument("--estimate", action="store_true", help="show the expected cost, do not call")
    @argument("--feature", default="magic")
    @argument("--chat", default=None, metavar="NAME", help="keep a conversation across cells")
    @argument("--no-interpolate", action="store_true")
    @line_cell_magic
    def byok(self, line: str, cell: str | None = None) -> Any:
        """%%byok [MODEL] [options]: ask a model; %byok SUBCOMMAND: status, keys, usage..."""
        if cell is None:
            return self._line(line)
        try:
            # shlex (POSIX rules) so that quoted values lose their quotes: -s "Be terse"
            args = self.byok.parser.parse_args(shlex.split(line))
        except (SystemExit, Exception) as exc:  # argparse exits on bad arguments
            _error(f"bad arguments ({exc}); see %%byok? for the options")
            return None
        try:
            return self._cell(args, cell)
        except ByokError as exc:
            _error(str(exc))
        except KeyboardInterrupt:
            _error("interrupted; the request was cancelled")
        return None

    def _namespace_lookup(self, name: str) -> Any:
        return self.ip.user_ns.get(name, MISSING)

    def _origin(self) -> dict[str, str]:
        from .client import default_origin

        origin = default_origin()
        parent = getattr(self.shell, "parent_header", None) or {}
        cell_id = (parent.get("metadata") or {}).get("cellId")
        if cell_id:
            origin["cell_id"] = str(cell_id)
        return origin

    def _cell(self, args: argparse.Namespace, cell: str) -> None:
        if args.format not in FORMATS:
            raise ByokError(f"unknown format {args.format!r}: use one of {', '.join(FORMATS)}")
        prompt = cell if args.no_interpolate else interpolate(cell, self._namespace_lookup)
        if not prompt.strip():
            raise ByokError("the cell is empty: write the prompt below the %%byok line")
        params: dict[str, Any] = {}
        for item in args.param:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ByokError(f"bad -p {item!r}: use -p KEY=VALUE")
            params[key.strip()] = _parse_value(value.strip())
        if args.temperature is not None:
            params["temperature"] = args.temperature
        if args.max_tokens is not None:
            params["max_tokens"] = args.max_tokens

        history = self.chats.get(args.chat, []) if args.chat else []
        messages = [*history, *build_messages(prompt)]
        if args.system:
            messages = build_messages(messages, args.system)
        request = Request(
            model=args.model or "",
            messages=messages,
            params=params,
            stream=not args.no_stream,
            feature=args.feature,
            origin=self._origin(),
            cache=args.cache,
        )
        if args.estimate:
            self._show_estimate(request)
            return
        completion, handle = self._run(request, args.format)
        if args.chat:
            self.chats[args.chat] = [
                *messages,
                Message("assistant", completion.text),
            ]
        if args.output:
            self.ip.user_ns[args.output] = completion
        self._render(completion, args.format, handle)

    def _run(self, request: Request, fmt: str) -> tuple[Completion, Any]:
        """Call the model; when streaming, show the text growing in one display."""
        client = get_client()
        if not request.stream:
            return client.complete(request), None
        handle = display(Markdown("…"), display_id=True)
        text, last, completion = "", 0.0, None
        for item in client.stream(request):
            if isinstance(item, Completion):
                completion = item
                continue
            text += item
            now = time.monotonic()
            if handle is not None and now - last >= _STREAM_INTERVAL_S:
                handle.update(self._streaming_view(text, fmt))
                last = now
        assert completion is not None
        return completion, handle

    @staticmethod
    def _streaming_view(text: str, fmt: str) -> Any:
        if fmt == "markdown":
            return Markdown(text)
        return {"text/plain": text}

    def _render(self, completion: Completion, fmt: str, handle: Any = None) -> None:
        """The final answer replaces the streamed text in place; the footer goes below."""
        text, meta = completion.text, provenance(completion)

        def show(obj: Any, raw: bool = False) -> None:
            if handle is not None:
                handle.update(obj, raw=raw, metadata=meta)
            else:
                display(obj, raw=raw, metadata=meta)

        if fmt == "markdown":
            show(Markdown(text))
        elif fmt == "text":
            show({"text/plain": text}, raw=True)
        elif fmt == "html":
            show(HTML(text))
        elif fmt == "code":
            code = strip_fences(text)
            show(Markdown(f"```\n{code}\n```"))
            self.ip.set_next_input(code, replace=False)
        elif fmt == "json":
            try:
                data = parse_json_answer(text)
            except ValueError as exc:
                show({"text/plain": text}, raw=True)
                _error(f"the answer is not valid JSON ({exc.args[0]}); the raw text is above")
            else:
                show(JSON(data))
        footer = footer_text(completion)
        display(
            {
                "text/plain": footer,
                "text/html": f'<div style="font-size:0.85em;opacity:0.7">{footer}</div>',
            },
            raw=True,
            metadata=meta,
        )
        for warning in completion.warnings:
            _error(warning if warning.startswith("ledger:") else f"budget: {warning}")

    def _show_estimate(self, request: Request) -> None:
        from .commands.prices import estimate

        found = estimate(request.model, request.messages, request.params.get("max_tokens"))
        print(f"{found} (not sent)")

    # ------------------------------------------------------------ line magic
    def _line(self, line: str) -> Any:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            _error(f"cannot parse the line ({exc})")
            return None
        command, rest = (words[0], words[1:]) if words else ("status", [])
        handler = getattr(self, f"_cmd_{command.replace('-', '_')}", None)
        if handler is None:
            _error(
                f"unknown subcommand {command!r}: use status, keys, models, default, alias, "
                "unalias, usage, budget, search, price, estimate, config or doctor"
            )
            return None
        try:
            return handler(rest)
        except ByokError as exc:
            _error(str(exc))
        except SystemExit:
            pass
        return None

    def _cmd_status(self, rest: list[str]) -> None:
        from .commands.keys import render_status, status_report

        print(render_status(status_report(get_client())))

    def _cmd_keys(self, rest: list[str]) -> None:
        """``%byok keys`` (per provider), ``%byok keys list`` (the stored keys), ``%byok
        keys set`` (the key form: the key goes from the browser to the server) and
        ``%byok keys delete``: as ``jupyter byok keys``, rendered the same way."""
        from .commands.keys import render_key_table, render_overview
        from .keys import label as key_label

        client = get_client()
        if rest and rest[0] in ("set", "delete"):
            parser = argparse.ArgumentParser(prog=f"%byok keys {rest[0]}", add_help=False)
            parser.add_argument("provider")
            parser.add_argument("--name", default=None)
            parser.add_argument("--tier", choices=["free", "paid"], default=None)
            args = parser.parse_args(rest[1:])
            provider, _, at_name = args.provider.partition("@")
            name = args.name or at_name or "default"
            label = key_label(provider, name)
            if rest[0] == "set":
                display(keyform_bundle(provider, name, args.tier), raw=True)
                return
            if not client.delete_key(provider, name):
                raise ByokError(f"no stored key {label}")
            print(f"deleted {label}")
            return
        overview = client.keys_overview()
        if rest and rest[0] == "list":
            print(render_key_table(overview["keys"]))
            return
        if rest:
            raise ByokError(f"unknown keys command {rest[0]!r}: use list, set or delete")
        print(render_overview(overview))

    def _cmd_models(self, rest: list[str]) -> None:
        from .commands.prices import price_table

        rows = price_table()["models"]
        if rest:
            rows = [r for r in rows if r.get("provider") == rest[0]]
        if not rows:
            print("no priced models" + (f" for {rest[0]}" if rest else ""))
            return
        print(f"{'MODEL':<45} {'INPUT/1M':>10} {'OUTPUT/1M':>10}")
        for row in rows:
            print(
                f"{row['provider'] + ':' + row['model']:<45} "
                f"{'$' + str(row.get('input_per_1m', '?')):>10} "
                f"{'$' + str(row.get('output_per_1m', '?')):>10}"
            )

    def _cmd_default(self, rest: list[str]) -> None:
        from .config import update_settings
        from .models import default_model, parse_model

        if not rest:
            print(default_model())
            return
        ref = parse_model(rest[0])

        def change(settings: Any) -> None:
            settings.default_model = rest[0]

        update_settings(change)
        print(f"default model: {rest[0]} ({ref.id})")

    def _cmd_alias(self, rest: list[str]) -> None:
        from .config import load_settings, update_settings
        from .models import parse_model

        if not rest:
            for name, target in sorted(load_settings().aliases.items()):
                print(f"{name} → {target}")
            return
        if len(rest) != 2:
            raise ByokError("use %byok alias NAME MODEL")
        name, target = rest
        parse_model(target)

        def change(settings: Any) -> None:
            settings.aliases[name] = target

        update_settings(change)
        print(f"alias {name} → {target}")

    def _cmd_unalias(self, rest: list[str]) -> None:
        from .config import update_settings

        if len(rest) != 1:
            raise ByokError("use %byok unalias NAME")
        found: list[bool] = []

        def change(settings: Any) -> None:
            found.append(settings.aliases.pop(rest[0], None) is not None)

        update_settings(change)
        if not found[0]:
            raise ByokError(f"no alias {rest[0]!r}")
        print(f"removed alias {rest[0]}")

    def _cmd_usage(self, rest: list[str]) -> Any:
        parser = argparse.ArgumentParser(prog="%byok usage", add_help=False)
        parser.add_argument("--since", default="7d")
        parser.add_argument("--by", default="provider")
        parser.add_argument("--no-chart", action="store_true")
        parser.add_argument("--scope", choices=("me", "team", "all"))  # a shared ledger's
        args = parser.parse_args(rest)
        from .commands.usage import usage_frame, usage_summary

        summary = usage_summary([args.by], since=args.since, scope=args.scope)
        if not summary["groups"]:
            print(f"no calls since {args.since}")
            return None
        import pandas as pd

        columns = [args.by, "calls", "input_tokens", "output_tokens", "cost_usd"]
        table = pd.DataFrame([{c: g[c] for c in columns} for g in summary["groups"]])
        display(table.set_index(args.by).sort_values("cost_usd", ascending=False))
        if not args.no_chart:
            from .charts import cost_by

            display(cost_by(usage_frame(since=args.since, scope=args.scope), by=args.by))
        return None

    def _cmd_search(self, rest: list[str]) -> Any:
        if not rest:
            raise ByokError('use %byok search "your query" [--advanced]')
        depth = "advanced" if "--advanced" in rest else "basic"
        query = " ".join(w for w in rest if w != "--advanced")
        result = get_client().search(query, depth=depth, origin=self._origin())
        import pandas as pd

        frame = pd.DataFrame(
            [
                {"title": r.get("title"), "url": r.get("url"), "score": r.get("score")}
                for r in result.results
            ]
        )
        if result.answer:
            display(Markdown(result.answer))
        display(frame)
        print(
            f"tavily {depth} · {result.usage.search_credits:g} credits · {format_cost(result.cost_usd)}"
        )
        return None

    def _cmd_price(self, rest: list[str]) -> None:
        from .commands.prices import price

        if len(rest) != 1:
            raise ByokError("use %byok price MODEL")
        found = price(rest[0])
        if found["price"] is None:
            print(f"{found['id']}: no price known; its calls are recorded with cost unknown")
            return
        print(f"{found['id']}:")
        for key, value in found["price"].items():
            print(f"  {key}: {value}")

    def _cmd_estimate(self, rest: list[str]) -> None:
        if len(rest) < 2:
            raise ByokError('use %byok estimate MODEL "prompt text" [--max-tokens N]')
        max_tokens = DEFAULT_MAX_TOKENS
        if "--max-tokens" in rest:
            i = rest.index("--max-tokens")
            max_tokens = int(rest[i + 1])
            rest = rest[:i] + rest[i + 2 :]
        from .commands.prices import estimate

        print(f"{estimate(rest[0], ' '.join(rest[1:]), max_tokens)} (not sent)")

    def _cmd_budget(self, rest: list[str]) -> None:
        """``%byok budget list | set PERIOD AMOUNT [--provider P] | remove NAME``."""
        from .commands.budgets import parse_budget_args, run_budget

        print(run_budget(parse_budget_args(rest)))

    def _cmd_config(self, rest: list[str]) -> None:
        from .commands.config import set_config
        from .config import load_settings

        if not rest:
            print(json.dumps(load_settings().to_json(), indent=2))
            return
        if len(rest) == 2:
            stored = set_config(rest[0], rest[1])
            print(f"{rest[0]} = {json.dumps(stored)}")
            return
        raise ByokError(
            "use %byok config [require_server true|false | local_extra_buffers auto|on|off]"
        )

    def _cmd_local(self, rest: list[str]) -> None:
        """``%byok local [list|pull|remove|default|set|test|add] ...``: the local model
        manager, as ``jupyter byok local`` (a pull shows a progress widget)."""
        from .commands.local import parse_local_args, run_local

        print(run_local(parse_local_args(rest)))

    def _cmd_doctor(self, rest: list[str]) -> None:
        from IPython.display import display

        from .commands.doctor import doctor, render_text

        report = doctor(probe="--probe" in rest)
        text = render_text(report)
        display(
            {"text/plain": text, "text/markdown": f"```text\n{text}\n```"},
            raw=True,
        )


def load_ipython_extension(ipython: Any) -> None:
    from .redact import install_log_filter

    install_log_filter()
    ipython.register_magics(ByokMagics)
