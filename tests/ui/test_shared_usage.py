"""The Usage & Cost view on a shared ledger (PostgreSQL): a scope, me, my team or everyone.

A second ``jupyter lab`` runs as user ``ana`` of team ``red`` against a throwaway PostgreSQL
cluster holding rows of three users in two teams; the view's totals follow the scope. On a
local ledger (the session's lab) the scope is not offered: it holds only this user's rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from jupyter_byok.ledger import Ledger, LedgerRow
from jupyter_byok.ledger.shared import SharedLedger
from jupyter_byok.testing.postgres import PgCluster

from .conftest import Lab, run_lab
from .test_panel import PANEL, WAIT, _command_shows, _open_lab

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore:coroutine 'ServerApp._cleanup' was never awaited"),
]

#: (user, team, dollars spent today)
PEOPLE = [("ana", "red", "1"), ("ben", "red", "2"), ("cai", "blue", "4")]


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory, output_dir: Path) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("shared-lab")
    (base / "lab").mkdir()
    with PgCluster() as pg:  # in a folder its unprivileged user may enter
        url = pg.create_database("panel")
        led = SharedLedger(url, spool=Ledger(base / "seed-spool.sqlite3"), scope="all")
        assert led.check_writable() is None
        led.record_many(
            [
                LedgerRow("openai", "gpt-4o", "ok", cost_usd=Decimal(usd), user_name=u, team=t)
                for u, t, usd in PEOPLE
            ]
        )
        led.close()  # sends the rows
        env = {"JUPYTER_BYOK_LEDGER_URL": url, "JUPYTERHUB_USER": "ana", "JUPYTER_BYOK_TEAM": "red"}
        with run_lab(base / "lab", output_dir / "jupyter-lab-shared.log", env) as running:
            yield running


def _usage_view(lab: Lab, page: Any) -> Any:
    _open_lab(lab, page)
    usage = page.locator(PANEL).locator("[data-tabpanel='usage']")
    _command_shows(page, "BYOK: Open Usage & Cost", usage)
    usage.locator("[data-testid=byok-total-cost]").wait_for(state="visible", timeout=WAIT)
    return usage


def _total_becomes(usage: Any, text: str) -> None:
    from playwright.sync_api import expect

    # the totals are drawn anew on each load: a locator, not an element handle
    expect(usage.locator("[data-testid=byok-total-cost]")).to_have_text(text, timeout=WAIT)


def test_the_usage_view_offers_a_scope_on_a_shared_ledger(
    shared_lab: Lab, lab: Lab, browser: Any, output_dir: Path
) -> None:
    page = browser.new_page()
    try:
        usage = _usage_view(shared_lab, page)
        scope = usage.get_by_label("Whose usage")
        scope.wait_for(state="visible", timeout=WAIT)
        assert scope.input_value() == "me"
        _total_becomes(usage, "$1.00")  # ana's own
        for value, total in (("team", "$3.00"), ("all", "$7.00"), ("me", "$1.00")):
            scope.select_option(value)
            _total_becomes(usage, total)
        scope.select_option("team")
        _total_becomes(usage, "$3.00")
        page.screenshot(path=str(output_dir / "panel-usage-team-scope.png"))

        # a local ledger holds only this user's rows: no scope to choose
        usage = _usage_view(lab, page)
        assert usage.locator("[data-testid=byok-scope]").is_hidden()
    finally:
        page.close()
