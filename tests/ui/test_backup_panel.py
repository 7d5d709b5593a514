"""Backup and restore through the BYOK panel, in a real JupyterLab and Chromium.

"Back up…" downloads the sealed file; the key and budget are then removed; "Restore…"
uploads the file, refuses a wrong passphrase, and with the right one brings both back.
The key never reaches the page: not in the DOM, storage, responses, nor the file itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from jupyter_byok.backup._format import MAGIC

from .conftest import CANARY, Capture, Lab
from .test_panel import PANEL, WAIT, _command_shows, _no_canary_in_page, _open_lab

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore:coroutine 'ServerApp._cleanup' was never awaited"),
]

PASS = "lantern walnut orbit cactus 93"
KEY_NAME = "backup-ui"


def _budgets(lab: Lab, budgets: list[dict[str, Any]]) -> None:
    answer = lab.api("PUT", "/byok/budgets", json={"budgets": budgets})
    assert answer.status_code == 200, answer.text


def _stored(lab: Lab) -> list[dict[str, Any]]:
    keys = lab.api("GET", "/byok/keys").json()
    return [k for p in keys["providers"] for k in p["stored"] if k["name"] == KEY_NAME]


def test_backup_and_restore_through_the_panel(
    lab: Lab, browser_page: tuple[Any, Capture], tmp_path: Path, output_dir: Path
) -> None:
    page, capture = browser_page
    added = lab.api(
        "POST", "/byok/keys", json={"provider": "openai", "key": CANARY, "name": KEY_NAME}
    )
    assert added.status_code == 201, added.text
    # (no call is made: the other UI tests share this server and expect no spend today)
    _budgets(lab, [{"period": "month", "scope": "total", "limit_usd": "123", "warn_at": "0.8"}])
    try:
        _open_lab(lab, page)
        panel = page.locator(PANEL)
        _command_shows(page, "BYOK: Add an API Key", panel)
        section = panel.locator("section.jp-byok-backup")
        status = section.locator("[data-testid=byok-backup-status]")

        # Back up: the passphrase twice (a mismatch is refused first), then the download.
        section.get_by_role("button", name="Back up…").click()
        section.get_by_label("Backup passphrase", exact=True).fill(PASS)
        section.get_by_label("Backup passphrase again", exact=True).fill(PASS + "x")
        section.get_by_role("button", name="Download backup").click()
        page.wait_for_function(
            "el => el.textContent.includes('differ')", arg=status.element_handle(), timeout=WAIT
        )
        section.get_by_label("Backup passphrase again", exact=True).fill(PASS)
        with page.expect_download(timeout=60_000) as download_info:
            section.get_by_role("button", name="Download backup").click()
        download = download_info.value
        assert re.fullmatch(r"byok-.+-\d{8}-\d{4}\.byokbak", download.suggested_filename)
        saved = tmp_path / download.suggested_filename
        download.save_as(str(saved))
        data = saved.read_bytes()
        assert data.startswith(MAGIC) and CANARY.encode() not in data
        page.wait_for_function(
            "el => el.textContent.includes('Backup downloaded')",
            arg=status.element_handle(),
            timeout=WAIT,
        )
        assert "keys=" in status.inner_text()
        assert section.get_by_label("Backup passphrase", exact=True).is_hidden()

        # As on a new machine: the key and the budget are gone.
        assert lab.api("DELETE", f"/byok/keys/{added.json()['id']}").status_code == 204
        _budgets(lab, [])
        assert not _stored(lab)

        # Restore: pick the file; a wrong passphrase is one line and changes nothing.
        with page.expect_file_chooser(timeout=WAIT) as chooser:
            section.get_by_role("button", name="Restore…").click()
        chooser.value.set_files(str(saved))
        form = section.get_by_role("form", name="Restore")
        form.wait_for(state="visible", timeout=WAIT)
        assert saved.name in form.inner_text()
        form.get_by_label("Passphrase of the backup").fill("not the passphrase")
        form.get_by_role("button", name="Restore backup").click()
        alert = section.locator("[data-testid=byok-backup-status][role=alert]")
        alert.wait_for(state="visible", timeout=60_000)
        assert "wrong passphrase" in alert.inner_text()
        assert not _stored(lab)
        assert lab.api("GET", "/byok/budgets").json()["budgets"] == []

        form.get_by_label("Passphrase of the backup").fill(PASS)
        form.get_by_role("button", name="Restore backup").click()
        page.wait_for_function(
            "el => el.textContent.includes('Restored')", arg=status.element_handle(), timeout=60_000
        )
        text = status.inner_text()
        assert "Keys: 1 added" in text, text
        assert "Budgets: 1 added" in text, text
        assert "Ledger rows: 0 added" in text, text
        panel.screenshot(path=str(output_dir / "panel-backup-restore.png"))

        # Back, and usable: the provider accepts the restored key.
        assert [k["base_url"] for k in _stored(lab)] == [None]
        assert lab.api("GET", "/byok/budgets").json()["budgets"][0]["limit_usd"] in ("123", 123)
        (restored,) = _stored(lab)
        verified = lab.api("POST", f"/byok/keys/{restored['id']}/verify")
        assert verified.status_code == 200 and verified.json()["ok"], verified.text
        assert lab.fake.requests_for("openai")[-1].auth == CANARY
        # the panel's key list shows it again (masked)
        openai = panel.locator(".jp-byok-provider[data-provider='openai']")
        openai.locator(".jp-byok-masked").first.wait_for(state="visible", timeout=WAIT)

        _no_canary_in_page(page)
        assert not capture.find(CANARY), capture.find(CANARY)
    finally:
        for key in _stored(lab):
            lab.api("DELETE", f"/byok/keys/{key['id']}")
        _budgets(lab, [])
