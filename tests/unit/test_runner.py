"""The sync bridge (``jupyter_byok._runner``) where a loop already runs, as in a kernel."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from jupyter_byok._runner import iter_sync, run_sync


async def _answer(value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


async def _count(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(0)
        yield i


def _in_a_kernel_like_thread(work: object) -> list[object]:
    """Run ``work()`` inside a running loop (a kernel's main thread has one) on a thread of
    its own; give up after 20 s, which is what a deadlock looks like."""
    out: list[object] = []

    def target() -> None:
        async def main() -> None:
            out.append(work())  # type: ignore[operator]

        asyncio.run(main())

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "the sync bridge deadlocked"
    return out


def test_sync_calls_nested_on_the_background_loop_do_not_deadlock() -> None:
    """`p.run()` in a notebook: run_sync sends the pipeline to the background loop, and
    code on that loop calls run_sync again (Client.key_source asking the server). Before,
    the inner call waited on the loop it was blocking, forever."""

    async def outer() -> tuple[int, list[int]]:
        inner = run_sync(_answer(21))  # synchronous, on the background loop
        items = list(iter_sync(_count(3)))
        return inner, items

    assert _in_a_kernel_like_thread(lambda: run_sync(outer())) == [(42, [0, 1, 2])]


def test_plain_threads_and_running_loops_still_work() -> None:
    assert run_sync(_answer(1)) == 2 and list(iter_sync(_count(2))) == [0, 1]
    assert _in_a_kernel_like_thread(lambda: run_sync(_answer(5))) == [10]
    assert _in_a_kernel_like_thread(lambda: list(iter_sync(_count(4)))) == [[0, 1, 2, 3]]
