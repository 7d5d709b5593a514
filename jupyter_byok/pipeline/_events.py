"""What a running pipeline tells its observers, node by node (see :meth:`Pipeline.observe`).

Invariants: an observer is called on the loop that runs the pipeline, synchronously and
cheaply (it must not block: the canvas only records the event and flushes it later); an
observer that raises is dropped from that run's notifications, never breaks the run; an
event never holds a key, only what a :class:`NodeResult` holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._nodes import NodeResult

__all__ = ["NodeEvent", "Observers"]

log = logging.getLogger(__name__)

#: the states a node goes through; ``text`` is the streaming text so far
STATES = ("queued", "running", "text", "done", "error", "cancelled")


@dataclass(frozen=True)
class NodeEvent:
    """One step of one node: ``state`` is one of :data:`STATES`.

    ``result`` is set for ``done`` (its ``cached``/``pinned`` say how it was answered),
    ``text`` for ``text`` (everything streamed so far), ``error`` for ``error``. ``row`` is
    None for :meth:`Pipeline.run`; for each row of a :meth:`Pipeline.map` it is a number
    that is the same for every row of that map and differs from one map to the next (rows
    report ``running``, ``done``, ``error`` and ``cancelled``, not ``queued``).
    """

    node: str
    state: str
    result: NodeResult | None = None
    text: str | None = None
    error: BaseException | None = None
    row: Any = None


Observer = Callable[[NodeEvent], None]


class Observers:
    def __init__(self) -> None:
        self._items: list[tuple[Observer, bool]] = []

    def add(self, callback: Observer, stream: bool) -> Callable[[], None]:
        item = (callback, stream)
        self._items.append(item)

        def remove() -> None:
            if item in self._items:
                self._items.remove(item)

        return remove

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def streaming(self) -> bool:
        return any(stream for _, stream in self._items)

    def emit(self, event: NodeEvent) -> None:
        for item in list(self._items):
            callback, stream = item
            if event.state == "text" and not stream:
                continue
            try:
                callback(event)
            except Exception:  # an observer never breaks a run
                log.exception("pipeline observer %r failed; it is removed", callback)
                if item in self._items:
                    self._items.remove(item)
