"""Plotly figures from ledger frames (the only module that imports plotly, and only lazily).

Invariant: every figure is drawn from a pandas aggregation (``groupby``/``pivot_table``) of
the frame that :func:`jupyter_byok.usage` returns; no Python loop runs over ledger rows.
Unknown costs (NaN) count as 0 in sums, and each figure says how many calls had no price.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas
    import plotly.graph_objects as go

__all__ = [
    "cache_savings",
    "cost_by",
    "cost_over_time",
    "cost_treemap",
    "report",
    "tokens_by",
    "write_html",
]

GROUPS = ("provider", "model", "feature", "notebook", "status", "key_name", "pipeline", "node")
_FREQ = {"hour": "h", "day": "D", "week": "W-SUN", "month": "M"}  # periods start Monday


def _go() -> Any:
    import plotly.graph_objects as go

    return go


def _check(frame: pandas.DataFrame, by: str) -> None:
    if by not in GROUPS:
        from .errors import ConfigError

        raise ConfigError(f"cannot chart by {by!r}: use one of {', '.join(GROUPS)}")
    if by not in frame.columns:
        from .errors import ConfigError

        raise ConfigError(f"the frame has no {by!r} column: pass the frame from byok.usage()")


def _note(frame: pandas.DataFrame) -> str:
    unknown = int(frame["cost_usd"].isna().sum()) if "cost_usd" in frame else 0
    return f" ({unknown} calls without a price count as $0)" if unknown else ""


def _labels(series: pandas.Series) -> pandas.Series:
    return series.astype("string").fillna("(none)")


def cost_by(frame: pandas.DataFrame, by: str = "provider") -> go.Figure:
    """Total cost per provider, model, feature or notebook, largest first."""
    _check(frame, by)
    totals = (
        frame.assign(_g=_labels(frame[by]))
        .groupby("_g", observed=True)["cost_usd"]
        .sum(min_count=0)
        .sort_values(ascending=False)
    )
    go = _go()
    fig = go.Figure(go.Bar(x=totals.index.tolist(), y=totals.to_numpy(), name="cost"))
    fig.update_layout(
        title=f"Cost by {by}{_note(frame)}",
        xaxis_title=by,
        yaxis_title="USD",
        yaxis_tickformat="$.4~f",
    )
    return fig


def _bucketed(frame: pandas.DataFrame, bucket: str) -> pandas.Series:
    if bucket not in _FREQ:
        from .errors import ConfigError

        raise ConfigError(f"cannot bucket by {bucket!r}: use hour, day, week or month")
    ts = frame["ts"].dt.tz_convert("UTC").dt.tz_localize(None)
    return ts.dt.to_period(_FREQ[bucket]).dt.start_time


def cost_over_time(
    frame: pandas.DataFrame, bucket: str = "day", stack: str = "provider"
) -> go.Figure:
    """Cost per hour/day/week/month (UTC), stacked by provider (or another column)."""
    _check(frame, stack)
    table = (
        frame.assign(_t=_bucketed(frame, bucket), _g=_labels(frame[stack]))
        .pivot_table(
            index="_t",
            columns="_g",
            values="cost_usd",
            aggfunc="sum",
            fill_value=0.0,
            observed=True,
        )
        .sort_index()
    )
    go = _go()
    fig = go.Figure(
        [go.Bar(x=table.index, y=table[col].to_numpy(), name=str(col)) for col in table.columns]
    )
    fig.update_layout(
        barmode="stack",
        title=f"Cost per {bucket} by {stack}{_note(frame)}",
        xaxis_title=f"{bucket} (UTC)",
        yaxis_title="USD",
    )
    return fig


def tokens_by(frame: pandas.DataFrame, by: str = "model") -> go.Figure:
    """Input (uncached and cached), output and reasoning tokens per group."""
    _check(frame, by)
    cols = ["input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens"]
    sums = frame.assign(_g=_labels(frame[by])).groupby("_g", observed=True)[cols].sum()
    sums["uncached_input_tokens"] = sums["input_tokens"] - sums["cached_input_tokens"]
    sums["visible_output_tokens"] = sums["output_tokens"] - sums["reasoning_tokens"]
    go = _go()
    parts = [
        ("uncached_input_tokens", "input"),
        ("cached_input_tokens", "cached input"),
        ("visible_output_tokens", "output"),
        ("reasoning_tokens", "reasoning"),
    ]
    fig = go.Figure(
        [go.Bar(x=sums.index.tolist(), y=sums[c].to_numpy(), name=label) for c, label in parts]
    )
    fig.update_layout(
        barmode="stack", title=f"Tokens by {by}", xaxis_title=by, yaxis_title="tokens"
    )
    return fig


def cost_treemap(
    frame: pandas.DataFrame, path: Sequence[str] = ("provider", "model", "feature")
) -> go.Figure:
    """Where the money went: provider -> model -> feature (any columns of the frame)."""
    import pandas as pd

    path = list(path)
    for col in path:
        _check(frame, col)
    leaves = (
        frame.assign(**{c: _labels(frame[c]) for c in path})
        .groupby(path, observed=True)["cost_usd"]
        .sum()
        .reset_index()
    )
    levels = []
    for depth in range(1, len(path) + 1):
        level = leaves.groupby(path[:depth], observed=True)["cost_usd"].sum().reset_index()
        level["id"] = level[path[:depth]].astype(str).agg("/".join, axis=1)
        level["parent"] = (
            level[path[: depth - 1]].astype(str).agg("/".join, axis=1) if depth > 1 else ""
        )
        level["label"] = level[path[depth - 1]].astype(str)
        levels.append(level[["id", "parent", "label", "cost_usd"]])
    nodes = pd.concat(levels, ignore_index=True)
    go = _go()
    fig = go.Figure(
        go.Treemap(
            ids=nodes["id"].tolist(),
            parents=nodes["parent"].tolist(),
            labels=nodes["label"].tolist(),
            values=nodes["cost_usd"].to_numpy(),
            branchvalues="total",
            hovertemplate="%{label}: $%{value:.6f}<extra></extra>",
        )
    )
    fig.update_layout(title=f"Cost: {' → '.join(path)}{_note(frame)}")
    return fig


def cache_savings(frame: pandas.DataFrame, bucket: str = "day") -> go.Figure:
    """Money the response cache saved, and what was spent, per period."""
    sums = (
        frame.assign(_t=_bucketed(frame, bucket))
        .groupby("_t")[["saved_usd", "cost_usd"]]
        .sum()
        .sort_index()
    )
    go = _go()
    fig = go.Figure(
        [
            go.Bar(x=sums.index, y=sums["cost_usd"].to_numpy(), name="spent"),
            go.Bar(x=sums.index, y=sums["saved_usd"].to_numpy(), name="saved by the cache"),
        ]
    )
    fig.update_layout(barmode="group", title=f"Saved by the cache per {bucket}", yaxis_title="USD")
    return fig


def report(frame: pandas.DataFrame, bucket: str = "day") -> list[go.Figure]:
    """All the usage figures, in reading order."""
    return [
        cost_over_time(frame, bucket),
        cost_by(frame, "model"),
        cost_by(frame, "feature"),
        cost_treemap(frame),
        tokens_by(frame, "model"),
        cache_savings(frame, bucket),
    ]


def write_html(figures: go.Figure | Sequence[go.Figure], path: str | os.PathLike[str]) -> Path:
    """One self-contained HTML file (plotly.js inlined once: works offline)."""
    figs = list(figures) if isinstance(figures, Sequence) else [figures]
    out = Path(path)
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figs)]
    out.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>jupyter_byok usage</title>"
        "</head><body>" + "\n".join(parts) + "</body></html>",
        encoding="utf-8",
    )
    return out
