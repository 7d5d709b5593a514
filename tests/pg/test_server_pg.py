"""The Jupyter server with a shared ledger: calls recorded in PostgreSQL (never a key),
``/byok/status`` showing the backend, spooled rows and the last error through an outage,
and ``/byok/usage?scope=`` guarded by the ``jupyter_byok:team`` permission."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest

from jupyter_byok.testing import FakeProviders
from jupyter_byok.testing.postgres import PgCluster

CANARY = "sk-proj-PGCANARY" + "k" * 40 + "T3BlbkFJ" + "v" * 20


@pytest.fixture
def jp_server_config(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The shared ledger set in the server's config (``c.JupyterByok``), not the environment."""
    monkeypatch.delenv("JUPYTER_BYOK_LEDGER_URL")
    monkeypatch.setenv("JUPYTER_BYOK_TEAM", "")  # set by the server: undone after the test
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_byok": True}, "allow_root": True},
        "JupyterByok": {"ledger_url": pg_url, "team": "red"},
    }


async def call(jp_fetch: Any, *path: str, **kwargs: Any) -> tuple[int, Any]:
    kwargs.setdefault("raise_error", False)
    response = await jp_fetch("byok", *path, **kwargs)
    body = response.body.decode() if response.body else ""
    assert CANARY not in body
    return response.code, json.loads(body) if body.startswith("{") else body


async def complete(jp_fetch: Any, text: str) -> tuple[int, Any]:
    body = {
        "model": "openai:gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "origin": {"notebook": "/work/team.ipynb"},
    }
    return await call(jp_fetch, "complete", method="POST", body=json.dumps(body))


async def status_until(jp_fetch: Any, *, reachable: bool, timeout: float = 20) -> Any:
    """The ledger's part of ``GET /byok/status`` once it says ``reachable`` (a status is
    served from a snapshot for up to 2 s, and the database is re-checked every second)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        code, status = await call(jp_fetch, "status")
        assert code == 200
        if status["ledger"]["reachable"] is reachable:
            return status["ledger"]
        assert asyncio.get_running_loop().time() < deadline, status["ledger"]
        await asyncio.sleep(0.25)


def everything_in(url: str) -> str:
    """Every value of every table of the database, as text."""
    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        ]
        for table in tables:
            rows = conn.execute(f'SELECT row_to_json(t)::text FROM "{table}" t').fetchall()  # type: ignore[arg-type]
            out.extend(r[0] for r in rows)
    return "\n".join(out)


async def test_the_server_records_into_postgresql_and_rides_out_an_outage(
    pg_cluster: PgCluster,
    pg_url: str,
    fake_providers: FakeProviders,
    jp_fetch: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JUPYTERHUB_USER", "ana")
    code, _ = await call(
        jp_fetch, "keys", method="POST", body=json.dumps({"provider": "openai", "key": CANARY})
    )
    assert code == 201
    for i in range(3):
        code, data = await complete(jp_fetch, f"hello {i}")
        assert code == 200, data
    code, status = await call(jp_fetch, "status")
    assert status["ledger"]["backend"] == "postgresql" and status["ledger"]["reachable"]
    assert status["ledger"]["spooled"] == 0 and status["ledger"]["url"] == pg_url

    pg_cluster.stop("immediate")
    try:
        for i in range(2):
            code, data = await complete(jp_fetch, f"during the outage {i}")
            assert code == 200, data  # calls keep working
        led = await status_until(jp_fetch, reachable=False)
        assert led["reachable"] is False and led["spooled"] == 2
        assert led["spooled_by_this_process"] == 2 and led["last_error"]
    finally:
        pg_cluster.pg_ctl_start()
    led = await status_until(jp_fetch, reachable=True)
    assert led["spooled"] == 0 and led["last_error"]  # replayed; the error is remembered

    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute("SELECT user_name, team, notebook, status FROM attempts").fetchall()
    assert rows == [("ana", "red", "/work/team.ipynb", "ok")] * 5
    dump = everything_in(pg_url)
    assert "ana" in dump and CANARY not in dump and CANARY[-20:] not in dump


def deny_only(resource: str) -> Any:
    from jupyter_server.auth.authorizer import Authorizer

    class DenyOne(Authorizer):
        def is_authorized(self, handler: Any, user: Any, action: str, res: str) -> bool:
            return res != resource

    return DenyOne


async def test_other_users_usage_needs_the_team_permission(
    pg_url: str,
    fake_providers: FakeProviders,
    jp_fetch: Any,
    jp_serverapp: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from jupyter_byok.ledger import LedgerRow
    from jupyter_byok.ledger.shared import SharedLedger

    monkeypatch.setenv("JUPYTERHUB_USER", "ana")
    led = SharedLedger(pg_url)
    from decimal import Decimal

    led.record_many(
        [
            LedgerRow("openai", "gpt-4o", "ok", cost_usd=Decimal("1"), user_name="ana", team="red"),
            LedgerRow("openai", "gpt-4o", "ok", cost_usd=Decimal("2"), user_name="ben", team="red"),
            LedgerRow(
                "openai", "gpt-4o", "ok", cost_usd=Decimal("4"), user_name="cai", team="blue"
            ),
        ]
    )
    led.flush()  # as if another server's rows: in the database (it sends them shortly)
    totals = {}
    for scope in ("me", "team", "all"):
        code, data = await call(jp_fetch, "usage", params={"scope": scope, "by": "user_name"})
        assert code == 200, data
        totals[scope] = data["total_usd"]
    assert totals == {"me": "1", "team": "3", "all": "7"}
    settings = jp_serverapp.web_app.settings
    settings["authorizer"] = deny_only("jupyter_byok:team")(parent=jp_serverapp)
    try:
        code, data = await call(jp_fetch, "usage", params={"scope": "team"})
        assert code == 403 and "jupyter_byok:team" in data["message"]
        code, data = await call(jp_fetch, "usage", params={"scope": "me"})
        assert code == 200 and data["total_usd"] == "1"
    finally:
        settings["authorizer"] = jp_serverapp.authorizer
    code, data = await call(jp_fetch, "usage", params={"scope": "nobody"})
    assert code == 400 and "scope" in data["message"]
