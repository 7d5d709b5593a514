"""Charts: figures built from pandas aggregations of the ledger frame; plotly imported lazily."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from jupyter_byok import charts
from jupyter_byok.errors import ConfigError
from jupyter_byok.ledger import Ledger, LedgerRow, usage


@pytest.fixture
def frame(byok_home: Path):  # type: ignore[no-untyped-def]
    led = Ledger()
    day0 = datetime(2026, 11, 20, 12, tzinfo=timezone.utc).timestamp()
    rows = []
    for d in range(3):
        t = day0 + d * 86400
        rows += [
            LedgerRow("openai", "gpt-4o-mini", "ok", feature="magic", cost_usd=Decimal("0.25"),
                      input_tokens=100, cached_input_tokens=40, output_tokens=10, ts_start=t, ts_end=t),
            LedgerRow("anthropic", "claude-sonnet-4-6", "ok", feature="pipeline", cost_usd=Decimal("1.5"),
                      input_tokens=200, output_tokens=50, reasoning_tokens=20, ts_start=t, ts_end=t),
            LedgerRow("openai", "gpt-4o-mini", "cache_hit", feature="magic", cost_usd=Decimal(0),
                      cache_hit=True, saved_usd=Decimal("0.25"), ts_start=t, ts_end=t),
            LedgerRow("xai", "unpriced", "ok", cost_usd=None, ts_start=t, ts_end=t),
        ]  # fmt: skip
    led.record_many(rows)
    return usage()


def test_cost_by_and_over_time(frame) -> None:  # type: ignore[no-untyped-def]
    fig = charts.cost_by(frame, "provider")
    bar = fig.data[0]
    got = dict(zip(bar.x, bar.y, strict=True))
    assert got == pytest.approx({"anthropic": 4.5, "openai": 0.75, "xai": 0.0})
    assert bar.x[0] == "anthropic"  # largest first
    assert "3 calls without a price" in fig.layout.title.text
    fig = charts.cost_over_time(frame, "day")
    assert fig.layout.barmode == "stack"
    by_name = {t.name: list(t.y) for t in fig.data}
    assert by_name["openai"] == pytest.approx([0.25, 0.25, 0.25])
    assert by_name["anthropic"] == pytest.approx([1.5, 1.5, 1.5])
    assert len(fig.data[0].x) == 3
    assert len(charts.cost_over_time(frame, "month").data[0].x) == 1
    with pytest.raises(ConfigError):
        charts.cost_by(frame, "colour")


def test_tokens_treemap_savings_report_html(frame, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fig = charts.tokens_by(frame, "provider")
    parts = {t.name: dict(zip(t.x, t.y, strict=True)) for t in fig.data}
    assert parts["input"]["openai"] == 180 and parts["cached input"]["openai"] == 120
    assert parts["reasoning"]["anthropic"] == 60 and parts["output"]["anthropic"] == 90
    tm = charts.cost_treemap(frame).data[0]
    values = dict(zip(tm.ids, tm.values, strict=True))
    assert values["anthropic"] == pytest.approx(4.5)
    assert values["openai/gpt-4o-mini/magic"] == pytest.approx(0.75)
    assert dict(zip(tm.ids, tm.parents, strict=True))["openai/gpt-4o-mini"] == "openai"
    sv = charts.cache_savings(frame)
    assert list(sv.data[1].y) == pytest.approx([0.25, 0.25, 0.25])
    figs = charts.report(frame)
    assert len(figs) == 6
    out = charts.write_html(figs, tmp_path / "r.html")
    html = out.read_text()
    assert html.count("Plotly.newPlot") == 6 and "Cost by model" in html
    empty = frame.iloc[0:0]
    assert len(charts.cost_by(empty).data[0].x) == 0


def test_importing_charts_does_not_import_plotly() -> None:
    code = "import sys, jupyter_byok, jupyter_byok.charts; print(any(m.startswith(('plotly','pandas')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
