"""Chat prompts formatted and tokenized exactly as llama-cpp's own chat handler does."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ...errors import ByokError, LocalModelError
from ._cache import _Entry
from ._params import _sampling


def _formatter(entry: _Entry, chat_format: str | None) -> Any:
    """The ChatFormatter llama-cpp's chat handler for this model would use."""
    llama = entry.llama
    name = chat_format or llama.chat_format
    if name in entry.formatters:
        return entry.formatters[name]
    from llama_cpp import llama_chat_format

    handler = llama._chat_handlers.get(name)
    if handler is None:
        try:
            handler = llama_chat_format.get_chat_completion_handler(name)
        except Exception:
            registry = llama_chat_format.LlamaChatCompletionHandlerRegistry()._chat_handlers
            known = ", ".join(sorted({*registry, *llama._chat_handlers}))
            raise LocalModelError(f"unknown chat_format {name!r}: use one of {known}")
    formatter = None
    # llama-cpp wraps each prompt formatter in a closure; the formatter is what we need.
    if "chat_formatter" in handler.__code__.co_freevars and handler.__closure__:
        index = handler.__code__.co_freevars.index("chat_formatter")
        formatter = handler.__closure__[index].cell_contents
    if formatter is None:
        raise LocalModelError(
            f"chat_format {name!r} is a special handler, not a prompt template: "
            "choose a template format such as chatml or llama-3"
        )
    entry.formatters[name] = formatter
    return formatter


@dataclass
class _Prepared:
    tokens: list[int]
    kwargs: dict[str, Any]


def _prepare(
    entry: _Entry,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    cancel: threading.Event,
) -> _Prepared:
    """Format and tokenize the chat exactly as llama-cpp's chat handler does."""
    import llama_cpp

    llama = entry.llama
    kwargs = _sampling(params)
    try:
        result = _formatter(entry, params.get("chat_format"))(messages=messages)
    except ByokError:
        raise
    except Exception as exc:
        raise LocalModelError(f"the model's chat template rejected these messages ({exc})")
    tokens = llama.tokenize(
        result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
    )
    # llama.cpp pads a small n_ctx (to 256) but llama-cpp-python sizes its token buffer by
    # the n_ctx asked for: the smaller of the two is what really fits.
    n_ctx = min(llama.n_ctx(), len(llama.input_ids))
    if len(tokens) >= n_ctx:
        raise LocalModelError(
            f"the prompt is {len(tokens)} tokens but the context holds {n_ctx}: "
            f"shorten the prompt or pass a larger n_ctx (e.g. n_ctx={2 * len(tokens) + 256})"
        )
    kwargs["max_tokens"] = min(kwargs["max_tokens"], n_ctx - len(tokens))
    if result.stop:
        kwargs["stop"] += [result.stop] if isinstance(result.stop, str) else list(result.stop)
    criteria = [lambda _ids, _logits: cancel.is_set()]
    criteria += list(result.stopping_criteria or [])
    kwargs["stopping_criteria"] = llama_cpp.StoppingCriteriaList(criteria)
    if params.get("ignore_eos"):
        # Benchmarks need a fixed number of tokens: push every end-of-generation token away.
        if entry.eog_tokens is None:
            vocab = llama._model.vocab
            entry.eog_tokens = [
                t for t in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)
            ]
        kwargs["logit_bias"] = {t: -1e9 for t in entry.eog_tokens}
    return _Prepared(tokens, kwargs)


def _completion_tokens(entry: _Entry) -> int:
    """Sampled tokens of this call, less a final end-of-generation token (not part of the text)."""
    import llama_cpp

    sampled = entry.llama.byok_sampled
    if sampled and llama_cpp.llama_vocab_is_eog(entry.llama._model.vocab, sampled[-1]):
        return len(sampled) - 1
    return len(sampled)
