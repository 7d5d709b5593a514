"""The BYOK front end in a real JupyterLab and Chromium, against the fake providers.

The journey a user takes: add a key in the panel -> it is listed masked -> verify it against
the (fake) provider -> run a ``%%byok`` cell -> the dashboard and the status bar show the cost
within seconds -> export CSV -> delete the key. Throughout, the key typed in must never come
back: not in the DOM, not in storage, not in any response or websocket frame the page got.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import CANARY, Capture, Lab, write_notebook

pytestmark = [
    pytest.mark.timeout(240),
    # pytest-jupyter's autouse cleanup has no server to clean up in these tests.
    pytest.mark.filterwarnings("ignore:coroutine 'ServerApp._cleanup' was never awaited"),
]

NOTEBOOK = "byok-ui.ipynb"
PANEL = "#jupyter-byok-panel"
STATUS = "[data-testid=byok-status]"
#: Waits on the page; generous for a loaded 2-core machine, but a broken feature still fails.
WAIT = 20_000
#: "Within a few seconds" of the cell finishing.
FEW_SECONDS = 6_000


def _notebook(root: Path) -> None:
    cells = [
        "%load_ext jupyter_byok",
        "%%byok openai:gpt-4o-mini\nSay hello to the BYOK UI test.",
    ]
    write_notebook(root / NOTEBOOK, cells)


def _run_command(page: Any, label: str) -> None:
    """Run a command from the palette, as a keyboard user would. The palette closes when
    something else takes focus (e.g. a document opening), so the opening is retried."""
    from playwright.sync_api import Error as PlaywrightError

    search = page.locator(".jp-ModalCommandPalette .lm-CommandPalette-input")
    item = page.locator(".jp-ModalCommandPalette .lm-CommandPalette-item", has_text=label).first
    for attempt in range(3):
        page.keyboard.press("Control+Shift+C")
        try:
            search.wait_for(state="visible", timeout=5_000)
            search.fill(label, timeout=5_000)
            item.wait_for(state="visible", timeout=5_000)
            page.keyboard.press("Enter")
            search.wait_for(state="hidden", timeout=5_000)
            return
        except PlaywrightError:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")


def _command_shows(page: Any, label: str, target: Any) -> None:
    """Run a palette command until ``target`` is visible. JupyterLab may restore its saved
    layout (activating the file browser) just after the page settles, hiding the panel the
    command had opened; a user would simply run the command again."""
    from playwright.sync_api import Error as PlaywrightError

    for attempt in range(3):
        _run_command(page, label)
        try:
            target.wait_for(state="visible", timeout=WAIT if attempt == 2 else 5_000)
            return
        except PlaywrightError:
            if attempt == 2:
                raise


def _no_canary_in_page(page: Any) -> None:
    html = page.content()
    assert CANARY not in html
    values = page.evaluate(
        "() => [...document.querySelectorAll('input, textarea')].map(e => e.value).join('\\n')"
    )
    assert CANARY not in values
    storage = page.evaluate(
        "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
    )
    assert CANARY not in storage


def _status_text(page: Any) -> str:
    return str(page.locator(STATUS).inner_text())


def test_key_usage_journey(lab: Lab, browser_page: tuple[Any, Capture], output_dir: Path) -> None:
    page, capture = browser_page
    _notebook(lab.root)
    page.goto(f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}")
    page.wait_for_selector("body[data-byok-activated='true']", state="attached", timeout=60_000)
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60_000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
    page.wait_for_selector(f"{STATUS}[data-state]", timeout=WAIT)
    # What today cost before this test: $0.00 on a fresh server, more when another UI test
    # of this worker (the canvas's run) spent in the same server first.
    start = lab.api("GET", "/byok/status").json()["spend_today_usd"]
    page.wait_for_selector(f"{STATUS}[data-spend='{start}']", timeout=WAIT)
    assert re.search(r"^BYOK \$[0-9.,]+ today$", _status_text(page)), _status_text(page)
    if float(start) == 0:
        assert "BYOK $0.00 today" in _status_text(page)
    start_shown = _status_text(page).split()[1]

    # The sidebar tab is labelled BYOK.
    tab = page.locator(".jp-SideBar .lm-TabBar-tab[data-id='jupyter-byok-panel']")
    assert tab.count() == 1
    assert "BYOK" in (tab.get_attribute("title") or "") + tab.inner_text()

    # Add a key through the palette command: the panel opens with the keys form.
    panel = page.locator(PANEL)
    _command_shows(page, "BYOK: Add an API Key", panel)
    page.wait_for_selector(f"{PANEL} .jp-byok-provider[data-provider='openai']", timeout=WAIT)
    assert "Keystore protection:" in panel.locator("[data-testid=byok-tier]").inner_text()
    openai = panel.locator(".jp-byok-provider[data-provider='openai']")
    assert openai.get_attribute("data-configured") == "false"
    panel.get_by_label("Provider", exact=True).select_option("openai")
    secret = panel.get_by_label("API key", exact=True)
    assert secret.get_attribute("type") == "password"
    secret.fill(CANARY)
    panel.get_by_role("button", name="Save key").click()
    # Listed, masked to the last 4 characters.
    masked = openai.locator(".jp-byok-masked")
    masked.wait_for(state="visible", timeout=WAIT)
    assert masked.inner_text() == "••••Zq9X"
    assert openai.get_attribute("data-configured") == "true"
    assert secret.input_value() == ""
    _no_canary_in_page(page)
    panel.screenshot(path=str(output_dir / "panel-keys.png"))

    # Verify: the fake provider answers; the panel shows its answer and the latency.
    before = len(lab.fake.requests_for("openai"))
    openai.get_by_role("button", name=re.compile("^Verify OpenAI key")).click()
    result = openai.locator(".jp-byok-verify")
    result.wait_for(state="visible", timeout=WAIT)
    assert result.get_attribute("data-ok") == "true", result.inner_text()
    assert re.search(r"Verified in \d+\.\d\d s · .*models", result.inner_text()), (
        result.inner_text()
    )
    assert "Last verified: just now" in openai.inner_text()
    checks = lab.fake.requests_for("openai")[before:]
    assert checks and checks[-1].headers.get("authorization") == f"Bearer {CANARY}"

    # Open the dashboard before the call, so that what follows proves it refreshes by itself.
    page.locator(STATUS).click()
    usage = panel.locator("[data-tabpanel='usage']")
    usage.wait_for(state="visible", timeout=WAIT)
    assert panel.locator("[data-tab='usage']").get_attribute("aria-selected") == "true"
    total = usage.locator("[data-testid=byok-total-cost]")
    total.wait_for(state="visible", timeout=WAIT)
    assert total.inner_text() == start_shown

    # Run the notebook: %load_ext, then a %%byok cell answered by the fake.
    cells = page.locator(".jp-NotebookPanel .jp-Cell")
    cells.nth(0).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    page.keyboard.press("Shift+Enter")
    prompt = cells.nth(1).locator(".jp-InputPrompt")
    page.wait_for_function(
        "el => /\\[2\\]/.test(el.textContent)", arg=prompt.element_handle(), timeout=90_000
    )
    output = cells.nth(1).locator(".jp-OutputArea")
    output.locator(".jp-OutputArea-output", has_text="Echo:").wait_for(timeout=WAIT)
    assert "gpt-4o-mini" in output.inner_text()
    assert "Error" not in output.inner_text(), output.inner_text()

    # Within a few seconds: the status bar and the open dashboard show the new cost.
    page.wait_for_function(
        "start => { const el = document.querySelector('[data-testid=byok-status]');"
        " return el && el.dataset.spend && Number(el.dataset.spend) > start; }",
        arg=float(start),
        timeout=FEW_SECONDS,
    )
    page.wait_for_function(
        "start => { const el = document.querySelector('[data-testid=byok-totals]');"
        " return el && Number(el.dataset.totalUsd) > start; }",
        arg=float(start),
        timeout=FEW_SECONDS,
    )
    status = lab.api("GET", "/byok/status").json()
    spend = status["spend_today_usd"]
    assert float(spend) > float(start)
    assert page.locator(STATUS).get_attribute("data-spend") == spend
    shown = total.inner_text()
    assert shown.startswith("$") and shown != start_shown
    assert abs(float(shown[1:].replace(",", "")) - float(spend)) <= max(1e-8, float(spend) * 1e-3)
    assert shown in _status_text(page)
    row = usage.locator("[data-testid=byok-recent] tbody tr").first
    assert "openai" in row.inner_text() and "gpt-4o-mini" in row.inner_text()
    assert NOTEBOOK in row.inner_text()
    for dim in ("provider", "model", "feature", "notebook"):
        chart = usage.locator(f".jp-byok-chart[data-dimension='{dim}']")
        chart.locator(".main-svg").first.wait_for(state="attached", timeout=WAIT)
        assert chart.locator(".bars .point").count() >= 1
        assert "$" in (chart.get_attribute("aria-label") or "")
    assert "openai" in (
        usage.locator(".jp-byok-chart[data-dimension='provider']").get_attribute("aria-label") or ""
    )
    assert "magic" in (
        usage.locator(".jp-byok-chart[data-dimension='feature']").get_attribute("aria-label") or ""
    )
    panel.screenshot(path=str(output_dir / "panel-usage.png"))
    page.screenshot(path=str(output_dir / "lab-usage.png"))

    # The other ranges include today's call too.
    usage.get_by_label("Time range").select_option("7d")
    page.wait_for_function(
        "() => Number(document.querySelector('[data-testid=byok-totals]').dataset.calls) >= 1",
        timeout=WAIT,
    )

    # CSV export of the range.
    with page.expect_download(timeout=WAIT) as download_info:
        usage.get_by_role("button", name="Export the calls in this range as CSV").click()
    download = download_info.value
    assert re.match(r"byok-usage-7d-\d{4}-\d{2}-\d{2}\.csv$", download.suggested_filename)
    text = Path(download.path()).read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert any(r["provider"] == "openai" and r["model"] == "gpt-4o-mini" for r in rows), text
    assert CANARY not in text

    # The same dashboard in the dark theme.
    _run_command(page, "Use Theme: JupyterLab Dark")
    page.wait_for_selector("body[data-jp-theme-light='false']", state="attached", timeout=WAIT)
    page.wait_for_function(
        "() => { const t = document.querySelector("
        "'.jp-byok-chart[data-dimension=provider] .ytick text');"
        " return t && getComputedStyle(document.body).getPropertyValue('--jp-ui-font-color1').trim()"
        " && t.style.fill !== 'rgb(0, 0, 0)' && !/^rgb\\(0, 0, 0\\)/.test(t.style.fill); }",
        timeout=WAIT,
    )
    panel.screenshot(path=str(output_dir / "panel-usage-dark.png"))
    _run_command(page, "Use Theme: JupyterLab Light")
    page.wait_for_selector("body[data-jp-theme-light='true']", state="attached", timeout=WAIT)

    # Delete the key, after confirming.
    panel.locator("[data-tab='keys']").click()
    openai.get_by_role("button", name=re.compile("^Delete OpenAI key")).click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(state="visible", timeout=WAIT)
    assert "Zq9X" in dialog.inner_text()
    dialog.get_by_role("button", name="Delete").click()
    page.wait_for_selector(
        f"{PANEL} .jp-byok-provider[data-provider='openai'][data-configured='false']", timeout=WAIT
    )
    assert openai.locator(".jp-byok-key").count() == 0
    assert lab.api("GET", "/byok/keys").json()["keys"] == []

    # The canary never came back to the browser, and the server never logged it.
    _no_canary_in_page(page)
    assert capture.responses, "no responses were captured"
    assert any("/byok/keys" in url for url, _ in capture.responses)
    assert capture.frames, "no websocket frames were captured"
    assert capture.find(CANARY) == []
    assert CANARY not in lab.log.read_text(errors="replace")
    assert CANARY not in (lab.root / NOTEBOOK).read_text()


def _spend_something(lab: Lab) -> None:
    """One priced call through the REST API (key added and removed again)."""
    key = lab.api("POST", "/byok/keys", json={"provider": "openai", "key": CANARY, "name": "rest"})
    assert key.status_code == 201, key.text
    done = lab.api(
        "POST", "/byok/complete", json={"model": "openai:gpt-4o-mini@rest", "prompt": "hi"}
    )
    assert done.status_code == 200, done.text
    assert lab.api("DELETE", f"/byok/keys/{key.json()['id']}").status_code == 204
    assert float(lab.api("GET", "/byok/status").json()["spend_today_usd"]) > 0


def _open_lab(lab: Lab, page: Any) -> None:
    page.goto(f"{lab.url}/lab?token={lab.token}")
    page.wait_for_selector("body[data-byok-activated='true']", state="attached", timeout=60_000)
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60_000)
    page.wait_for_selector(f"{STATUS}[data-state]", timeout=WAIT)


def test_budgets_edit_and_state(
    lab: Lab, browser_page: tuple[Any, Capture], output_dir: Path
) -> None:
    page, _ = browser_page
    _spend_something(lab)
    _open_lab(lab, page)
    panel = page.locator(PANEL)
    budgets = panel.locator("[data-tabpanel='budgets']")
    _command_shows(page, "BYOK: Open Budgets", budgets)
    page.wait_for_selector(f"{PANEL} [data-tabpanel='budgets'] .jp-byok-budgets > *", timeout=WAIT)
    budgets.get_by_role("button", name="Add a budget").click()
    row = budgets.locator("[data-testid=byok-budget]").last
    row.get_by_label(re.compile("^Limit in USD")).fill("0.00000001")
    row.get_by_label(re.compile("^Warning threshold")).fill("50")
    budgets.get_by_role("button", name="Save budgets").click()
    # Saved on the server, shown with the spend against it (today's call already exceeds it).
    saved = budgets.locator("[data-testid=byok-budget][data-state='exceeded']")
    saved.wait_for(state="visible", timeout=WAIT)
    assert "over the limit" in saved.inner_text()
    server = lab.api("GET", "/byok/budgets").json()["budgets"]
    assert len(server) == 1
    assert server[0]["period"] == "day" and server[0]["scope"] == "total"
    assert float(server[0]["limit_usd"]) == pytest.approx(1e-8)
    assert float(server[0]["warn_at"]) == pytest.approx(0.5)
    # The status bar reflects the budget state right after saving.
    page.wait_for_selector(f"{STATUS}[data-state='exceeded']", timeout=FEW_SECONDS)
    assert "over a budget limit" in (page.locator(STATUS).get_attribute("aria-label") or "")
    panel.screenshot(path=str(output_dir / "panel-budgets.png"))

    # Remove it again.
    row = budgets.locator("[data-testid=byok-budget]").first
    row.get_by_role("button", name=re.compile("^Remove budget")).click()
    budgets.get_by_role("button", name="Save budgets").click()
    budgets.locator(".jp-byok-empty").wait_for(state="visible", timeout=WAIT)
    assert lab.api("GET", "/byok/budgets").json()["budgets"] == []
    page.wait_for_selector(f"{STATUS}[data-state='none']", timeout=FEW_SECONDS)


def test_keyboard_and_labels(lab: Lab, browser_page: tuple[Any, Capture]) -> None:
    page, _ = browser_page
    _open_lab(lab, page)
    panel = page.locator(PANEL)
    _command_shows(page, "BYOK: Open Keys, Usage and Budgets", panel)
    # Every control in every tab has an accessible name.
    for name in ("keys", "usage", "budgets", "local", "batches"):
        panel.locator(f"[data-tab='{name}']").click()
        panel.locator(f"[data-tabpanel='{name}']").wait_for(state="visible", timeout=WAIT)
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll(
              '#jupyter-byok-panel button, #jupyter-byok-panel input, #jupyter-byok-panel select,'
              + ' [data-testid=byok-status]')]
            .filter(el => {
              const label = el.getAttribute('aria-label')
                || (el.labels && [...el.labels].map(l => l.textContent).join(' '))
                || el.textContent;
              return !label || !label.trim();
            })
            .map(el => el.outerHTML.slice(0, 120))"""
    )
    assert unnamed == []
    # Tabs: arrow keys move between them (WAI-ARIA tabs pattern).
    keys_tab = panel.locator("[data-tab='keys']")
    keys_tab.click()
    keys_tab.focus()
    page.keyboard.press("ArrowRight")
    assert panel.locator("[data-tab='usage']").get_attribute("aria-selected") == "true"
    assert page.evaluate("() => document.activeElement.dataset.tab") == "usage"
    page.keyboard.press("End")
    assert panel.locator("[data-tab='batches']").get_attribute("aria-selected") == "true"
    page.keyboard.press("ArrowLeft")
    assert panel.locator("[data-tab='local']").get_attribute("aria-selected") == "true"
    page.keyboard.press("Home")
    assert panel.locator("[data-tabpanel='keys']").is_visible()
    # The status-bar item is a focusable button: Enter opens the dashboard.
    status = page.locator(STATUS)
    assert status.get_attribute("role") == "button"
    assert status.get_attribute("tabindex") == "0"
    status.focus()
    page.keyboard.press("Enter")
    panel.locator("[data-tabpanel='usage']").wait_for(state="visible", timeout=WAIT)


def test_refused_key_and_errors_are_shown(lab: Lab, browser_page: tuple[Any, Capture]) -> None:
    page, _ = browser_page
    _open_lab(lab, page)
    panel = page.locator(PANEL)
    _command_shows(page, "BYOK: Add an API Key", panel)
    page.wait_for_selector(f"{PANEL} .jp-byok-provider[data-provider='openai']", timeout=WAIT)
    # An empty key is refused by the form itself; a blank one with JupyterLab's error dialog.
    secret = panel.get_by_label("API key", exact=True)
    assert secret.get_attribute("required") is not None
    secret.fill("   ")
    panel.get_by_role("button", name="Save key").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(state="visible", timeout=WAIT)
    assert "No key entered" in dialog.inner_text()
    page.keyboard.press("Escape")
    dialog.wait_for(state="detached", timeout=WAIT)
    # A key the provider refuses: verify says so, with the provider's answer.
    panel.get_by_label("Provider", exact=True).select_option("openai")
    panel.get_by_label("Key name", exact=True).fill("wrong")
    panel.get_by_label("API key", exact=True).fill("sk-not-the-right-one-0000")
    panel.get_by_role("button", name="Save key").click()
    key = panel.locator(".jp-byok-key", has_text="wrong")
    key.wait_for(state="visible", timeout=WAIT)
    assert key.locator(".jp-byok-masked").inner_text() == "••••0000"
    key.get_by_role("button", name=re.compile("^Verify")).click()
    result = key.locator(".jp-byok-verify")
    result.wait_for(state="visible", timeout=WAIT)
    assert result.get_attribute("data-ok") == "false"
    assert result.inner_text().startswith("✗ Refused")
    assert len(result.inner_text()) > len("✗ Refused in 0.00 s")
    assert "Last verified: never" in key.inner_text()
    # Cancelling the delete dialog keeps the key.
    key.get_by_role("button", name=re.compile("^Delete")).click()
    dialog.wait_for(state="visible", timeout=WAIT)
    dialog.get_by_role("button", name="Cancel").click()
    dialog.wait_for(state="detached", timeout=WAIT)
    assert [k["name"] for k in lab.api("GET", "/byok/keys").json()["keys"]] == ["wrong"]
    key_id = lab.api("GET", "/byok/keys").json()["keys"][0]["id"]
    assert lab.api("DELETE", f"/byok/keys/{key_id}").status_code == 204
