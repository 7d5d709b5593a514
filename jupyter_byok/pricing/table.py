"""The price table: ``prices.json`` shipped beside the package (dated and sourced), the
user's override ``$JUPYTER_BYOK_HOME/prices.json`` (same shape; its models replace the
shipped ones key by key), their validation, and lookups by provider and model, including
the prices a user sets for local models and endpoints."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .._files import atomic_write
from ..config import home_file, load_settings
from ..errors import ConfigError

log = logging.getLogger("jupyter_byok")


BUILTIN_PATH = Path(__file__).parent.parent / "prices.json"
OVERRIDE_NAME = "prices.json"
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
