"""``jupyter byok local add|list|remove``: name local GGUF models.

The settings file stores a name and an absolute path, never the model itself; ``add``
checks the GGUF header first, so a registered name points at something llama.cpp can read.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from .errors import ConfigError

__all__ = ["register"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _size(nbytes: int | None) -> str:
    if nbytes is None:
        return "-"
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def cmd_local_add(args: argparse.Namespace) -> int:
    from .config import Settings, update_settings
    from .providers.local import EMBEDDED_NAME, check_gguf

    name: str = args.name
    if not _NAME.fullmatch(name) or name.endswith(".gguf"):
        raise ConfigError(
            f"invalid local model name {name!r}: use letters, digits, '.', '_' or '-' "
            "(up to 64, not ending in .gguf)"
        )
    if name == EMBEDDED_NAME:
        raise ConfigError(f"{EMBEDDED_NAME!r} is the embedded model: choose another name")
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
    print(f"added local:{name} -> {path}", flush=True)
    return 0


def cmd_local_list(args: argparse.Namespace) -> int:
    from .providers.local import available_models

    rows = available_models()
    if args.json:
        print(json.dumps(rows, indent=2), flush=True)
        return 0
    width = max(len(f"local:{row['name']}") for row in rows)
    for row in rows:
        state = "ok" if row["exists"] else "MISSING"
        label = f"local:{row['name']}".ljust(width)
        size = _size(row["size_bytes"]).rjust(9)
        print(f"{label}  {row['source']:<10}  {size}  {state:<7}  {row['path'] or '-'}")
    return 0


def cmd_local_remove(args: argparse.Namespace) -> int:
    from .config import Settings, update_settings
    from .providers.local import EMBEDDED_NAME

    name: str = args.name
    if name == EMBEDDED_NAME:
        raise ConfigError(f"{EMBEDDED_NAME!r} is the embedded model and cannot be removed")

    def change(settings: Settings) -> None:
        if name not in settings.local_models:
            known = ", ".join(sorted(settings.local_models)) or "none"
            raise ConfigError(f"no local model named {name!r} (registered: {known})")
        del settings.local_models[name]

    update_settings(change)
    print(f"removed local:{name} (the model file itself was not touched)", flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``local add|list|remove`` to the ``jupyter byok`` command."""
    local = subparsers.add_parser("local", help="name local GGUF models")
    sub = local.add_subparsers(dest="local_command", required=True)
    p = sub.add_parser("add", help="register a .gguf file under a name (use it as local:NAME)")
    p.add_argument("name")
    p.add_argument("path")
    p.add_argument("--force", action="store_true", help="replace an existing name")
    p.set_defaults(func=cmd_local_add)
    p = sub.add_parser("list", help="the embedded model and the registered ones")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_local_list)
    p = sub.add_parser("remove", help="forget a registered name (the file is kept)")
    p.add_argument("name")
    p.set_defaults(func=cmd_local_remove)
