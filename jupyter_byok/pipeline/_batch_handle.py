"""What ``map(..., mode="batch")`` hands back: a :class:`BatchHandle` (``wait=False``) to
ask how the batches are doing, cancel them, take the result and retry what failed; and
the progress display shown while waiting."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from .._runner import run_sync
from ..errors import ByokError

if TYPE_CHECKING:
    import pandas

    from ._batch_run import BatchRun

__all__ = ["BatchHandle", "BatchProgress"]


class BatchProgress:
    """States and counts per batch, time elapsed and spend so far: an HTML widget in a
    notebook, lines on stderr in a terminal (``progress=True``), or nothing."""

    def __init__(self, enabled: bool | None) -> None:
        from ._map import _in_kernel

        self.mode = "none"
        self._html: Any = None
        self._last = ""
        if enabled is False:
            return
        if _in_kernel():
            try:
                import ipywidgets as w
                from IPython.display import display
            except ImportError:  # pragma: no cover - ipywidgets is a dependency
                pass
            else:
                self._html = w.HTML(value="batch map: starting")
                display(self._html)
                self.mode = "widget"
                return
        if enabled or (sys.stderr is not None and sys.stderr.isatty()):
            self.mode = "text"

    @staticmethod
    def lines(run: BatchRun) -> list[str]:
        out = []
        if run.estimate is not None:
            out.append(f"estimate: {run.estimate.compare()}")
        for name, state in run.nodes.items():
            if state.mode != "batch":
                done = "done" if state.done else "waiting"
                out.append(f"{name}: {state.mode}, {done}")
                continue
            if not state.batches:
                out.append(f"{name}: waiting for its inputs" if not state.done else f"{name}: -")
            for r in state.batches:
                out.append(
                    f"{name} [{r.provider} {r.provider_batch_id}]: {r.state}, "
                    f"{r.done}/{r.total} done, {r.failed} failed"
                )
        elapsed = time.monotonic() - run.started
        out.append(f"elapsed {elapsed:.0f} s, spent ${run.spent():.4f}")
        return out

    def update(self, run: BatchRun) -> None:
        if self.mode == "none":
            return
        text = "\n".join(self.lines(run))
        if text == self._last:
            return
        self._last = text
        if self.mode == "widget":
            import html

            self._html.value = "<pre>" + html.escape(text) + "</pre>"
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()


class BatchHandle:
    """A batch map in flight. Survives nothing by itself: the batches do (in the ledger
    database), and running the same ``map`` again attaches to them."""

    def __init__(self, run: BatchRun, poll_s: float, progress: bool | None = None) -> None:
        self._run = run
        self.poll_s = poll_s
        self._progress = progress
        self._frame: pandas.DataFrame | None = None

    @property
    def done(self) -> bool:
        return self._run.done

    def status(self) -> pandas.DataFrame:
        """Poll once (starting the next nodes whose inputs are complete) and return one row
        per batch: node, provider, batch id, state, total, done, failed."""
        run_sync(self._run.step())
        return self._table()

    def _table(self) -> pandas.DataFrame:
        import pandas as pd

        rows = [
            {
                "node": name,
                "provider": r.provider,
                "model": r.model,
                "batch": r.id,
                "provider_batch_id": r.provider_batch_id,
                "state": r.state,
                "total": r.total,
                "done": r.done,
                "failed": r.failed,
            }
            for name, state in self._run.nodes.items()
            for r in state.batches
        ]
        return pd.DataFrame(
            rows,
            columns=[
                "node",
                "provider",
                "model",
                "batch",
                "provider_batch_id",
                "state",
                "total",
                "done",
                "failed",
            ],
        )

    def result(self, wait: bool = True) -> pandas.DataFrame:
        """The result DataFrame (one row per input row, an ``error`` column); waits for
        the batches to end unless ``wait=False``, which raises while they run."""
        if self._frame is not None:
            return self._frame
        if not self._run.done:
            if not wait:
                run_sync(self._run.step())
                if not self._run.done:
                    raise ByokError(
                        "the batches are still running: call .status() to see them, or "
                        ".result() to wait"
                    )
            else:
                run_sync(self._run.run(BatchProgress(self._progress), self.poll_s))
        self._frame = self._run.frame()
        return self._frame

    def cancel(self) -> pandas.DataFrame:
        """Cancel every batch in flight (their rows end with a ``cancelled`` error); nodes
        not submitted yet never will be."""
        run_sync(self._run.cancel())
        return self._table()

    def retry_failed(self, mode: str = "sync") -> pandas.DataFrame:
        """Run again the node rows that failed, expired or were cancelled, ``mode="sync"``
        (now, concurrently) or ``"batch"`` (new batches); rows that succeeded are kept and
        not paid again. Returns the merged result (also kept as :meth:`result`)."""
        if mode not in ("sync", "batch"):
            raise ByokError('retry_failed: mode must be "sync" or "batch"')
        frame = self.result()
        if not frame["error"].notna().any():
            return frame
        from ._batch_run import BatchRun

        old = self._run
        sync = frozenset(old.nodes) if mode == "sync" else frozenset()
        tries = int(old.salt.rsplit("#", 1)[-1]) + 1 if "#" in old.salt else 1
        run = BatchRun(
            old.pipeline,
            old.df,
            old.mapping,
            old.plan,
            old.transport,
            concurrency=old.concurrency,
            sync_nodes=sync | frozenset(n for n, s in old.nodes.items() if s.mode == "sync"),
            prior=old.nodes,
            salt=f"retry#{tries}",
        )
        for name, state in run.nodes.items():
            before = old.nodes[name]
            state.cost = list(before.cost)
            state.input_tokens = list(before.input_tokens)
            state.output_tokens = list(before.output_tokens)
            for i, e in enumerate(before.errors):
                if e is not None:
                    state.errors[i] = None
                    state.values[i] = None
                    state.cost[i] = before.cost[i]
        self._run, self._frame = run, None
        return self.result()

    def __repr__(self) -> str:
        states = [r.state for s in self._run.nodes.values() for r in s.batches]
        return f"BatchHandle({self._run.pipeline.name!r}: {len(states)} batch(es), {states})"
