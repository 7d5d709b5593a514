"""The pipeline canvas (``PipelineBuilder``, an anywidget) in a real JupyterLab and Chromium,
with the loopback fake providers and the embedded local model.

From an empty canvas, entirely through the browser: an input, an LLM node on ``openai:``, a
web-search node and an LLM node on ``local:smollm2``, wired by dragging from port to port.
Run -> every card reaches ``done`` with a dollar badge equal to its ledger row. Save the
notebook, reload the page -> the canvas comes back as it was. Run against a slow fake and
press Stop -> the run ends within 2 s and the next cell executes. No key value in the DOM,
the widget state, the websocket frames or the saved ``.ipynb``.

Screenshots go to the UI test output; ``BYOK_UI_UPDATE_DOCS=1`` also refreshes
``docs/pipeline-canvas.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from .conftest import CANARY, Capture, Lab, write_notebook
from .test_keyform import _run

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:coroutine 'ServerApp._cleanup' was never awaited"),
]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "byok-canvas.ipynb"
WAIT = 60_000
TAVILY = "tvly-dev-canvascanary" + "Q" * 20
SCAN = """\
import json
_state = json.dumps(b.get_state(), default=str)
print("CANVAS-SCAN", %r[::-1] in _state, %r[::-1] in _state, len(_state) > 1000)
"""


def _ledger(lab: Lab, pipeline: str) -> list[dict[str, Any]]:
    """The ledger rows of ``pipeline``, read by a separate process from the lab's home."""
    code = (
        "import json, jupyter_byok\n"
        f"r = jupyter_byok.usage(); r = r[r['pipeline'] == {pipeline!r}]\n"
        "print(json.dumps(r[['node', 'status', 'cost_usd', 'input_tokens', 'output_tokens']]"
        ".to_dict('records'), default=str))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=lab.env, capture_output=True, text=True, check=True
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def _drag(page: Any, source: Any, target: Any) -> None:
    """Press on one port, move to the other in steps, release (React Flow's connection)."""
    a, b = source.bounding_box(), target.bounding_box()
    assert a and b, "a port is not on screen"
    page.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=12)
    page.mouse.up()


def _open(lab: Lab, page: Any) -> Any:
    page.goto(f"{lab.url}/lab/workspaces/byok-canvas/tree/{NOTEBOOK}?token={lab.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=WAIT)
    page.locator("#jp-main-statusbar", has_text="| Idle").wait_for(timeout=WAIT)
    return page.locator(".jp-NotebookPanel .jp-Cell")


def _fit(canvas: Any) -> None:
    canvas.locator(".react-flow__controls-fitview").click()
    canvas.page.wait_for_timeout(400)


def test_build_run_reload_and_stop_from_the_browser(
    lab: Lab, browser_page: tuple[Any, Capture], output_dir: Path
) -> None:
    page, capture = browser_page
    keys = [
        lab.api("POST", "/byok/keys", json={"provider": "openai", "key": CANARY}),
        lab.api("POST", "/byok/keys", json={"provider": "tavily", "key": TAVILY}),
    ]
    assert [k.status_code for k in keys] == [201, 201], [k.text for k in keys]
    write_notebook(
        lab.root / NOTEBOOK,
        [
            "import jupyter_byok as byok\nb = byok.PipelineBuilder(byok.Pipeline('ui'))\nb",
            "print('next-cell', 40 + 2)",
            SCAN % (CANARY[::-1], TAVILY[::-1]),
        ],
    )
    try:
        cells = _open(lab, page)
        _run(page, cells, 0, attempts=2)
        canvas = cells.nth(0).locator(".byok-canvas")
        canvas.wait_for(state="visible", timeout=WAIT)
        assert canvas.locator(".react-flow__node").count() == 0  # an empty canvas

        # -------------------------------------------------- build it from the palette
        palette = canvas.get_by_role("toolbar", name="add a node")
        palette.get_by_label("input name").fill("text")
        palette.get_by_role("button", name="+ Input").click()
        palette.get_by_role("button", name="+ LLM").click()
        palette.get_by_role("button", name="+ Web search").click()
        palette.get_by_role("button", name="+ LLM").click()
        for name in ("input.text", "llm_1", "search_1", "llm_2"):
            canvas.get_by_test_id(f"card-{name}").wait_for(timeout=WAIT)
        first, search, last = (
            canvas.get_by_test_id(f"card-{n}") for n in ("llm_1", "search_1", "llm_2")
        )
        for card, model in ((first, "openai:gpt-4o-mini"), (last, "local:smollm2")):
            picker = card.get_by_test_id("model")
            picker.focus()  # the options are made when the picker is first used
            picker.select_option(model)
        # priced from the price table; the local model at $0; only providers with a key
        labels = first.get_by_test_id("model").locator("option").all_inner_texts()
        assert "openai:gpt-4o-mini  ($0.15 in / $0.60 out per 1M)" in labels
        assert "local:smollm2  (local, $0)" in labels
        assert not [x for x in labels if x.startswith("anthropic:")]
        first.get_by_test_id("prompt").fill("Summarize:")
        first.get_by_test_id("max_tokens").fill("40")
        last.get_by_test_id("prompt").fill("Answer from")
        last.get_by_test_id("max_tokens").fill("8")
        last.get_by_test_id("max_tokens").press("Enter")
        first.get_by_test_id("model").wait_for()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=card-llm_2] [data-testid=prompt]')"
            ".value === 'Answer from'"
        )
        _fit(canvas)

        # wires: drag from each output port to the next input port
        def port(card: str, kind: str) -> Any:
            return canvas.locator(
                f"[data-testid='card-{card}'] .react-flow__handle.{'source' if kind == 'out' else 'target'}"
            )

        for src, dst in (("input.text", "llm_1"), ("llm_1", "search_1"), ("search_1", "llm_2")):
            _drag(page, port(src, "out"), port(dst, "in"))
            canvas.locator(f".react-flow__edge[aria-label='wire from {src} to {dst}']").wait_for(
                state="attached", timeout=WAIT
            )
        assert canvas.locator(".react-flow__edge").count() == 3
        # drawing a wire wrote the reference into the prompt
        assert first.get_by_test_id("prompt").input_value() == "Summarize: {input.text}"
        assert search.get_by_test_id("prompt").input_value() == "{llm_1}"
        assert last.get_by_test_id("prompt").input_value() == "Answer from {search_1}"
        # a wire back upstream is a cycle: refused on the card, with the validator's words
        _drag(page, port("llm_2", "out"), port("llm_1", "in"))
        problem = first.get_by_test_id("problem")
        problem.wait_for(timeout=WAIT)
        assert "is part of a cycle (llm_1 -> search_1 -> llm_2 -> llm_1)" in problem.inner_text()
        assert canvas.locator(".react-flow__edge").count() == 3

        value = canvas.get_by_test_id("card-input.text").get_by_test_id("input-value")
        value.fill("owls")
        value.press("Enter")
        estimate = canvas.get_by_test_id("estimate")
        page.wait_for_function(
            "el => el.textContent.startsWith('≈ $')", arg=estimate.element_handle()
        )

        # ------------------------------------------------------------------ run
        canvas.get_by_role("button", name="run the pipeline").click()
        status = canvas.get_by_test_id("status")
        page.wait_for_function(
            "el => ['done', 'error'].includes(el.dataset.status)",
            arg=status.element_handle(),
            timeout=120_000,
        )
        assert status.get_attribute("data-status") == "done", status.inner_text()
        rows = _ledger(lab, "ui")
        total = 0.0
        for name in ("llm_1", "search_1", "llm_2"):
            card = canvas.get_by_test_id(f"card-{name}")
            assert card.get_attribute("data-state") == "done", name
            shown = card.get_by_test_id("cost").get_attribute("data-cost")
            mine = [r for r in rows if r["node"] == name]
            assert len(mine) == 1 and mine[0]["status"] == "ok", mine
            assert float(shown) == pytest.approx(float(mine[0]["cost_usd"]), abs=1e-12), name
            # React Flow hides a card while it measures it again: wait until it shows
            expect(card).to_contain_text(
                f"{mine[0]['input_tokens']} → {mine[0]['output_tokens']} tok", timeout=WAIT
            )
            total += float(shown)
        assert float(canvas.get_by_test_id("cost").nth(2).get_attribute("data-cost")) == 0  # local
        assert canvas.get_by_test_id("total").inner_text().startswith("total $")
        assert total > 0
        canvas.screenshot(path=str(output_dir / "canvas-run.png"))
        if os.environ.get("BYOK_UI_UPDATE_DOCS"):  # the picture in docs/ and the README
            shutil.copyfile(output_dir / "canvas-run.png", ROOT / "docs" / "pipeline-canvas.png")
        placed = {
            n: canvas.get_by_test_id(f"card-{n}").locator("xpath=..").get_attribute("style")
            for n in ("llm_1", "search_1", "llm_2")
        }

        # ---------------------------------------------- save, reload: still there
        cells.nth(1).locator(".jp-InputPrompt").click()
        page.keyboard.press("Control+s")
        page.wait_for_function("() => !document.querySelector('.jp-mod-dirty')", timeout=WAIT)
        page.reload()
        cells = _open(lab, page)
        canvas = cells.nth(0).locator(".byok-canvas")
        canvas.wait_for(state="visible", timeout=WAIT)
        for name in ("llm_1", "search_1", "llm_2"):
            card = canvas.get_by_test_id(f"card-{name}")
            card.wait_for(timeout=WAIT)
            assert card.get_attribute("data-state") == "done"
            style = card.locator("xpath=..").get_attribute("style")
            assert style is not None and placed[name] is not None
            assert _translate(style) == _translate(placed[name]), name
        assert canvas.locator(".react-flow__edge").count() == 3

        # ----------------------------------------------------- Stop a slow run
        lab.fake.set_latency("openai", 30)
        try:
            value = canvas.get_by_test_id("card-input.text").get_by_test_id("input-value")
            value.fill("moths")  # new input: nothing cached
            value.press("Enter")
            page.wait_for_timeout(300)
            canvas.get_by_role("button", name="run the pipeline").click()
            page.wait_for_function(
                "() => document.querySelector('[data-testid=card-llm_1]')?.dataset.state"
                " === 'running'",
                timeout=WAIT,
            )
            page.wait_for_timeout(500)
            started = time.monotonic()
            canvas.get_by_role("button", name="stop the run").click()
            page.wait_for_function(
                "el => el.dataset.status === 'cancelled'",
                arg=canvas.get_by_test_id("status").element_handle(),
                timeout=5_000,
            )
            assert time.monotonic() - started < 2
        finally:
            lab.fake.set_latency("openai", 0)
        assert canvas.get_by_test_id("card-llm_1").get_attribute("data-state") == "cancelled"
        _run(page, cells, 1)
        cells.nth(1).locator(".jp-OutputArea-output", has_text="next-cell 42").wait_for(
            timeout=WAIT
        )
        assert any(r["status"] == "cancelled" and r["node"] == "llm_1" for r in _ledger(lab, "ui"))

        # ------------------------------------------- keyboard: add, select, delete
        canvas.get_by_role("button", name="+ LLM").focus()
        page.keyboard.press("Enter")
        extra = canvas.locator(".react-flow__node[data-id='llm_3']")
        extra.wait_for(timeout=WAIT)
        assert extra.get_attribute("aria-label") == "llm node llm_3"
        extra.focus()
        page.keyboard.press("Enter")  # select
        page.wait_for_function(
            "() => document.querySelector(\".react-flow__node[data-id='llm_3']\")"
            ".classList.contains('selected')",
            timeout=WAIT,
        )
        page.keyboard.press("Delete")
        extra.wait_for(state="detached", timeout=WAIT)
        assert canvas.locator(".react-flow__node").count() == 4

        # ------------------------------------------------------------ no key anywhere
        _run(page, cells, 2)
        scan = cells.nth(2).locator(".jp-OutputArea-output", has_text="CANVAS-SCAN")
        scan.wait_for(timeout=WAIT)
        assert scan.inner_text().strip() == "CANVAS-SCAN False False True"
        cells.nth(1).locator(".jp-InputPrompt").click()
        page.keyboard.press("Control+s")
        page.wait_for_function("() => !document.querySelector('.jp-mod-dirty')", timeout=WAIT)
        saved = (lab.root / NOTEBOOK).read_text()
        assert "application/vnd.jupyter.widget-view+json" in saved
        for secret in (CANARY, TAVILY):
            assert secret not in saved
            assert secret not in page.content()
            assert capture.find(secret) == []
    finally:
        for key in lab.api("GET", "/byok/keys").json()["keys"]:
            if key["provider"] in ("openai", "tavily") and key["name"] == "default":
                lab.api("DELETE", f"/byok/keys/{key['id']}")
        for session in lab.api("GET", "/api/sessions").json():
            if session.get("path") == NOTEBOOK:
                lab.api("DELETE", f"/api/sessions/{session['id']}")


def _translate(style: str) -> str:
    start = style.index("translate(")
    return style[start : style.index(")", start) + 1]
