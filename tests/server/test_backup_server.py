"""The panel's backup and restore routes on a real in-process Jupyter server."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from jupyter_byok.backup._format import MAGIC
from jupyter_byok.config import set_home
from jupyter_byok.keys import Keystore
from jupyter_byok.ledger import Ledger, LedgerRow, ledger_path

CANARY = "sk-proj-BACKUPSERVERCANARY" + "k" * 40 + "T3BlbkFJ" + "v" * 20
PASS = "walnut harbour pencil meteor 17"


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_byok": True}, "allow_root": True}}


async def post(jp_fetch: Any, path: str, body: bytes | dict[str, Any]) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await jp_fetch("byok", *path.split("/"), method="POST", body=raw, raise_error=False)


async def test_backup_download_then_upload_and_restore(
    jp_fetch: Any,
    byok_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    Keystore().set("openai", CANARY)
    Ledger(ledger_path()).record(LedgerRow("openai", "gpt-4o", "ok"))

    missing = await post(jp_fetch, "backup", {})
    assert missing.code == 400 and b"passphrase" in missing.body
    answer = await post(jp_fetch, "backup", {"passphrase": PASS})
    assert answer.code == 200, answer.body
    data = answer.body
    assert data.startswith(MAGIC) and CANARY.encode() not in data
    assert answer.headers["Content-Type"] == "application/octet-stream"
    assert "attachment" in answer.headers["Content-Disposition"]
    assert "keys=1; ledger_rows=1" in answer.headers["X-Byok-Backup"]
    assert not [p for p in byok_home.iterdir() if p.name.startswith(".backup")]
    weak = await post(jp_fetch, "backup", {"passphrase": "abc"})
    assert weak.code == 200 and "weak" in weak.headers["X-Byok-Warning"]

    home_b = tmp_path / "server-home-b"
    monkeypatch.setenv("JUPYTER_BYOK_HOME", str(home_b))
    set_home(home_b)
    up = await post(jp_fetch, "restore/upload", data)
    assert up.code == 201, up.body
    upload = json.loads(up.body)
    assert upload["bytes"] == len(data)
    stored = home_b / "uploads" / f"{upload['upload']}.byokbak"
    assert stored.read_bytes() == data and stored.stat().st_mode & 0o077 == 0

    wrong = await post(jp_fetch, "restore", {"upload": upload["upload"], "passphrase": "nope"})
    assert wrong.code == 400 and b"wrong passphrase" in wrong.body
    assert str(stored).encode() not in wrong.body
    assert stored.exists()  # kept for another try
    assert not Keystore().list()

    done = await post(jp_fetch, "restore", {"upload": upload["upload"], "passphrase": PASS})
    assert done.code == 200, done.body
    report = json.loads(done.body)
    assert report["keys"]["added"] == 1 and report["ledger"] == {"added": 1, "present": 0}
    assert Keystore().get("openai").reveal() == CANARY
    assert not stored.exists()
    again = await post(jp_fetch, "restore", {"upload": upload["upload"], "passphrase": PASS})
    assert again.code == 404

    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    up = json.loads((await post(jp_fetch, "restore/upload", bytes(bad))).body)
    damaged = await post(jp_fetch, "restore", {"upload": up["upload"], "passphrase": PASS})
    assert damaged.code == 400 and b"damaged" in damaged.body
    assert CANARY not in caplog.text


async def test_backup_routes_need_their_own_permission(
    jp_fetch: Any, jp_serverapp: Any, byok_home: Path
) -> None:
    from jupyter_server.auth.authorizer import Authorizer

    class DenyBackup(Authorizer):
        def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
            return resource != "jupyter_byok:backup"

    jp_serverapp.web_app.settings["authorizer"] = DenyBackup(parent=jp_serverapp)
    try:
        for path, body in (
            ("backup", {"passphrase": PASS}),
            ("restore", {"upload": "0" * 32, "passphrase": PASS}),
            ("restore/upload", b"x" * 1000),
        ):
            answer = await post(jp_fetch, path, body)
            assert answer.code == 403, (path, answer.code)
        status = await jp_fetch("byok", "status", raise_error=False)
        assert status.code == 200  # the other routes are not affected
    finally:
        jp_serverapp.web_app.settings["authorizer"] = jp_serverapp.authorizer
    uploads = byok_home / "uploads"
    assert not uploads.exists() or not list(uploads.iterdir()), "a refused upload was stored"
