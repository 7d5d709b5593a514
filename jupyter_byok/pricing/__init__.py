"""Prices and cost computation: what a call cost, to the exact decimal, and where that came from.

Invariants: money is ``Decimal`` from the price file to the ledger (never float); a model
without a price costs ``None`` (``unknown``, with one warning per model per process), never a
guess; a long-context tier re-prices the *whole* request; xAI's own reported cost wins over
our arithmetic. Prices live in ``prices.json`` beside this module (dated and sourced) and in
an optional user override ``$JUPYTER_BYOK_HOME/prices.json`` with the same shape, whose
models replace the shipped ones key by key.

The package shows the layers: :mod:`.table` (the price files and lookups), :mod:`.cost`
(computing and estimating costs) and :mod:`.tokens` (counting a prompt's tokens).

Token convention (see :mod:`jupyter_byok.types`): ``input_tokens`` includes cached reads and
cache writes; ``output_tokens`` includes reasoning tokens.
"""

from __future__ import annotations

from .cost import CostResult, UnpricedModelWarning, compute_cost, estimate_cost
from .table import (
    BUILTIN_PATH,
    LOCAL_PROVIDERS,
    OVERRIDE_NAME,
    list_models,
    load_prices,
    price_for,
    price_version,
    update_prices,
    validate_prices,
)
from .tokens import estimate_prompt_tokens

__all__ = [
    "BUILTIN_PATH",
    "LOCAL_PROVIDERS",
    "OVERRIDE_NAME",
    "CostResult",
    "UnpricedModelWarning",
    "compute_cost",
    "estimate_cost",
    "estimate_prompt_tokens",
    "list_models",
    "load_prices",
    "price_for",
    "price_version",
    "update_prices",
    "validate_prices",
]
