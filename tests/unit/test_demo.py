"""The README's main job: the offline demo on the embedded model, no keys, no network."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nbformat
import pytest

from jupyter_byok.demo import run_demo


def test_demo_runs_offline_without_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Any attempt to reach a provider or the internet would fail: dead proxy, dead base URLs.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for provider in ("OPENAI", "ANTHROPIC", "GEMINI", "XAI", "TAVILY"):
        monkeypatch.setenv(f"JUPYTER_BYOK_{provider}_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-should-be-removed-by-the-demo-000000")

    assert run_demo(tmp_path / "out") == 0
    out = tmp_path / "out"
    printed = capsys.readouterr().out
    assert "executed notebook" in printed and "ledger:" in printed

    nb = nbformat.read(out / "quickstart.executed.ipynb", as_version=4)
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert errors == []
    with (out / "usage.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["provider"] for r in rows} == {"local"}
    assert {"api", "magic", "pipeline"} <= {r["feature"] for r in rows}
    assert all(r["status"] == "ok" and int(float(r["output_tokens"])) > 0 for r in rows)
    html = (out / "cost_by_model.html").read_text()
    assert "plotly" in html.lower()
    # nothing in the executed notebook mentions the key the environment offered
    assert "should-be-removed" not in json.dumps(nb)
