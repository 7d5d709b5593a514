"""Validation of per-call parameters: bad values fail with one clear line before any work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import LocalModelError
from ...types import Message

#: a local model's own default output limit, smaller than the cloud's (types.DEFAULT_MAX_TOKENS):
#: generation runs on this machine's CPU, where 1,024 tokens of a small model take minutes
DEFAULT_MAX_TOKENS = 256
# Sampling defaults mirror llama-cpp's create_chat_completion, so "the same settings" means
# the same thing here and in raw llama-cpp.
_SAMPLING_DEFAULTS: dict[str, Any] = {
    "temperature": 0.2,
    "top_p": 0.95,
    "top_k": 40,
    "min_p": 0.05,
    "repeat_penalty": 1.1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}


def _int_param(params: dict[str, Any], name: str, default: int, *, minimum: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LocalModelError(f"{name} must be a whole number >= {minimum}, not {value!r}")
    return value


def _float_param(params: dict[str, Any], name: str) -> float:
    value = params.get(name)
    if value is None:
        return float(_SAMPLING_DEFAULTS[name])
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise LocalModelError(f"{name} must be a number >= 0, not {value!r}")
    return float(value)


def _sampling(params: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``Llama.create_completion`` (unknown params are left alone)."""
    kwargs: dict[str, Any] = {
        name: _float_param(params, name) for name in _SAMPLING_DEFAULTS if name != "top_k"
    }
    kwargs["top_k"] = _int_param(params, "top_k", _SAMPLING_DEFAULTS["top_k"], minimum=0)
    kwargs["max_tokens"] = _int_param(params, "max_tokens", DEFAULT_MAX_TOKENS, minimum=1)
    seed = params.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise LocalModelError(f"seed must be a whole number, not {seed!r}")
    kwargs["seed"] = seed
    stop = params.get("stop")
    if stop is None:
        kwargs["stop"] = []
    elif isinstance(stop, str):
        kwargs["stop"] = [stop]
    elif isinstance(stop, list | tuple) and all(isinstance(s, str) for s in stop):
        kwargs["stop"] = list(stop)
    else:
        raise LocalModelError(f"stop must be a string or a list of strings, not {stop!r}")
    return kwargs


def _message_dicts(messages: Sequence[Message | dict[str, str]]) -> list[dict[str, str]]:
    if not messages:
        raise LocalModelError("no messages to send: pass at least one user message")
    return [
        {"role": m.role, "content": m.content} if isinstance(m, Message) else dict(m)
        for m in messages
    ]
