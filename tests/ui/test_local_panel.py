"""The panel's "Local models" tab in a real JupyterLab and Chromium, pulling from the
loopback Hub (``HF_ENDPOINT``, see ``conftest.lab``) that serves the embedded SmolLM2 file.

A user pastes a Hub spec and presses Pull -> a progress bar moves (the fake Hub is
throttled so that it is seen) -> the model appears in the list with its facts -> "Test"
answers with tokens/s (from a child process of the server) -> "Remove", confirmed, deletes
the downloaded file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jupyter_byok.testing.hub import EMBEDDED_FILENAME, EMBEDDED_REPO

from .conftest import Capture, Lab
from .test_panel import PANEL, WAIT, _command_shows, _open_lab

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore:coroutine 'ServerApp._cleanup' was never awaited"),
]

SPEC = f"hf:{EMBEDDED_REPO}/{EMBEDDED_FILENAME}"


def test_pull_test_default_and_remove_from_the_panel(
    lab: Lab, browser_page: tuple[Any, Capture], output_dir: Path
) -> None:
    assert lab.hub is not None
    page, _ = browser_page
    _open_lab(lab, page)
    panel = page.locator(PANEL)
    _command_shows(page, "BYOK: Open Keys, Usage and Budgets", panel)
    panel.locator("[data-tab='local']").click()
    section = panel.locator("[data-tabpanel='local']")
    section.wait_for(state="visible", timeout=WAIT)
    embedded = section.locator("tr[data-model='smollm2']")
    embedded.wait_for(state="visible", timeout=WAIT)
    assert "default" in embedded.inner_text() and "Q4_1" in embedded.inner_text()

    # Pull, slowly enough to watch: the bar shows bytes, speed and what is left.
    lab.hub.set_rate(24 * 1024**2)  # ~4 s for the 94 MiB file
    try:
        section.get_by_label("Model to pull").fill(SPEC)
        section.get_by_label("Name to use the model by (optional)").fill("panel-model")
        section.get_by_role("button", name="Pull model").click()
        bar = section.locator("progress.jp-byok-local-progress")
        bar.wait_for(state="visible", timeout=WAIT)
        page.wait_for_function(
            """() => {
                const bar = document.querySelector('progress.jp-byok-local-progress');
                return bar && bar.value > 0 && bar.value < bar.max;
            }""",
            timeout=WAIT,
        )
        shown = section.locator(".jp-byok-local-progress-text").inner_text()
        assert " of 93.8 MiB" in shown and "/s" in shown
        section.screenshot(path=str(output_dir / "panel-local-pulling.png"))
        assert section.get_by_role("button", name="Cancel the pull").is_visible()
    finally:
        lab.hub.set_rate(None)

    row = section.locator("tr[data-model='panel-model']")
    row.wait_for(state="visible", timeout=60_000)
    assert bar.count() == 0  # the bar goes when the pull is done
    status = section.locator(".jp-byok-local-status").inner_text()
    assert "pulled local:panel-model (93.8 MiB, sha256 verified)" in status
    cells = row.inner_text()
    assert "93.8 MiB" in cells and "Q4_1" in cells and "135M" in cells and "8192" in cells
    assert "never" in cells
    downloaded = Path(lab.api("GET", "/byok/local/models").json()["models"][1]["path"])
    assert downloaded.is_file() and downloaded.name == EMBEDDED_FILENAME

    # Test: a short prompt, answered by a child process; tokens/s shown under the row.
    row.get_by_role("button", name="Test local:panel-model").click()
    answer = section.locator("[data-test-of='panel-model']")
    answer.wait_for(state="visible", timeout=120_000)
    text = answer.inner_text()
    assert "tokens at" in text and "tokens/s" in text and "Test failed" not in text

    # Set default, then Remove (confirmed): the file goes, the embedded model is default again.
    row.get_by_role("button", name="Make local:panel-model the default local model").click()
    section.locator("tr[data-model='panel-model'] .jp-byok-badge").wait_for(timeout=WAIT)
    assert lab.api("GET", "/byok/local/models").json()["default"] == "panel-model"
    section.screenshot(path=str(output_dir / "panel-local-models.png"))
    row.get_by_role("button", name="Remove local:panel-model").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(state="visible", timeout=WAIT)
    assert "will be deleted" in dialog.inner_text()
    dialog.get_by_role("button", name="Remove").click()
    row.wait_for(state="detached", timeout=WAIT)
    assert not downloaded.exists()
    overview = lab.api("GET", "/byok/local/models").json()
    assert [m["name"] for m in overview["models"]] == ["smollm2"]
    assert overview["default"] == "smollm2"


def test_settings_editor_suggests_the_local_models(
    lab: Lab, browser_page: tuple[Any, Capture], output_dir: Path
) -> None:
    """The "Default model" setting is a picker: its suggestions are the model ids that
    ``%%byok`` completes, the local models first."""
    from .test_panel import _run_command

    page, _ = browser_page
    _open_lab(lab, page)
    _run_command(page, "Settings Editor")
    page.get_by_text("BYOK", exact=True).first.click()
    field = page.locator("input[id$='defaultModel']")
    field.wait_for(state="visible", timeout=WAIT)
    page.wait_for_function(
        """() => {
            const input = document.querySelector("input[id$='defaultModel']");
            return input && input.list && input.list.options.length > 1;
        }""",
        timeout=WAIT,
    )
    options = page.evaluate(
        """() => [...document.querySelector("input[id$='defaultModel']").list.options]
            .map(o => o.value)"""
    )
    assert options[0] == "local:smollm2" and "openai:gpt-4o-mini" in options
    page.screenshot(path=str(output_dir / "settings-default-model.png"))
