"""Pulls that outlive a request: the server starts one, the panel polls it and may cancel.

A job runs :func:`~jupyter_byok.local_models.pull` in a thread of the process that
started it (the Jupyter server downloads and inspects; it never loads a model). Its state
is plain data: the progress, then the result or the one-line error.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from ..errors import ByokError

__all__ = ["PullJobs", "pull_jobs"]

#: finished jobs kept for the panel to read (oldest dropped first)
KEEP_FINISHED = 20


class _Job:
    def __init__(self, job_id: str, spec: str, options: dict[str, Any]) -> None:
        self.id = job_id
        self.spec = spec
        self.options = options
        self.cancel = threading.Event()
        self.state = "running"  # running | done | error | cancelled
        self.progress: dict[str, Any] = {}
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.started = time.time()
        self.thread: threading.Thread | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "spec": self.spec,
            "state": self.state,
            "progress": dict(self.progress),
            "result": self.result,
            "error": self.error,
            "started": self.started,
        }


class PullJobs:
    def __init__(self) -> None:
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, spec: str, **options: Any) -> dict[str, Any]:
        """Start pulling ``spec`` (options as for ``pull``); the job's first state."""
        from ._spec import parse_spec

        parse_spec(spec)  # a malformed spec is refused now, not as a failed job
        job = _Job(uuid.uuid4().hex[:16], spec, options)
        with self._lock:
            for other in self._jobs.values():
                if other.state == "running" and other.spec == spec:
                    return other.to_dict()  # the same pull twice: one download
            self._jobs[job.id] = job
            self._trim()
        job.thread = threading.Thread(target=self._run, args=(job,), name="byok-pull", daemon=True)
        job.thread.start()
        return job.to_dict()

    def _run(self, job: _Job) -> None:
        from ._pull import PullCancelled, pull

        def on_progress(progress: Any) -> None:
            job.progress = progress.to_dict()

        try:
            result = pull(job.spec, on_progress=on_progress, cancel=job.cancel, **job.options)
        except PullCancelled as exc:
            job.state, job.error = "cancelled", str(exc)
        except ByokError as exc:
            job.state, job.error = "error", str(exc)
        except Exception as exc:  # a bug: one line, no traceback in the panel
            job.state, job.error = "error", f"unexpected {type(exc).__name__}; see the server log"
            import logging

            logging.getLogger("jupyter_byok").exception("pull of %s failed", job.spec)
        else:
            job.result, job.state = result.to_dict(), "done"

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
        return job.to_dict() if job is not None else None

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [job.to_dict() for job in self._jobs.values()]

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return None
        job.cancel.set()
        if job.thread is not None:
            job.thread.join(timeout=10)
        return job.to_dict()

    def _trim(self) -> None:
        finished = [j for j in self._jobs.values() if j.state != "running"]
        for job in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[job.id]


_JOBS = PullJobs()


def pull_jobs() -> PullJobs:
    """This process's pull jobs."""
    return _JOBS
