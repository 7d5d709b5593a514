"""The one writer of ledger rows: it groups the rows of calls that end together and commits
them in one transaction, acknowledging each call only after its COMMIT.

Two modes, one batching rule. Rows handed to :meth:`LedgerWriter.write` during one turn of
an event loop are committed together at the start of the next turn:

* **loop mode** (in-process: a kernel or script): on the loop itself. A call alone in
  flight skips the batch and commits in the caller's thread (one short transaction in WAL
  mode costs less than a turn of the loop);
* **thread mode** (the Jupyter server, whose loop must never wait on the disk): the turn's
  rows go to this writer's thread, which appends everything waiting, from every loop and
  turn, in one ``BEGIN IMMEDIATE`` transaction: one sync for many rows.

Invariants: rows are committed in submission order; a call's wait ends once its rows are
committed, or kept pending by the ledger when the disk refuses them (``record_or_keep``:
the warning goes to every call of the batch), or with the error of a write that is a bug
(a malformed row). Never write-behind: a reply sent before the COMMIT is a row a crash can
lose. A caller cancelled while waiting still gets its rows written. Every read of the
ledger in this process first waits for the rows queued before it (:func:`flush_all`, called
by the store's readers), so a process reads its own writes; rows still queued are flushed
at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import queue
import threading
import weakref
from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .schema import LedgerRow

    _Item = tuple[list[LedgerRow], Future[str | None]]
    _Batch = tuple[list[LedgerRow], asyncio.Future[str | None]]
    _Turns = weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batch]

__all__ = ["MAX_BATCH", "LedgerWriter", "RowSink", "flush_all"]

#: Rows per transaction of the thread at most (bounds the latency of the first caller in a batch).
MAX_BATCH = 512


class RowSink(Protocol):
    """What the writer writes to (the store's :class:`~.store.Ledger`)."""

    def record_or_keep(self, rows: list[LedgerRow]) -> str | None: ...


class LedgerWriter:
    """Commits one ledger's rows in groups, in this process (see the module's notes)."""

    def __init__(self, sink: RowSink) -> None:
        self.sink = sink
        #: the process that made this writer (a thread does not survive ``fork()``)
        self.pid = os.getpid()
        #: rows waiting for the next turn of each loop: [loop mode, thread mode]
        self._turns: tuple[_Turns, _Turns] = (
            weakref.WeakKeyDictionary(),
            weakref.WeakKeyDictionary(),
        )
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # ------------------------------------------------------------------ calls
    async def write(self, rows: list[LedgerRow], *, thread: bool, alone: bool) -> str | None:
        """Commit ``rows``; returns once they are committed (``None``) or kept pending by
        the ledger (its one-line warning). ``thread``: commit through the writer thread;
        ``alone``: no other call is in flight (loop mode then commits right away)."""
        if alone and not thread:
            return self.sink.record_or_keep(rows)
        loop = asyncio.get_running_loop()
        turns = self._turns[thread]
        batch = turns.get(loop)
        if batch is None:
            batch = turns[loop] = ([], loop.create_future())
            loop.call_soon(self._end_turn, loop, thread)
        batch[0].extend(rows)
        # a cancelled caller's rows are written anyway
        return await asyncio.shield(batch[1])

    def _end_turn(self, loop: asyncio.AbstractEventLoop, thread: bool) -> None:
        rows, done = self._turns[thread].pop(loop)
        if not thread:
            try:
                warning = self.sink.record_or_keep(rows)
            except BaseException as exc:  # every caller in the batch gets the error
                done.set_exception(exc)
            else:
                done.set_result(warning)
            return

        def committed(future: Future[str | None]) -> None:
            # in the writer thread
            exc = future.exception()
            warning = None if exc is not None else future.result()
            try:
                loop.call_soon_threadsafe(_settle, done, warning, exc)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

        self.submit(rows).add_done_callback(committed)

    # ------------------------------------------------------------------ the thread
    def submit(self, rows: list[LedgerRow]) -> Future[str | None]:
        """Hand ``rows`` to the writer thread; the future resolves once they are committed
        (``None``) or kept pending (the ledger's warning)."""
        if self._thread is None:
            self._start()
        future: Future[str | None] = Future()
        self._queue.put((rows, future))
        return future

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until everything submitted before this call is committed."""
        thread = self._thread
        if thread is None or threading.current_thread() is thread or not thread.is_alive():
            return
        self.submit([]).result(timeout)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="byok-ledger-writer", daemon=True)
                thread.start()
                self._thread = thread
                with _lock:
                    _threaded.append(self)

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

    def _commit(self, batch: list[_Item]) -> None:
        # A caller that was cancelled while waiting still gets its rows written (every
        # attempt is accounted); only the hand-back is skipped for it.
        rows = [row for item, _ in batch for row in item]
        try:
            warning = self.sink.record_or_keep(rows) if rows else None
        except BaseException as exc:  # handed to every waiting caller
            for _, future in batch:
                if future.set_running_or_notify_cancel():
                    future.set_exception(exc)
            return
        for _, future in batch:
            if future.set_running_or_notify_cancel():
                future.set_result(warning)


def _settle(
    done: asyncio.Future[str | None], warning: str | None, exc: BaseException | None
) -> None:
    if done.done():
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(warning)


#: writers whose thread runs (threads do not survive a fork: only this process's count)
_threaded: list[LedgerWriter] = []
_lock = threading.Lock()


def flush_all(timeout: float = 60.0) -> None:
    """Wait for every writer thread of this process (a reader calls this before reading)."""
    if not _threaded:
        return
    with _lock:
        writers = [w for w in _threaded if w.pid == os.getpid()]
    for writer in writers:
        writer.flush(timeout)


atexit.register(flush_all)
