"""The batch service: provider batches submitted, polled and fetched where the keys are (the
Jupyter server, or this process without one), with budgets checked before anything is
uploaded and one ledger row per item.

:mod:`._service` (budgets, uploads, polls, results, ledger rows), :mod:`._store` (batches
and items in the ledger database, migration ``m005_batches``), :mod:`._transport` (how a
kernel reaches the service). Pipelines use it for ``map(..., mode="batch")``
(:mod:`jupyter_byok.pipeline._batch`); the wire formats are in
:mod:`jupyter_byok.providers.batches`.
"""
