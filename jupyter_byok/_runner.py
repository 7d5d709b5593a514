"""Run coroutines from synchronous code, including inside a running event loop.

Jupyter kernels already run an event loop on the main thread, so ``asyncio.run`` is
not available there. Synchronous entry points submit their coroutine to one background
loop thread per process instead; Ctrl-C (a cell interrupt) cancels the coroutine, which
cancels the provider request.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import queue
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None
_lock = threading.Lock()


def background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _pid
    with _lock:
        if _loop is None or _pid != os.getpid() or not _loop.is_running():
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=run, name="jupyter-byok-loop", daemon=True).start()
            started.wait()
            _loop, _pid = loop, os.getpid()
        return _loop


def _close_clients_at_exit() -> None:
    """Close the engine's HTTP clients on the background loop (no unclosed-session noise)."""
    loop = _loop
    if loop is None or _pid != os.getpid() or not loop.is_running():
        return
    from . import engine

    if engine._engine is None:
        return
    future = asyncio.run_coroutine_threadsafe(engine._engine.aclose(), loop)
    try:
        future.result(timeout=2)
    except Exception:  # exiting anyway: never hang or fail the interpreter's exit
        pass


atexit.register(_close_clients_at_exit)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the background loop and wait; KeyboardInterrupt cancels it."""
    future = asyncio.run_coroutine_threadsafe(coro, background_loop())
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        raise


_DONE = object()


def iter_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Drive an async iterator on the background loop, yielding items as they arrive."""
    items: queue.Queue[Any] = queue.Queue()

    async def pump() -> None:
        try:
            async for item in agen:
                items.put(item)
        except BaseException as exc:  # handed to the consuming thread
            items.put(exc)
        finally:
            items.put(_DONE)

    future = asyncio.run_coroutine_threadsafe(pump(), background_loop())
    try:
        while True:
            item = items.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                if isinstance(item, asyncio.CancelledError):
                    from .errors import CancelledCallError

                    raise CancelledCallError("the call was cancelled")
                raise item
            yield item
    except (KeyboardInterrupt, GeneratorExit):
        future.cancel()
        raise
