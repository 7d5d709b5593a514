"""Run coroutines from synchronous code, including inside a running event loop.

* In a thread with no running loop (scripts, nbclient workers, plain Python), the coroutine
  runs right there, on a loop kept per thread: no thread hop, and HTTP connections are
  reused from call to call.
* Where a loop already runs (a Jupyter kernel runs one on its main thread, so
  ``asyncio.run`` is not available), the coroutine goes to one background loop thread
  per process instead.
* Synchronous code that itself runs *on* that background loop (a pipeline started with
  ``p.run()`` in a notebook checks its keys through ``Client``, which asks the server
  synchronously) cannot wait on the loop it blocks: its coroutine runs on one bridge
  thread with a loop of its own instead.

Either way Ctrl-C (a cell interrupt) cancels the coroutine, which cancels the request.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import queue
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterator,
)
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None
_lock = threading.Lock()
_local = threading.local()
#: per-thread loops, so that their HTTP clients can be closed at exit
_thread_loops: list[asyncio.AbstractEventLoop] = []


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's own loop (not running between calls)."""
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed() or getattr(_local, "pid", None) != os.getpid():
        loop = asyncio.new_event_loop()
        _local.loop, _local.pid = loop, os.getpid()
        with _lock:
            _thread_loops.append(loop)
    return loop


def _run_here(coro: Coroutine[Any, Any, T]) -> T:
    loop = thread_loop()
    task = loop.create_task(coro)
    try:
        return loop.run_until_complete(task)
    except KeyboardInterrupt:
        task.cancel()
        try:
            loop.run_until_complete(task)
        except BaseException:  # the cancellation itself; the interrupt is what matters
            pass
        raise


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


_exiting = False
#: closers of clients bound to loops this module did not make (see close_with_loop)
_closers: set[AsyncGenerator[None, None]] = set()
#: closers of clients bound to our own loops, run at interpreter exit
_own_closers: dict[asyncio.AbstractEventLoop, list[Callable[[], Awaitable[None]]]] = {}


def close_with_loop(loop: asyncio.AbstractEventLoop, close: Callable[[], Awaitable[None]]) -> None:
    """Await ``close()`` (on ``loop``) before ``loop`` goes away.

    Our own loops live until the interpreter exits, and their closers run then. A loop
    someone else made is usually ``asyncio.run``'s, which closes the async generators of
    its loop on the way out (``loop.shutdown_asyncgens``): a generator waiting at its
    ``yield`` is the hook, so HTTP clients that ``asyncio.run(jupyter_byok.acomplete(...))``
    opened are closed before the loop is, and no "unclosed client session" warning is
    printed at exit.
    """
    if loop is _loop or loop in _thread_loops:
        with _lock:
            _own_closers.setdefault(loop, []).append(close)
        return

    async def closer() -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            _closers.discard(gen)
            if not _exiting and not loop.is_closed():
                await close()

    gen = closer()
    _closers.add(gen)

    async def start() -> None:
        await gen.__anext__()  # the first step registers it with the loop

    loop.create_task(start())


async def _run_closers(closers: list[Callable[[], Awaitable[None]]]) -> None:
    for close in closers:
        try:
            await asyncio.wait_for(close(), 2)
        except Exception:  # exiting anyway: one failed close must not stop the others
            pass


def _close_clients_at_exit() -> None:
    """Close every HTTP client we opened, on its own loop (no unclosed-session noise)."""
    global _exiting
    _exiting = True
    for gen in list(_closers):  # foreign loops still open at exit: end the hooks quietly
        try:
            gen.aclose().send(None)
        except (StopIteration, RuntimeError):
            pass
    with _lock:
        own = {loop: list(closers) for loop, closers in _own_closers.items()}
        _own_closers.clear()
    for loop, closers in own.items():
        try:
            if loop.is_closed():
                continue
            if loop.is_running():  # the background loop, in its thread
                if loop is _loop and _pid == os.getpid():
                    future = asyncio.run_coroutine_threadsafe(_run_closers(closers), loop)
                    future.result(timeout=5)
                continue
            loop.run_until_complete(_run_closers(closers))
        except Exception:  # exiting anyway: never hang or fail the interpreter's exit
            pass
    for idle in list(_thread_loops):
        try:
            if not idle.is_closed() and not idle.is_running():
                idle.run_until_complete(idle.shutdown_asyncgens())
                idle.close()
        except Exception:
            pass


atexit.register(_close_clients_at_exit)


_bridge: concurrent.futures.ThreadPoolExecutor | None = None
_bridge_pid: int | None = None


def _on_background_loop() -> bool:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return running is _loop and _pid == os.getpid()


def _bridge_thread() -> concurrent.futures.ThreadPoolExecutor:
    """One thread (so its loop, and the HTTP clients bound to it, are reused) for
    synchronous calls made on the background loop."""
    global _bridge, _bridge_pid
    with _lock:
        if _bridge is None or _bridge_pid != os.getpid():
            _bridge = concurrent.futures.ThreadPoolExecutor(1, "jupyter-byok-bridge")
            _bridge_pid = os.getpid()
        return _bridge


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code; KeyboardInterrupt cancels it."""
    if not _in_running_loop():
        return _run_here(coro)
    if _on_background_loop():  # waiting on our own loop would wait forever
        return _bridge_thread().submit(_run_here, coro).result()
    future = asyncio.run_coroutine_threadsafe(coro, background_loop())
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        raise


_DONE = object()


def iter_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Drive an async iterator from synchronous code, yielding items as they arrive."""
    if not _in_running_loop():
        return _iter_here(agen)
    if _on_background_loop():  # (see run_sync) every step on the bridge thread's loop
        return _iter_bridged(agen)
    return _iter_background(agen)


def _iter_bridged(agen: AsyncIterator[T]) -> Iterator[T]:
    bridge = _bridge_thread()
    steps = _iter_here(agen)
    try:
        while True:
            try:
                yield bridge.submit(next, steps).result()
            except StopIteration:
                return
    finally:
        bridge.submit(steps.close).result()


def _iter_here(agen: AsyncIterator[T]) -> Generator[T, None, None]:
    loop = thread_loop()
    iterator = agen.__aiter__()
    try:
        while True:
            try:
                item: T = _run_here(iterator.__anext__())  # type: ignore[arg-type]
            except StopAsyncIteration:
                return
            yield item
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None and not loop.is_running():
            try:
                loop.run_until_complete(close())
            except BaseException:  # closing an abandoned stream must not mask the cause
                pass


def _iter_background(agen: AsyncIterator[T]) -> Iterator[T]:
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
