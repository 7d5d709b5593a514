"""What a call cost, to the exact decimal, and where that came from: the rates that apply
(long-context tiers re-price the whole request), tokens and search credits priced from
them, and the upper-bound estimate of a call before it is sent."""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from ..types import Usage
from .table import _TABLE, RATE_FIELDS, _is_local, _local_price, _lookup

log = logging.getLogger("jupyter_byok")

CostSource = Literal["computed", "provider", "unknown", "local"]


MILLION = Decimal(1_000_000)


class UnpricedModelWarning(UserWarning):
    """A model has no price: its cost is recorded as unknown."""


@dataclass(frozen=True)
class CostResult:
    cost_usd: Decimal | None
    source: CostSource
    price_version: str


_warned: set[str] = set()
_warned_lock = threading.Lock()


# ----------------------------------------------------------------------------- computing
def _rates(
    entry: dict[str, Any], input_tokens: int, service_tier: str | None
) -> dict[str, Decimal]:
    """Per-token rates for this request: base, or the long-context tier, then the service tier.

    On every call's path: remembered per price entry, tier and side of the threshold."""
    lc = entry.get("long_context")
    above = False
    if lc is not None:
        threshold = int(lc["threshold"])
        above = input_tokens >= threshold if lc.get("inclusive") else input_tokens > threshold
    memo_key = (id(entry), above, service_tier)
    seen = _RATES.get(memo_key)
    if seen is not None and seen[0] is entry:
        return seen[1]
    rates = _compute_rates(entry, above, service_tier)
    if len(_RATES) > 1024:
        _RATES.clear()
    _RATES[memo_key] = (entry, rates)
    return rates


_RATES: dict[tuple[int, bool, str | None], tuple[dict[str, Any], dict[str, Decimal]]] = {}


def _compute_rates(
    entry: dict[str, Any], above: bool, service_tier: str | None
) -> dict[str, Decimal]:
    per_m: dict[str, Any] = {k: entry[k] for k in RATE_FIELDS if k in entry}
    lc = entry.get("long_context")
    if lc is not None and above:
        per_m.update({k: lc[k] for k in RATE_FIELDS if k in lc})
    tier = (entry.get("service_tiers") or {}).get(service_tier or "")
    rates = {k: Decimal(str(v)) for k, v in per_m.items()}
    if tier:
        mult = Decimal(str(tier.get("multiplier", "1")))
        rates = {k: v * mult for k, v in rates.items()}
        rates.update({k: Decimal(str(v)) for k, v in tier.items() if k in RATE_FIELDS})
    return {k: (v if k == "per_credit" else v / MILLION) for k, v in rates.items()}


def _token_cost(rates: dict[str, Decimal], usage: Usage) -> Decimal:
    inp = rates.get("input", Decimal(0))
    out = rates.get("output", Decimal(0))
    cached = max(usage.cached_input_tokens, 0)
    w5 = max(usage.cache_write_tokens, 0)
    w1 = max(usage.cache_write_1h_tokens, 0)
    uncached = usage.input_tokens - cached - w5 - w1
    if uncached < 0:
        log.debug("usage has more cached/cache-write tokens than input tokens: %s", usage)
        uncached = 0
    reasoning = min(max(usage.reasoning_tokens, 0), max(usage.output_tokens, 0))
    text_out = max(usage.output_tokens, 0) - reasoning
    return (
        uncached * inp
        + cached * rates.get("cached_input", inp)
        + w5 * rates.get("cache_write_5m", inp)
        + w1 * rates.get("cache_write_1h", rates.get("cache_write_5m", inp))
        + text_out * out
        + reasoning * rates.get("reasoning", out)
    )


def _credit_cost(entry: dict[str, Any], rates: dict[str, Decimal], credits: float) -> Decimal:
    if credits and credits > 0:
        n = Decimal(str(credits))
    else:  # the response did not report usage: bill what this depth costs per request
        n = Decimal(int(entry.get("credits_per_request", 1)))
    return n * rates["per_credit"]


def _warn_unpriced(provider: str, model: str) -> None:
    key = f"{provider}:{model}"
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    msg = (
        f"no price for {key}: its cost is recorded as unknown; add it with "
        "`jupyter byok prices update --from FILE`"
    )
    log.warning("%s", msg)
    warnings.warn(msg, UnpricedModelWarning, stacklevel=3)


def compute_cost(
    provider: str, model: str, usage: Usage, *, service_tier: str | None = None
) -> CostResult:
    """The cost of one attempt from the usage the provider reported."""
    table = _TABLE.current()
    version = table[2]
    if usage.provider_cost_usd is not None:
        return CostResult(Decimal(usage.provider_cost_usd), "provider", version)
    found = _lookup(provider, model, table)
    if found is None:
        local = _local_price(provider, model)
        if local is not None:
            rates = _rates(local, usage.input_tokens, None)
            return CostResult(_token_cost(rates, usage), "local", "local")
        if _is_local(provider):
            return CostResult(Decimal(0), "local", "local")
        _warn_unpriced(provider, model)
        return CostResult(None, "unknown", version)
    _, entry = found
    rates = _rates(entry, usage.input_tokens, service_tier)
    if "per_credit" in rates:
        return CostResult(_credit_cost(entry, rates, usage.search_credits), "computed", version)
    return CostResult(_token_cost(rates, usage), "computed", version)


def estimate_cost(
    provider: str,
    model: str,
    input_tokens: int,
    max_output_tokens: int,
    *,
    cache_write_1h: bool = False,
    service_tier: str | None = None,
) -> Decimal | None:
    """An upper bound for a call that has not been made (budgets and ``byok.estimate``).

    Every input token at the full input rate (or the 1h cache-write rate when the request
    writes the cache for an hour), every output token at the dearest output rate.
    ``None`` when the model has no price.
    """
    found = _lookup(provider, model)
    if found is None:
        local = _local_price(provider, model)
        if local is not None:
            entry: dict[str, Any] = local
        elif _is_local(provider):
            return Decimal(0)
        else:
            return None
    else:
        entry = found[1]
    rates = _rates(entry, max(input_tokens, 0), service_tier)
    if "per_credit" in rates:
        return _credit_cost(entry, rates, 0)
    inp = rates.get("input", Decimal(0))
    if cache_write_1h:
        inp = max(inp, rates.get("cache_write_1h", inp))
    out = max(rates.get("output", Decimal(0)), rates.get("reasoning", Decimal(0)))
    return max(input_tokens, 0) * inp + max(max_output_tokens, 0) * out
