"""The per-process model cache: load once, one lock per model, LRU under a memory budget."""

from __future__ import annotations

import atexit
import functools
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import LocalModelError
from ._files import INSTALL_HINT, physical_cores
from ._params import _int_param

DEFAULT_N_CTX = 2048
DEFAULT_MEMORY_BUDGET = 4 * 1024**3


@dataclass
class _Entry:
    key: tuple[Any, ...]
    path: Path
    size_bytes: int
    options: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)
    llama: Any = None
    load_s: float = 0.0
    calls: int = 0
    last_used: float = 0.0
    formatters: dict[str, Any] = field(default_factory=dict)
    eog_tokens: list[int] | None = None
    extra_buffers: bool | None = None


_registry_lock = threading.Lock()
_cache: OrderedDict[tuple[Any, ...], _Entry] = OrderedDict()
_load_counts: Counter[tuple[Any, ...]] = Counter()
_memory_budget = DEFAULT_MEMORY_BUDGET


def set_memory_budget(nbytes: int) -> None:
    """Bound the model cache (estimated from file sizes); models over it are evicted LRU first."""
    global _memory_budget
    if nbytes <= 0:
        raise LocalModelError("the local model memory budget must be a positive number of bytes")
    _memory_budget = int(nbytes)


def loaded_models() -> list[dict[str, Any]]:
    """What is loaded now, least recently used first, with how often each key was loaded."""
    with _registry_lock:
        return [
            {
                "path": str(e.path),
                "name": e.path.name,
                "size_bytes": e.size_bytes,
                **e.options,
                "loads": _load_counts[e.key],
                "calls": e.calls,
                "load_s": e.load_s,
                "extra_buffers": e.extra_buffers,
                "last_used": e.last_used,
                "busy": e.lock.locked(),
            }
            for e in _cache.values()
            if e.llama is not None
        ]


def unload_all() -> None:
    """Free every cached model, waiting for calls in flight to finish."""
    with _registry_lock:
        entries = list(_cache.values())
        _cache.clear()
    for entry in entries:
        with entry.lock:
            _close(entry)


def _unload_at_exit() -> None:
    """Like :func:`unload_all`, but never waits long: a stream left open must not hang exit."""
    with _registry_lock:
        entries = list(_cache.values())
        _cache.clear()
    for entry in entries:
        if entry.lock.acquire(timeout=1.0):
            try:
                _close(entry)
            finally:
                entry.lock.release()


def _close(entry: _Entry) -> None:
    llama, entry.llama = entry.llama, None
    entry.formatters.clear()
    if llama is not None:
        llama.close()


@functools.lru_cache(maxsize=1)
def _tracked_llama_class() -> type:
    """A ``Llama`` that records the tokens it samples during the current call.

    llama-cpp reports no usage for streamed calls; counting the tokens its own ``generate``
    yields gives the same number it reports for a non-streamed call (the end-of-generation
    token, when one ends the answer, is not counted by either). Also gives a time to the
    first token for non-streamed calls.
    """
    from llama_cpp import Llama

    class _TrackedLlama(Llama):
        byok_sampled: list[int]
        byok_first_token_at: float | None

        def generate(  # type: ignore[override]
            self, *args: Any, **kwargs: Any
        ) -> Iterator[int]:
            for token in super().generate(*args, **kwargs):
                if not self.byok_sampled:
                    self.byok_first_token_at = time.perf_counter()
                self.byok_sampled.append(token)
                yield token

    return _TrackedLlama


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise LocalModelError(f"local models need llama-cpp-python ({exc}): {INSTALL_HINT}")
    return llama_cpp


def _load_options(params: dict[str, Any], path: Path | None = None) -> dict[str, Any]:
    from ._gpu import decide_gpu_layers, gpu_offload_supported
    from ._registry import gpu_layers_option

    n_ctx = _int_param(params, "n_ctx", DEFAULT_N_CTX, minimum=16)
    n_threads = _int_param(params, "n_threads", physical_cores(), minimum=1)
    # the call's n_gpu_layers, else the model's, else auto (all layers on a GPU build)
    requested = params.get("n_gpu_layers")
    if requested is None and path is not None:
        requested = gpu_layers_option(path)
    offload = requested != 0 and gpu_offload_supported()
    n_gpu_layers = decide_gpu_layers(requested, offload)
    return {"n_ctx": n_ctx, "n_threads": n_threads, "n_gpu_layers": n_gpu_layers}


def _acquire(path: Path, params: dict[str, Any]) -> _Entry:
    """The cached entry for this model, loaded, with its lock HELD (the caller releases it)."""
    options = _load_options(params, path)
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, *sorted(options.items()))
    with _registry_lock:
        entry = _cache.get(key)
        if entry is None:
            entry = _cache[key] = _Entry(key, path, stat.st_size, options)
        _cache.move_to_end(key)
    entry.lock.acquire()
    try:
        if entry.llama is None:
            _load(entry, verbose=bool(params.get("verbose", False)))
        with _registry_lock:
            _cache[key] = entry  # back in, should it have been evicted while we waited
            _cache.move_to_end(key)
            _evict_over_budget(keep=entry)
        entry.calls += 1
        entry.last_used = time.time()
    except BaseException:
        entry.lock.release()
        raise
    return entry


def _load(entry: _Entry, *, verbose: bool) -> None:
    from ._guard import extra_buffers_for, model_params

    llama_cpp = _import_llama_cpp()
    cls = _tracked_llama_class()
    # Before anything native touches the model: a crash would take this process (a kernel)
    # down, so a child process tries it first, once per model and machine.
    extra_buffers = extra_buffers_for(entry.path)
    started = time.perf_counter()
    try:
        with model_params(extra_buffers):
            llama = cls(
                model_path=str(entry.path),
                n_ctx=entry.options["n_ctx"],
                n_threads=entry.options["n_threads"],
                n_threads_batch=entry.options["n_threads"],
                n_gpu_layers=entry.options["n_gpu_layers"],
                verbose=verbose,
            )
    except (ValueError, RuntimeError, OSError) as exc:
        raise LocalModelError(
            f"llama-cpp-python {llama_cpp.__version__} could not load {entry.path.name} "
            f"({exc}): the file may be truncated or corrupt (download it again) or use an "
            "architecture this version does not support (upgrade llama-cpp-python); "
            "`jupyter byok doctor` shows what llama.cpp sees"
        ) from exc
    llama.byok_sampled = []
    llama.byok_first_token_at = None
    if not _load_counts:
        # Free models before interpreter teardown; llama-cpp's own __del__ fails that late.
        atexit.register(_unload_at_exit)
    entry.llama = llama
    entry.extra_buffers = extra_buffers
    from ._registry import record_use

    record_use(entry.path)  # "last used" in `jupyter byok local list`
    entry.load_s = time.perf_counter() - started
    _load_counts[entry.key] += 1


def _evict_over_budget(keep: _Entry) -> None:
    """Drop least recently used idle models until the loaded ones fit the budget."""
    loaded = [e for e in _cache.values() if e.llama is not None]
    total = sum(e.size_bytes for e in loaded)
    for victim in loaded:
        if total <= _memory_budget:
            break
        if victim is keep:
            continue
        del _cache[victim.key]
        total -= victim.size_bytes
        # A busy model is only dropped from the cache; it is freed when its call ends.
        if victim.lock.acquire(blocking=False):
            try:
                _close(victim)
            finally:
                victim.lock.release()
