"""``jupyter byok local add|pull|list|remove|default|set|test``: the local model manager.

``add`` names a file the user has (the settings file stores the name and absolute path,
after checking the GGUF header); ``pull`` downloads a verified GGUF from the Hugging Face
Hub or a URL (see :mod:`jupyter_byok.local_models`, which does the work and returns data:
this module only parses arguments and prints).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..local_models._spec import human_size as _size

__all__ = ["register", "render_list", "run_local_command"]


def cmd_local_add(args: argparse.Namespace) -> int:
    from ..config import Settings, update_settings
    from ..local_models import check_name, set_options
    from ..providers.local import check_gguf
    from ..providers.local._registry import load_registry

    name: str = check_name(args.name)
    if name in load_registry()["models"]:
        raise ConfigError(
            f"local:{name} is a pulled model: choose another name, or "
            f"`jupyter byok local remove {name}` first"
        )
    path = Path(args.path).expanduser().absolute()
    check_gguf(path)

    def change(settings: Settings) -> None:
        current = settings.local_models.get(name)
        if current is not None and current != str(path) and not args.force:
            raise ConfigError(
                f"{name!r} already points at {current}: pass --force to replace it, "
                f"or `jupyter byok local remove {name}` first"
            )
        settings.local_models[name] = str(path)

    update_settings(change)
    if args.gpu_layers is not None:
        set_options(name, n_gpu_layers=args.gpu_layers)
    print(f"added local:{name} -> {path}", flush=True)
    return 0


def cmd_local_pull(args: argparse.Namespace) -> int:
    from ..local_models import pull

    result = pull(
        args.spec,
        name=args.name,
        quant=args.quant,
        sha256=args.sha256,
        n_gpu_layers=args.gpu_layers,
        show_progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2), flush=True)
        return 0
    print(result.message, flush=True)
    facts = result.facts
    if facts:
        print(f"  {_facts_line(facts)}", flush=True)
    print(f"  use it as local:{result.name}", flush=True)
    return 0


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
    """The aligned table ``local list`` and ``%byok local list`` print."""
    header = ("NAME", "SIZE", "QUANT", "PARAMS", "CONTEXT", "RAM EST.", "LAST USED", "FILE")
    table = [header]
    for row in rows:
        label = f"local:{row['name']}" + (" *" if row.get("default") else "")
        state = "" if row["exists"] else " (MISSING)"
        table.append(
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
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in table
    ]
    lines.append(
        "* the default local model; sources: "
        + ", ".join(
            f"{row['name']} {row['source']}" + (" (downloaded)" if row.get("downloaded") else "")
            for row in rows
        )
    )
    return "\n".join(line.rstrip() for line in lines)


def cmd_local_list(args: argparse.Namespace) -> int:
    from ..local_models import list_local_models

    rows = list_local_models()
    if args.json:
        print(json.dumps(rows, indent=2), flush=True)
        return 0
    print(render_list(rows), flush=True)
    return 0


def cmd_local_remove(args: argparse.Namespace) -> int:
    from ..local_models import remove_model

    print(remove_model(args.name)["message"], flush=True)
    return 0


def cmd_local_default(args: argparse.Namespace) -> int:
    from ..local_models import default_local_name, set_default

    if args.name is None:
        print(f"local:{default_local_name()}", flush=True)
        return 0
    print(set_default(args.name)["message"], flush=True)
    return 0


def cmd_local_set(args: argparse.Namespace) -> int:
    from ..local_models import set_options

    print(set_options(args.name, n_gpu_layers=args.gpu_layers)["message"], flush=True)
    return 0


def cmd_local_test(args: argparse.Namespace) -> int:
    from ..local_models import test_model

    report = test_model(args.name)
    print(f"local:{args.name}: {report['text']!r}", flush=True)
    print(
        f"  {report['output_tokens']} tokens at {report['tokens_per_s']} tokens/s "
        f"(first token after {report['first_token_s']} s, n_gpu_layers {report['n_gpu_layers']})",
        flush=True,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``local add|pull|list|remove|default|set|test`` to the ``jupyter byok`` command."""
    local = subparsers.add_parser("local", help="local GGUF models: pull, list, remove, default")
    sub = local.add_subparsers(dest="local_command", required=True)
    p = sub.add_parser("add", help="register a .gguf file under a name (use it as local:NAME)")
    p.add_argument("name")
    p.add_argument("path")
    p.add_argument("--force", action="store_true", help="replace an existing name")
    p.add_argument("--gpu-layers", default=None, help="auto (default) or a number; -1: all")
    p.set_defaults(func=cmd_local_add)
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
    p.set_defaults(func=cmd_local_pull)
    p = sub.add_parser("list", help="the local models with size, quantization, context, RAM")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_local_list)
    p = sub.add_parser(
        "remove", help="forget a name; deletes the file only if jupyter_byok downloaded it"
    )
    p.add_argument("name")
    p.set_defaults(func=cmd_local_remove)
    p = sub.add_parser("default", help="show or set the default local model")
    p.add_argument("name", nargs="?", default=None)
    p.set_defaults(func=cmd_local_default)
    p = sub.add_parser("set", help="per-model options")
    p.add_argument("name")
    p.add_argument("--gpu-layers", default=None, help="auto or a number (-1: all layers)")
    p.set_defaults(func=cmd_local_set)
    p = sub.add_parser("test", help="send a short prompt (in a child process), show tokens/s")
    p.add_argument("name")
    p.set_defaults(func=cmd_local_test)


def run_local_command(argv: list[str], prog: str = "%byok") -> int:
    """``%byok local ...``: the same subcommands, parsed and printed the same way (a pull
    shows ``tqdm.auto``'s bar, which is a widget in a notebook)."""
    parser = argparse.ArgumentParser(prog=prog, add_help=False)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["local", *(argv or ["list"])])
    result: int = args.func(args)
    return result
