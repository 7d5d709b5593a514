"""Tab completion for ``%%byok MODEL`` and ``%byok ...`` in IPython: model ids (the local
models, registered and pulled, the priced cloud models and the aliases), subcommands and
local model names. Registered by ``%load_ext jupyter_byok``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["model_ids", "register"]

SUBCOMMANDS = (
    "status",
    "keys",
    "models",
    "default",
    "alias",
    "unalias",
    "usage",
    "budget",
    "search",
    "price",
    "estimate",
    "config",
    "doctor",
    "local",
)
LOCAL_SUBCOMMANDS = ("list", "pull", "add", "remove", "default", "set", "test")
#: ``%byok WORD`` followed by a model id
_TAKES_MODEL = {"default", "price", "estimate"}


def model_ids() -> list[str]:
    """Every model id a user may type: local models first, then priced models, aliases."""
    from .config import load_settings
    from .pricing import load_prices
    from .providers.local import available_models

    ids = [f"local:{m['name']}" for m in available_models() if m.get("exists")]
    ids += sorted(load_prices())
    ids += sorted(load_settings().aliases)
    return list(dict.fromkeys(ids))


def _local_names() -> list[str]:
    from .providers.local import available_models

    return [m["name"] for m in available_models()]


def _candidates(command: str, args: list[str]) -> list[str]:
    if command == "%%byok":
        return model_ids() if not args else []
    if not args:
        return list(SUBCOMMANDS)
    if len(args) == 1 and args[0] in _TAKES_MODEL:
        return model_ids()
    if len(args) == 2 and args[0] == "alias":
        return model_ids()
    if args[0] == "local":
        if len(args) == 1:
            return list(LOCAL_SUBCOMMANDS)
        if len(args) == 2 and args[1] in ("remove", "default", "test", "set"):
            return _local_names()
    return []


def _complete(self: Any, event: Any) -> list[str]:
    text = str(event.text_until_cursor)
    words = text.split()
    current = "" if not words or text[-1:].isspace() else words[-1]
    before = words[:-1] if current else words
    try:
        candidates = _candidates(str(event.command), before[1:])
    except Exception:  # completion must never raise into the user's typing
        return []
    # IPython completes the text after its last delimiter (":" splits "local:sm").
    cut = len(current) - len(str(event.symbol))
    return [c[cut:] for c in candidates if c.startswith(current)]


def register(ipython: Any) -> None:
    ipython.set_hook("complete_command", _complete, str_key="%byok")
    ipython.set_hook("complete_command", _complete, str_key="%%byok")
