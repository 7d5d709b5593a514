"""Prices and cost computation: what a call cost, to the exact decimal, and where that came from.

Invariants: money is ``Decimal`` from the price file to the ledger (never float); a model
without a price costs ``None`` (``unknown``, with one warning per model per process), never a
guess; a long-context tier re-prices the *whole* request; xAI's own reported cost wins over
our arithmetic. Prices live in ``prices.json`` beside this module (dated and sourced) and in
an optional user override ``$JUPYTER_BYOK_HOME/prices.json`` with the same shape, whose
models replace the shipped ones key by key.

Token convention (see :mod:`jupyter_byok.types`): ``input_tokens`` includes cached reads and
cache writes; ``output_tokens`` includes reasoning tokens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import threading
import time
import warnings
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from ._files import atomic_write
from .config import home_file, load_settings
from .errors import ConfigError
from .types import Usage

__all__ = [
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

log = logging.getLogger("jupyter_byok")

CostSource = Literal["computed", "provider", "unknown", "local"]

BUILTIN_PATH = Path(__file__).with_name("prices.json")
OVERRIDE_NAME = "prices.json"
MILLION = Decimal(1_000_000)
#: providers whose models run on the user's own machine
LOCAL_PROVIDERS = frozenset({"local"})

RATE_FIELDS = (
    "input",
    "cached_input",
    "cache_write_5m",
    "cache_write_1h",
    "output",
    "reasoning",
    "per_credit",
)
_ENTRY_FIELDS = {
    *RATE_FIELDS,
    "long_context",
    "service_tiers",
    "aliases",
    "source",
    "note",
    "credits_per_request",
}
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


class UnpricedModelWarning(UserWarning):
    """A model has no price: its cost is recorded as unknown."""


@dataclass(frozen=True)
class CostResult:
    cost_usd: Decimal | None
    source: CostSource
    price_version: str


# ----------------------------------------------------------------------------- loading
def _dec(value: Any, where: str) -> Decimal:
    if isinstance(value, float | bool):
        # floats carry binary rounding (0.1 is not 0.1); prices must be written as strings
        raise ConfigError(f'{where}: write prices as strings such as "0.15", not {value!r}')
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"{where}: {value!r} is not a number; fix the price file")
    if not d.is_finite() or d < 0:
        raise ConfigError(f"{where}: {value!r} must be a non-negative number; fix the price file")
    return d


def _check_rates(block: dict[str, Any], where: str, allowed: set[str]) -> None:
    for name, value in block.items():
        if name not in allowed:
            raise ConfigError(
                f"{where}: unknown field {name!r}; allowed: {', '.join(sorted(allowed))}"
            )
        if name in RATE_FIELDS or name == "multiplier":
            _dec(value, f"{where}.{name}")


def validate_prices(data: Any, *, where: str = "price file") -> dict[str, Any]:
    """Check a parsed price file; return it unchanged or raise ``ConfigError`` (one line)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object with 'version' and 'models'")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        raise ConfigError(f"{where}: needs a 'version' string such as \"2026-11-27\"")
    models = data.get("models")
    if not isinstance(models, dict):
        raise ConfigError(f"{where}: needs a 'models' object keyed by 'provider:model'")
    for key, entry in models.items():
        w = f"{where}: {key}"
        provider, sep, model = str(key).partition(":")
        if not sep or not provider or not model:
            raise ConfigError(f"{w}: model keys look like 'provider:model'")
        if not isinstance(entry, dict):
            raise ConfigError(f"{w}: expected an object of rates")
        _check_rates({k: v for k, v in entry.items() if k in RATE_FIELDS}, w, set(RATE_FIELDS))
        unknown = set(entry) - _ENTRY_FIELDS
        if unknown:
            raise ConfigError(f"{w}: unknown field {sorted(unknown)[0]!r}; fix the price file")
        if not any(f in entry for f in RATE_FIELDS):
            raise ConfigError(f"{w}: gives no rate (input/output per 1M tokens, or per_credit)")
        if "per_credit" not in entry and ("input" not in entry or "output" not in entry):
            raise ConfigError(f"{w}: needs both 'input' and 'output' (USD per 1M tokens)")
        lc = entry.get("long_context")
        if lc is not None:
            if not isinstance(lc, dict) or not isinstance(lc.get("threshold"), int):
                raise ConfigError(f"{w}.long_context: needs an integer 'threshold' in tokens")
            if not isinstance(lc.get("inclusive", False), bool):
                raise ConfigError(f"{w}.long_context.inclusive: must be true or false")
            _check_rates(
                {k: v for k, v in lc.items() if k not in ("threshold", "inclusive")},
                f"{w}.long_context",
                set(RATE_FIELDS),
            )
        tiers = entry.get("service_tiers")
        if tiers is not None:
            if not isinstance(tiers, dict):
                raise ConfigError(f'{w}.service_tiers: expected an object such as {{"batch": ...}}')
            for tier, block in tiers.items():
                if not isinstance(block, dict):
                    raise ConfigError(f"{w}.service_tiers.{tier}: expected an object of rates")
                _check_rates(block, f"{w}.service_tiers.{tier}", {*RATE_FIELDS, "multiplier"})
        aliases = entry.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise ConfigError(f"{w}.aliases: expected a list of model names")
        cpr = entry.get("credits_per_request", 1)
        if not isinstance(cpr, int) or isinstance(cpr, bool) or cpr < 0:
            raise ConfigError(f"{w}.credits_per_request: expected a whole number of credits")
    return data


class _Table:
    """The merged price table, reloaded when the override file changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._builtin: dict[str, Any] | None = None
        self._override_sig: tuple[str, float, int] | None = None
        self._checked: tuple[Path | None, float] = (None, 0.0)
        self._models: dict[str, dict[str, Any]] = {}
        self._aliases: dict[str, str] = {}
        self._version = ""

    def _load_builtin(self) -> dict[str, Any]:
        if self._builtin is None:
            data = json.loads(BUILTIN_PATH.read_text(encoding="utf-8"))
            self._builtin = validate_prices(data, where=str(BUILTIN_PATH))
        return self._builtin

    def invalidate(self) -> None:
        """Look at the override file again on the next call (after this process wrote it)."""
        self._checked = (None, 0.0)

    def current(self) -> tuple[dict[str, dict[str, Any]], dict[str, str], str]:
        path = _override_path()
        now = time.monotonic()
        # The override file is looked at no more than twice a second: every call prices.
        if self._models and self._checked[0] == path and now - self._checked[1] < 0.5:
            return self._models, self._aliases, self._version
        self._checked = (path, now)
        try:
            st = path.stat()
            sig: tuple[str, float, int] | None = (str(path), st.st_mtime, st.st_size)
        except FileNotFoundError:
            sig = (str(path), 0.0, -1)
        with self._lock:
            if sig != self._override_sig or not self._models:
                self._rebuild(path, sig)
            return self._models, self._aliases, self._version

    def _rebuild(self, path: Path, sig: tuple[str, float, int] | None) -> None:
        builtin = self._load_builtin()
        models: dict[str, dict[str, Any]] = dict(builtin["models"])
        version = str(builtin["version"])
        if sig is not None and sig[2] >= 0:
            try:
                override = validate_prices(
                    json.loads(path.read_text(encoding="utf-8")), where=str(path)
                )
            except (OSError, ValueError, ConfigError) as exc:
                log.warning("ignoring the price override %s: %s", path, exc)
            else:
                models.update(override["models"])
                version = f"{version}+user:{override['version']}"
        aliases: dict[str, str] = {}
        for key, entry in models.items():
            provider = key.partition(":")[0]
            for alias in entry.get("aliases", []):
                aliases[f"{provider}:{alias}"] = key
        self._models, self._aliases, self._version = models, aliases, version
        self._override_sig = sig


_TABLE = _Table()
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _override_path() -> Path:
    return home_file(OVERRIDE_NAME)


def load_prices() -> dict[str, dict[str, Any]]:
    """Every priced model (shipped plus user override), keyed ``provider:model``."""
    return dict(_TABLE.current()[0])


def list_models() -> list[dict[str, Any]]:
    """One JSON-ready dict per priced model, sorted: id, provider, model and its rates."""
    out = []
    for key, entry in sorted(load_prices().items()):
        provider, _, model = key.partition(":")
        item: dict[str, Any] = {"id": key, "provider": provider, "model": model}
        for name in RATE_FIELDS:
            if name in entry:
                item[name if name == "per_credit" else f"{name}_per_1m"] = str(entry[name])
        if "long_context" in entry:
            item["long_context"] = dict(entry["long_context"])
        if "service_tiers" in entry:
            item["service_tiers"] = sorted(entry["service_tiers"])
        item["aliases"] = list(entry.get("aliases", []))
        out.append(item)
    return out


def price_version() -> str:
    """The version stamped on each ledger row: the table date, plus ``+user:...`` if overridden."""
    return _TABLE.current()[2]


def _lookup(
    provider: str, model: str, table: tuple[dict[str, Any], dict[str, str], str] | None = None
) -> tuple[str, dict[str, Any]] | None:
    models, aliases, _ = table or _TABLE.current()
    name = model.removeprefix("models/")
    candidates = [name]
    stripped = _DATE_SUFFIX.sub("", name)
    if stripped != name:
        candidates.append(stripped)
    for cand in candidates:
        key = f"{provider}:{cand}"
        key = aliases.get(key, key)
        if key in models:
            return key, models[key]
    return None


def price_for(provider: str, model: str) -> dict[str, Any] | None:
    """The price entry for a model (rates as strings, USD per 1M tokens), or ``None``."""
    found = _lookup(provider, model)
    if found is None:
        local = _local_price(provider, model)
        if local is None:
            return None
        return {"key": f"{provider}:{model}", "version": "local", **local}
    key, entry = found
    return {"key": key, "version": price_version(), **entry}


def update_prices(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validate ``path`` and make it the user's price override; a bad file changes nothing."""
    src = Path(path)
    try:
        raw = src.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {src}: {exc.strerror or exc}; check the path")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{src} is not valid JSON ({exc}); nothing was changed")
    validate_prices(data, where=str(src))
    atomic_write(_override_path(), raw if raw.endswith(b"\n") else raw + b"\n")
    _TABLE.invalidate()
    return {"version": data["version"], "models": len(data["models"])}


# ---------------------------------------------------------------------------- local models
def _local_price(provider: str, model: str) -> dict[str, Any] | None:
    """A user-set price for a local model or endpoint (``Settings.local_prices``)."""
    try:
        prices = load_settings().local_prices
    except ConfigError as exc:
        log.warning("cannot read local prices: %s", exc)
        return None
    for key in (f"{provider}:{model}", model, provider):
        entry = prices.get(key)
        if isinstance(entry, dict):
            try:
                _check_rates(entry, f"local_prices.{key}", set(RATE_FIELDS))
            except ConfigError as exc:
                log.warning("%s", exc)
                return None
            return dict(entry)
    return None


def _is_local(provider: str) -> bool:
    if provider in LOCAL_PROVIDERS:
        return True
    try:
        endpoint = load_settings().endpoints.get(provider)
    except ConfigError:
        return False
    # a user-registered endpoint that needs no key is a model on the user's own hardware
    return endpoint is not None and not endpoint.needs_key


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


def estimate_prompt_tokens(text: str, *, provider: str = "", model: str = "") -> int:
    """Prompt tokens for a budget estimate: exact with ``tiktoken`` for OpenAI, else a bound.

    OpenAI's vocabularies ship with the package (``tokenizers/``), so the count is exact
    offline for every model on o200k_base or cl100k_base. Elsewhere the heuristic is
    deliberately high: one token per 2 characters plus 8 for message framing (real tokenizers
    average about 4 characters per English token), so a budget check errs on the side of
    blocking.
    """
    if provider == "openai":
        encoding = _openai_encoding(model)
        if encoding is not None:
            return len(encoding.encode(text, disallowed_special=())) + 8
    return math.ceil(len(text) / 2) + 8


#: the vocabularies shipped in tokenizers/, by tiktoken encoding name
_VOCABULARIES = ("o200k_base", "cl100k_base")
_VOCAB_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
_encodings_lock = threading.Lock()


def _openai_encoding(model: str) -> Any:
    """tiktoken's encoding for ``model``, or None (tiktoken missing; a model on another
    vocabulary: tiktoken would try to download it, which a budget check must never do)."""
    try:
        import tiktoken
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        return None
    try:
        name = encoding_name_for_model(model)
    except KeyError:  # a model tiktoken does not know yet: the current vocabulary
        name = "o200k_base"
    if name not in _VOCABULARIES:
        return None
    loaded = _ENCODINGS.get(name)
    if loaded is not None:
        return loaded
    with _encodings_lock:
        if not _seed_tiktoken_cache(name):
            return None
        try:
            loaded = _ENCODINGS[name] = tiktoken.get_encoding(name)
        except Exception as exc:  # a damaged cache file: tiktoken checks the digest
            log.debug("tiktoken could not load %s (%s); using the heuristic", name, exc)
            return None
    return loaded


_ENCODINGS: dict[str, Any] = {}


def _seed_tiktoken_cache(name: str) -> bool:
    """Put the shipped vocabulary where tiktoken keeps its download of it (its cache:
    ``TIKTOKEN_CACHE_DIR``, ``DATA_GYM_CACHE_DIR`` or ``<tmp>/data-gym-cache``), if absent."""
    import gzip
    import hashlib
    import tempfile

    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR"))
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "":  # caching turned off: tiktoken would download
        return False
    url = _VOCAB_URL.format(name)
    target = Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()
    if target.exists():
        return True
    shipped = Path(__file__).parent / "tokenizers" / f"{name}.tiktoken.gz"
    tmp = None
    try:
        data = gzip.decompress(shipped.read_bytes())
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except (OSError, EOFError) as exc:
        log.debug("could not place the %s vocabulary in tiktoken's cache (%s)", name, exc)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return False
    return True
