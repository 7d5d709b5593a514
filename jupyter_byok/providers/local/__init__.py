"""Local GGUF models through llama-cpp-python, run in the process that asks (the kernel).

Invariants:

- ``llama_cpp`` is imported lazily, inside functions: importing this module is cheap.
- A model loads once per process per (file, n_ctx, n_threads, n_gpu_layers) and is cached;
  the cache is bounded by a memory budget estimated from file sizes, least recently used
  first out. One lock per model serializes its calls (a ``Llama`` is not thread-safe).
- We format the chat prompt and tokenize it ourselves, exactly as llama-cpp's own chat
  handler does, and hand the tokens to ``create_completion``: the prompt token count we
  report for a streamed call is therefore the very list the model saw, and equals the
  ``prompt_tokens`` llama-cpp reports for the same call made without streaming.
- Every call reports exactly one :class:`~jupyter_byok.types.Attempt` through
  ``on_attempt`` (ok, error or cancelled), whatever happens, before it returns or raises.
- Never inside the Jupyter server process: the server's engine is built with
  ``Engine(allow_local=False)``, which refuses a ``local:`` model before it gets here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ...errors import CancelledCallError, LocalModelError
from ...types import Attempt, Message, ProviderResult, StreamEvent, Usage
from ._cache import (
    DEFAULT_MEMORY_BUDGET,
    DEFAULT_N_CTX,
    _acquire,
    _Entry,
    loaded_models,
    set_memory_budget,
    unload_all,
)
from ._files import (
    EMBEDDED_FILE,
    EMBEDDED_NAME,
    available_models,
    check_gguf,
    embedded_model_path,
    physical_cores,
    resolve_local_model,
)
from ._guard import (
    amx_present,
    decide_extra_buffers,
    guarded_llama,
    probe_verdicts,
    system_info,
)
from ._params import DEFAULT_MAX_TOKENS, _message_dicts
from ._prompt import _completion_tokens, _prepare, _Prepared

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_N_CTX",
    "EMBEDDED_FILE",
    "EMBEDDED_NAME",
    "acomplete_local",
    "amx_present",
    "astream_local",
    "available_models",
    "check_gguf",
    "complete_local",
    "decide_extra_buffers",
    "embedded_model_path",
    "guarded_llama",
    "loaded_models",
    "physical_cores",
    "probe_verdicts",
    "resolve_local_model",
    "set_memory_budget",
    "stream_local",
    "system_info",
    "unload_all",
]

OnAttempt = Callable[[Attempt], None]


# --------------------------------------------------------------------------- calls
class _Call:
    """Bookkeeping shared by the sync entry points: one Attempt, whatever happens."""

    def __init__(self, on_attempt: OnAttempt | None) -> None:
        self.on_attempt = on_attempt
        self.started = time.perf_counter()
        self.ttft_s: float | None = None
        self.reported = False

    def report(
        self,
        status: str,
        *,
        usage: Usage | None = None,
        error: BaseException | None = None,
        response_id: str | None = None,
    ) -> None:
        if self.reported or self.on_attempt is None:
            self.reported = True
            return
        self.reported = True
        self.on_attempt(
            Attempt(
                number=1,
                status=status,
                latency_s=time.perf_counter() - self.started,
                error_type=None if error is None else type(error).__name__,
                error_message=None if error is None else str(error),
                response_id=response_id,
                usage=usage,
                ttft_s=self.ttft_s,
            )
        )


def _usage_so_far(entry: _Entry, prepared: _Prepared | None) -> Usage | None:
    """Tokens spent by a call that did not finish; read while the model's lock is held."""
    if prepared is None or entry.llama is None:
        return None
    return Usage(input_tokens=len(prepared.tokens), output_tokens=_completion_tokens(entry))


def _report_failure(call: _Call, exc: BaseException, usage: Usage | None) -> None:
    if isinstance(exc, CancelledCallError | GeneratorExit | KeyboardInterrupt):
        status = "cancelled"
    else:
        status = "error"
    call.report(status, usage=usage, error=None if isinstance(exc, GeneratorExit) else exc)


def _generation_failed(exc: Exception) -> LocalModelError:
    return LocalModelError(
        f"local generation failed ({exc}): check the call parameters, or run `jupyter byok doctor`"
    )


def complete_local(
    model: str,
    messages: list[Message],
    params: dict[str, Any],
    *,
    cancel: threading.Event | None = None,
    on_attempt: OnAttempt | None = None,
) -> ProviderResult:
    """One non-streamed chat completion on a local GGUF model (blocking, thread-safe).

    ``params``: temperature, max_tokens, top_p, top_k, min_p, repeat_penalty, stop, seed,
    ignore_eos, chat_format (sampling, per call) and n_ctx, n_threads, n_gpu_layers,
    verbose (loading: a different value loads another copy of the model). Usage is the
    one llama-cpp reports.
    """
    call = _Call(on_attempt)
    cancel = cancel or threading.Event()
    partial: Usage | None = None
    try:
        path = resolve_local_model(model)
        chat = _message_dicts(messages)
        entry = _acquire(path, params)
        prepared: _Prepared | None = None
        try:
            prepared = _prepare(entry, chat, params, cancel)
            llama = entry.llama
            llama.byok_sampled = []
            llama.byok_first_token_at = None
            try:
                response = llama.create_completion(prompt=prepared.tokens, **prepared.kwargs)
            except (ValueError, RuntimeError) as exc:
                raise _generation_failed(exc) from exc
            if llama.byok_first_token_at is not None:
                call.ttft_s = llama.byok_first_token_at - call.started
            if cancel.is_set():
                raise CancelledCallError("the local generation was cancelled")
        except BaseException:
            partial = _usage_so_far(entry, prepared)
            raise
        finally:
            entry.lock.release()
        usage = Usage(
            input_tokens=int(response["usage"]["prompt_tokens"]),
            output_tokens=int(response["usage"]["completion_tokens"]),
        )
        choice = response["choices"][0]
        call.report("ok", usage=usage, response_id=response["id"])
        return ProviderResult(
            text=choice["text"],
            usage=usage,
            model=model,
            finish_reason=choice["finish_reason"],
            response_id=response["id"],
            ttft_s=call.ttft_s,
        )
    except BaseException as exc:  # every outcome is one attempt, bugs included
        _report_failure(call, exc, partial)
        raise


def stream_local(
    model: str,
    messages: list[Message],
    params: dict[str, Any],
    *,
    cancel: threading.Event | None = None,
    on_attempt: OnAttempt | None = None,
) -> Iterator[StreamEvent]:
    """Text deltas, then one ``StreamEvent(done=True, usage=..., finish_reason=...)``.

    Usage counts the formatted prompt's tokens and the tokens the model generated (the
    same numbers llama-cpp reports without streaming). Holds the model's lock while the
    caller iterates; closing the iterator early (or setting ``cancel``) stops generation
    and reports the attempt as cancelled.
    """
    call = _Call(on_attempt)
    cancel = cancel or threading.Event()
    partial: Usage | None = None
    response_id = f"cmpl-{uuid.uuid4()}"
    try:
        path = resolve_local_model(model)
        chat = _message_dicts(messages)
        entry = _acquire(path, params)
        prepared: _Prepared | None = None
        try:
            prepared = _prepare(entry, chat, params, cancel)
            llama = entry.llama
            llama.byok_sampled = []
            llama.byok_first_token_at = None
            finish_reason: str | None = None
            chunks = llama.create_completion(prompt=prepared.tokens, stream=True, **prepared.kwargs)
            try:
                for chunk in chunks:
                    if cancel.is_set():
                        break
                    choice = chunk["choices"][0]
                    response_id = chunk.get("id", response_id)
                    if choice["finish_reason"] is not None:
                        finish_reason = choice["finish_reason"]
                    if choice["text"]:
                        if call.ttft_s is None:
                            call.ttft_s = time.perf_counter() - call.started
                        yield StreamEvent(delta=choice["text"], response_id=response_id)
            except (ValueError, RuntimeError) as exc:
                raise _generation_failed(exc) from exc
            finally:
                chunks.close()
            if cancel.is_set():
                raise CancelledCallError("the local generation was cancelled")
            usage = _usage_so_far(entry, prepared)
        except BaseException:
            partial = _usage_so_far(entry, prepared)
            raise
        finally:
            entry.lock.release()
        call.report("ok", usage=usage, response_id=response_id)
        yield StreamEvent(
            usage=usage,
            finish_reason=finish_reason,
            response_id=response_id,
            model=model,
            done=True,
        )
    except BaseException as exc:  # GeneratorExit: the caller stopped early
        _report_failure(call, exc, partial)
        raise


# --------------------------------------------------------------------------- async
_executor_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None
#: How long a cancelled awaiter waits for the worker to stop and report its attempt.
_CANCEL_GRACE_S = 5.0


def _worker_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="byok-local"
            )
        return _executor


async def acomplete_local(
    model: str,
    messages: list[Message],
    params: dict[str, Any],
    *,
    cancel: threading.Event | None = None,
    on_attempt: OnAttempt | None = None,
) -> ProviderResult:
    """:func:`complete_local` in a worker thread; cancelling the awaiting task stops generation."""
    cancel = cancel or threading.Event()
    loop = asyncio.get_running_loop()
    work = functools.partial(
        complete_local, model, messages, params, cancel=cancel, on_attempt=on_attempt
    )
    future = loop.run_in_executor(_worker_pool(), work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        # Let the worker stop (within a token) and report its attempt before we re-raise.
        await asyncio.wait([future], timeout=_CANCEL_GRACE_S)
        raise


_END = object()


async def astream_local(
    model: str,
    messages: list[Message],
    params: dict[str, Any],
    *,
    cancel: threading.Event | None = None,
    on_attempt: OnAttempt | None = None,
) -> AsyncIterator[StreamEvent]:
    """:func:`stream_local` in a worker thread; stopping early or cancelling stops generation."""
    cancel = cancel or threading.Event()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def put(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancel.set()

    def pump() -> None:
        try:
            for event in stream_local(
                model, messages, params, cancel=cancel, on_attempt=on_attempt
            ):
                put(event)
        except BaseException as exc:
            put(exc)
        finally:
            put(_END)

    future = loop.run_in_executor(_worker_pool(), pump)
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if not future.done():
            cancel.set()
            await asyncio.wait([future], timeout=_CANCEL_GRACE_S)
