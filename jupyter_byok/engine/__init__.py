"""The engine: the one call path, ledger check -> resolve -> budget -> cache -> provider ->
cost -> ledger.

The package, by job:

* :mod:`.call`: :class:`Engine` and the call path of ``complete``, ``stream`` and
  ``search``, read top to bottom (:meth:`Engine._run_call`);
* :mod:`.steps`: each step of that path, in order (ledger check, budget, response cache,
  provider, cost, ledger rows);
* :mod:`.resources`: what the steps use, kept open between calls (keystore and keys,
  ledger writer, response cache, HTTP clients per loop);
* :mod:`.rows`: the ledger rows of a call, one per attempt; :mod:`.answer`: the
  :class:`Completion` from the provider's answer or from the cache;
* :mod:`.messages` (:func:`build_messages`) and :mod:`.estimate` (:func:`estimate_call`).

Invariants:

* Every provider attempt (success, error, timeout, cancel), every cache hit and every
  budget block writes exactly one ledger row; a logical call's rows share ``request_id``.
* A call returns (the server replies) only once its rows are committed, on every path;
  a call is not sent while the ledger is known not to take its row, and a row whose
  write failed after the provider answered is kept pending, never dropped silently (see
  :meth:`Engine._write_rows` and the "Failures" notes in :mod:`..ledger`).
* The key is resolved just before dispatch and only handed to the provider module,
  which puts it in the request header; it is never stored on the engine or a result.
* In the server (``offload``), ledger and keystore work that touches the disk runs off
  the event loop (the ledger's writer thread, worker threads).
* Local models run in the process that owns this engine; an engine made for the
  Jupyter server refuses them (``allow_local=False``), since they belong to kernels.
"""

from __future__ import annotations

from .call import Engine
from .estimate import Estimate, estimate_call
from .messages import build_messages
from .resources import CLIENT_POOLS

__all__ = ["CLIENT_POOLS", "Engine", "Estimate", "build_messages", "estimate_call", "get_engine"]

_engine: Engine | None = None


def get_engine() -> Engine:
    """The process-wide in-process engine."""
    global _engine
    if _engine is None:
        _engine = Engine()
    return _engine
