"""Prices and cost estimates, for ``jupyter byok prices`` and ``%byok price|estimate|models``.

Model ids are read by :func:`jupyter_byok.models.parse_model`, the one parser (aliases and
``@keyname`` included), so the terminal and the notebook accept the same ids.
"""

from __future__ import annotations

from typing import Any

from .render import table

__all__ = ["estimate", "price", "price_table", "render_price_table", "update_prices"]


def price(model: str) -> dict[str, Any]:
    """``{"id": "provider:model", "price": {...} | None}``; ``None`` when no price is known."""
    from ..models import parse_model
    from ..pricing import price_for

    ref = parse_model(model)
    return {"id": ref.id, "price": price_for(ref.provider, ref.model)}


def price_table() -> dict[str, Any]:
    """``{"version": ..., "models": [...]}``: the whole table, one dict per model."""
    from .. import pricing

    return {"version": pricing.price_version(), "models": pricing.list_models()}


def render_price_table(data: dict[str, Any]) -> str:
    """The table ``jupyter byok prices show`` prints."""
    rows: list[tuple[str, ...]] = [
        ("MODEL", "INPUT", "CACHED", "WRITE 5M", "WRITE 1H", "OUTPUT", "LONG CONTEXT")
    ]
    for m in data["models"]:
        lc = m.get("long_context")
        rows.append(
            (
                m["id"],
                m.get("input_per_1m")
                or (f"{m['per_credit']}/credit" if "per_credit" in m else "-"),
                m.get("cached_input_per_1m", "-"),
                m.get("cache_write_5m_per_1m", "-"),
                m.get("cache_write_1h_per_1m", "-"),
                m.get("output_per_1m", "-"),
                f">{lc['threshold']:,}: {lc.get('input')}/{lc.get('output')}" if lc else "-",
            )
        )
    head = f"price table {data['version']} (USD per 1M tokens; Tavily per credit)"
    return f"{head}\n{table(rows)}"


def update_prices(source: str) -> dict[str, Any]:
    """Install a validated price override file; ``{"version", "models"}``."""
    from ..pricing import update_prices as install

    return install(source)


def estimate(model: str, messages: Any, max_tokens: int | None = None) -> Any:
    """The upper-bound cost of a call, nothing sent: an :class:`~jupyter_byok.Estimate`.

    ``messages``: a prompt string or a list of :class:`~jupyter_byok.types.Message`.
    """
    from ..engine import build_messages, estimate_call
    from ..models import parse_model

    ref = parse_model(model)
    return estimate_call(ref, build_messages(messages), max_tokens)
