"""The object :func:`jupyter_byok.stream` returns: text as it arrives, then the Completion.

    s = byok.stream("openai:gpt-4o-mini", "Count to five")
    for text in s:            # or: async for text in s
        print(text, end="")
    s.completion.usage        # set once the stream has finished

Breaking out of the loop (or an interrupt) closes the stream and cancels the request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

from .errors import ByokError
from .types import Completion

__all__ = ["Stream"]


class Stream:
    def __init__(
        self,
        sync_items: Callable[[], Iterator[str | Completion]],
        async_items: Callable[[], AsyncIterator[str | Completion]],
    ) -> None:
        self._sync_items = sync_items
        self._async_items = async_items
        self._completion: Completion | None = None
        self._started = False

    @property
    def completion(self) -> Completion:
        """The finished call: text, usage, cost, ids (after the stream is consumed)."""
        if self._completion is None:
            raise ByokError("the stream has not finished yet: iterate over it first")
        return self._completion

    @property
    def text(self) -> str:
        return self.completion.text

    def _claim(self) -> None:
        if self._started:
            raise ByokError("a stream can be iterated once; call byok.stream(...) again")
        self._started = True

    def __iter__(self) -> Iterator[str]:
        self._claim()
        for item in self._sync_items():
            if isinstance(item, Completion):
                self._completion = item
            else:
                yield item

    async def __aiter__(self) -> AsyncIterator[str]:
        self._claim()
        async for item in self._async_items():
            if isinstance(item, Completion):
                self._completion = item
            else:
                yield item

    def __repr__(self) -> str:
        state = "finished" if self._completion is not None else "pending"
        return f"<jupyter_byok.Stream {state}>"
