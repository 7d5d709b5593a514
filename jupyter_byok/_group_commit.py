"""Group commit for ledger rows: one writer thread per ledger and process.

Calls that finish at the same time hand their rows to the writer, which appends
everything waiting in one ``BEGIN IMMEDIATE`` transaction: one fsync for many rows instead
of one each, and no event-loop or worker thread blocked on the disk. A caller's future
resolves only after its rows are committed, so acknowledged rows are durable.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ledger import Ledger, LedgerRow

__all__ = ["GroupWriter", "writer_for"]

#: Rows per transaction at most (bounds the latency of the first caller in a batch).
MAX_BATCH = 512


class GroupWriter:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._queue: queue.SimpleQueue[tuple[list[LedgerRow], Future[list[str]]]] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="byok-ledger-writer", daemon=True)
        self._thread.start()

    def submit(self, rows: list[LedgerRow]) -> Future[list[str]]:
        future: Future[list[str]] = Future()
        self._queue.put((rows, future))
        return future

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            count = len(batch[0][0])
            while count < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                count += len(item[0])
            self._commit(batch)

    def _commit(self, batch: list[tuple[list[LedgerRow], Future[list[str]]]]) -> None:
        # A caller that was cancelled while waiting still gets its rows written (every
        # attempt is accounted); only the hand-back is skipped for it.
        rows = [row for item, _ in batch for row in item]
        try:
            ids = self.ledger.record_many(rows)
        except BaseException as exc:  # handed to every waiting caller
            for _, future in batch:
                if future.set_running_or_notify_cancel():
                    future.set_exception(exc)
            return
        start = 0
        for item, future in batch:
            if future.set_running_or_notify_cancel():
                future.set_result(ids[start : start + len(item)])
            start += len(item)


_writers: dict[tuple[int, int], GroupWriter] = {}
_lock = threading.Lock()


def writer_for(ledger: Ledger) -> GroupWriter:
    """The writer of ``ledger`` in this process (threads do not survive a fork)."""
    key = (id(ledger), os.getpid())
    with _lock:
        writer = _writers.get(key)
        if writer is None or writer.ledger is not ledger:
            writer = _writers[key] = GroupWriter(ledger)
        return writer
