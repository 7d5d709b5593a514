"""The local model manager, for ``jupyter byok local`` and ``%byok local``.

``add`` names a file the user has (the settings file stores the name and absolute path,
after checking the GGUF header); ``pull`` downloads a verified GGUF from the Hugging Face
Hub or a URL (:mod:`jupyter_byok.local_models` does that work and returns data). Both front
ends take the same subcommands: the grammar is defined once here, and :func:`run_local`
returns the text both of them show (a pull shows ``tqdm.auto``'s bar while it runs, which
is a widget in a notebook).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..local_models._spec import human_size as _size
from .render import table

__all__ = ["add_local_commands", "add_model", "parse_local_args", "render_list", "run_local"]


def add_model(name: str, path: str, *, force: bool = False, gpu_layers: str | None = None) -> str:
    """Register a ``.gguf`` file the user has as ``local:NAME``; returns the confirmation."""
    from ..config import Settings, update_settings
    from ..local_models import check_name, set_options
    from ..providers.local import check_gguf
    from ..providers.local._registry import load_registry

    name = check_name(name)
    if name in load_registry()["models"]:
        raise ConfigError(
            f"local:{name} is a pulled model: choose another name, or "
            f"`jupyter byok local remove {name}` first"
        )
    file = Path(path).expanduser().absolute()
    check_gguf(file)

    def change(settings: Settings) -> None:
        current = settings.local_models.get(name)
        if current is not None and current != str(file) and not force:
            raise ConfigError(
                f"{name!r} already points at {current}: pass --force to replace it, "
                f"or `jupyter byok local remove {name}` first"
            )
        settings.local_models[name] = str(file)

    update_settings(change)
    if gpu_layers is not None:
        set_options(name, n_gpu_layers=gpu_layers)
    return f"added local:{name} -> {file}"


def _count(value: Any) -> str:
    if not isinstance(value, int) or value <= 0:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.{1 if value < 10 * scale else 0}f}{unit}"
    return str(value)


def _facts_line(row: dict[str, Any]) -> str:
    parts = [
        str(row.get("architecture") or "?"),
        f"{_count(row.get('parameters'))} parameters",
        str(row.get("quantization") or "?"),
        f"context {row.get('context_length') or '?'}",
        "chat template" if row.get("chat_template") else "no chat template",
        f"~{_size(row.get('ram_estimate_bytes'))} RAM to load",
    ]
    return " · ".join(parts)


def render_list(rows: list[dict[str, Any]]) -> str:
    """The aligned table ``local list`` and ``%byok local list`` show."""
    cells: list[tuple[str, ...]] = [
        ("NAME", "SIZE", "QUANT", "PARAMS", "CONTEXT", "RAM EST.", "LAST USED", "FILE")
    ]
    for row in rows:
        label = f"local:{row['name']}" + (" *" if row.get("default") else "")
        state = "" if row["exists"] else " (MISSING)"
        cells.append(
            (
                label,
                _size(row.get("size_bytes")),
                str(row.get("quantization") or "-"),
                _count(row.get("parameters")),
                str(row.get("context_length") or "-"),
                _size(row.get("ram_estimate_bytes")),
                str(row.get("last_used") or "never")[:16].replace("T", " "),
                f"{row.get('path') or '-'}{state}",
            )
        )
    sources = ", ".join(
        f"{row['name']} {row['source']}" + (" (downloaded)" if row.get("downloaded") else "")
        for row in rows
    )
    return f"{table(cells, last_free=True)}\n* the default local model; sources: {sources}".rstrip()


def _pull(args: argparse.Namespace) -> str:
    # through Client: in a kernel, the Jupyter server downloads with the Hub token from
    # its keystore, so the token never enters the kernel
    from ..client import get_client

    result = get_client().local_pull(
        args.spec,
        name=args.name,
        quant=args.quant,
        sha256=args.sha256,
        n_gpu_layers=args.gpu_layers,
        show_progress=not args.quiet,
    )
    if args.json:
        return json.dumps(result, indent=2)
    lines = [str(result["message"])]
    if result.get("facts"):
        lines.append(f"  {_facts_line(result['facts'])}")
    lines.append(f"  use it as local:{result['name']}")
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> str:
    from ..local_models import list_local_models

    rows = list_local_models()
    return json.dumps(rows, indent=2) if args.json else render_list(rows)


def _remove(args: argparse.Namespace) -> str:
    from ..local_models import remove_model

    return str(remove_model(args.name)["message"])


def _default(args: argparse.Namespace) -> str:
    from ..local_models import default_local_name, set_default

    if args.name is None:
        return f"local:{default_local_name()}"
    return str(set_default(args.name)["message"])


def _set(args: argparse.Namespace) -> str:
    from ..local_models import set_options

    return str(set_options(args.name, n_gpu_layers=args.gpu_layers)["message"])


def _test(args: argparse.Namespace) -> str:
    from ..local_models import test_model

    report = test_model(args.name)
    return (
        f"local:{args.name}: {report['text']!r}\n"
        f"  {report['output_tokens']} tokens at {report['tokens_per_s']} tokens/s "
        f"(first token after {report['first_token_s']} s, n_gpu_layers {report['n_gpu_layers']})"
    )


def _add(args: argparse.Namespace) -> str:
    return add_model(args.name, args.path, force=args.force, gpu_layers=args.gpu_layers)


def add_local_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """``add|pull|list|remove|default|set|test``, as ``jupyter byok local`` and ``%byok local``."""
    p = sub.add_parser("add", help="register a .gguf file under a name (use it as local:NAME)")
    p.add_argument("name")
    p.add_argument("path")
    p.add_argument("--force", action="store_true", help="replace an existing name")
    p.add_argument("--gpu-layers", default=None, help="auto (default) or a number; -1: all")
    p.set_defaults(local_run=_add)
    p = sub.add_parser(
        "pull",
        help="download a GGUF model (Hugging Face Hub or URL), verified, and register it",
        description="SPEC: hf:OWNER/REPO/FILE.gguf[@REVISION], hf:OWNER/REPO --quant Q4_K_M, "
        "or an https://...gguf URL with --sha256. Gated repos use the keystore secret "
        "'huggingface' (jupyter byok keys set secret --name huggingface).",
    )
    p.add_argument("spec")
    p.add_argument("--name", default=None, help="the name to use it by (local:NAME)")
    p.add_argument("--quant", default=None, help="pick the repo's file with this quantization")
    p.add_argument("--sha256", default=None, help="the expected SHA-256 (required for URLs)")
    p.add_argument("--gpu-layers", default=None, help="auto (default) or a number; -1: all")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(local_run=_pull)
    p = sub.add_parser("list", help="the local models with size, quantization, context, RAM")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(local_run=_list)
    p = sub.add_parser(
        "remove", help="forget a name; deletes the file only if jupyter_byok downloaded it"
    )
    p.add_argument("name")
    p.set_defaults(local_run=_remove)
    p = sub.add_parser("default", help="show or set the default local model")
    p.add_argument("name", nargs="?", default=None)
    p.set_defaults(local_run=_default)
    p = sub.add_parser("set", help="per-model options")
    p.add_argument("name")
    p.add_argument("--gpu-layers", default=None, help="auto or a number (-1: all layers)")
    p.set_defaults(local_run=_set)
    p = sub.add_parser("test", help="send a short prompt (in a child process), show tokens/s")
    p.add_argument("name")
    p.set_defaults(local_run=_test)


def parse_local_args(argv: Sequence[str], prog: str = "%byok local") -> argparse.Namespace:
    """``argv`` (default ``list``) parsed by the shared grammar."""
    parser = argparse.ArgumentParser(prog=prog, add_help=False)
    add_local_commands(parser.add_subparsers(dest="local_command", required=True))
    return parser.parse_args(list(argv) or ["list"])


def run_local(args: argparse.Namespace) -> str:
    """Carry out a parsed local subcommand; returns the text to show."""
    result: str = args.local_run(args)
    return result
