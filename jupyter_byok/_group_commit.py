"""Group commit for ledger rows: one writer thread per ledger and process.

Callers hand their rows to the writer and wait for the future it returns, without blocking
their event loop; the writer appends everything waiting in one ``BEGIN IMMEDIATE``
transaction: one fsync for many rows instead of one each, and no event loop waits on the
disk.

Invariants: rows are committed in submission order; a future resolves once its rows are
committed, or fails with the write's error. The engine answers a call only once that
future has resolved (never write-behind: a reply sent before the COMMIT is a row a crash
can lose), and keeps the rows of a failed write pending (see ``Engine._write_rows``).
Every read of the ledger in this process first waits for the rows submitted before it
(:func:`flush_all`, called by the ledger's readers), so a process always reads its own
writes; rows still queued are flushed at interpreter exit.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ledger import Ledger, LedgerRow

__all__ = ["GroupWriter", "flush_all", "writer_for"]

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

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until everything submitted before this call is committed."""
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            return
        self.submit([]).result(timeout)

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
            ids = self.ledger.record_many(rows) if rows else []
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


def flush_all(timeout: float = 60.0) -> None:
    """Wait for every writer of this process (a reader calls this before reading)."""
    with _lock:
        writers = [w for (_, pid), w in _writers.items() if pid == os.getpid()]
    for writer in writers:
        writer.flush(timeout)


atexit.register(flush_all)


def writer_for(ledger: Ledger) -> GroupWriter:
    """The writer of ``ledger`` in this process (threads do not survive a fork)."""
    key = (id(ledger), os.getpid())
    with _lock:
        writer = _writers.get(key)
        if writer is None or writer.ledger is not ledger:
            writer = _writers[key] = GroupWriter(ledger)
        return writer
