"""``/byok/batches`` on a real in-process Jupyter server: what a kernel sends when it has a
server, so that batch uploads use the server's keys (which never reach the kernel)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

import jupyter_byok
import jupyter_byok.errors
from jupyter_byok import budgets
from jupyter_byok.batch._service import Submission
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Message

CANARY = "sk-proj-BATCHSERVER" + "q" * 40 + "T3BlbkFJ" + "r" * 20


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_byok": True}, "allow_root": True}}


async def call(jp_fetch: Any, *path: str, **kwargs: Any) -> tuple[int, Any]:
    kwargs.setdefault("raise_error", False)
    if "body" in kwargs and not isinstance(kwargs["body"], str):
        kwargs["body"] = json.dumps(kwargs["body"])
    response = await jp_fetch("byok", *path, **kwargs)
    body = response.body.decode()
    assert CANARY not in body and all(CANARY not in v for _, v in response.headers.get_all())
    return response.code, json.loads(body)


def submission(n: int, fingerprint: str = "fp-1") -> dict[str, Any]:
    items = [(f"r{i}", i, [Message("user", f"row {i} words")]) for i in range(n)]
    sub = Submission(fingerprint, "openai:gpt-4o-mini", {"max_tokens": 16}, items, "p", "summary")
    return sub.to_dict()


async def test_submit_poll_list_cancel_and_budget_through_the_server(
    fake_providers: FakeProviders, jp_fetch: Any
) -> None:
    code, _ = await call(
        jp_fetch, "keys", method="POST", body={"provider": "openai", "key": CANARY}
    )
    assert code == 201
    code, data = await call(jp_fetch, "batches", method="POST", body=submission(3))
    assert code == 200, data
    (batch,) = data["batches"]
    assert batch["total"] == 3 and batch["provider_batch_id"].startswith("batch_")
    code, batch = await call(jp_fetch, "batches", batch["id"], "refresh", method="POST", body="")
    assert code == 200 and batch["fetched"] == 1 and batch["done"] == 3
    code, data = await call(jp_fetch, "batches")
    assert [b["id"] for b in data["batches"]] == [batch["id"]]
    rows = jupyter_byok.usage()
    assert list(rows["feature"]) == ["batch"] * 3 and (rows["status"] == "ok").all()
    for r in fake_providers.requests:  # the key went in the auth header only
        assert r.auth == CANARY and CANARY not in str(r.body)

    fake_providers.batches.hold = True
    code, data = await call(jp_fetch, "batches", method="POST", body=submission(2, "fp-2"))
    held = data["batches"][0]["id"]
    code, record = await call(jp_fetch, "batches", held, "cancel", method="POST", body="")
    assert code == 200 and record["state"] == "cancelling"

    budgets.set_budget("day", "0.00001")
    group = {"model": "openai:gpt-4o-mini", "cost_usd": "1.5", "item_usd": "0.1", "rows": 10}
    code, data = await call(jp_fetch, "batches", "budget", method="POST", body={"groups": [group]})
    assert code == 402 and data["error"] == "BudgetExceededError"
    code, data = await call(jp_fetch, "batches", "nope", "refresh", method="POST", body="")
    assert code == 400 and "no batch" in data["message"]
    code, data = await call(jp_fetch, "batches", method="POST", body={"items": 3})
    assert code == 400


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ("batches",)),
        ("POST", ("batches",)),
        ("POST", ("batches", "budget")),
        ("GET", ("batches", "abc")),
        ("POST", ("batches", "abc", "refresh")),
        ("POST", ("batches", "abc", "cancel")),
    ],
)
async def test_batch_routes_require_the_token(
    jp_fetch: Any, method: str, path: tuple[str, ...]
) -> None:
    response = await jp_fetch(
        "byok",
        *path,
        method=method,
        body="{}" if method == "POST" else None,
        headers={"Authorization": ""},
        raise_error=False,
        follow_redirects=False,
    )
    assert response.code in (302, 403)


def test_the_panels_batch_interface_mirrors_the_record() -> None:
    import dataclasses
    import re
    from pathlib import Path

    from jupyter_byok.batch._store import BatchRecord

    api = (Path(__file__).resolve().parents[2] / "labextension" / "src" / "api.ts").read_text()
    body = re.search(r"^export interface IBatch \{\n(.*?)^\}", api, re.M | re.S)
    assert body is not None
    fields = re.findall(r"^  (\w+)\??:", body.group(1), re.M)
    assert fields == [f.name for f in dataclasses.fields(BatchRecord)]


async def test_a_kernel_reaches_the_service_through_the_server(
    fake_providers: FakeProviders, jp_fetch: Any, jp_serverapp: Any
) -> None:
    """The kernel side of the server route: BatchTransport over Client's REST transport."""
    from jupyter_byok.batch._service import BudgetGroup
    from jupyter_byok.batch._transport import BatchTransport
    from jupyter_byok.client import Client, ServerInfo

    code, _ = await call(
        jp_fetch, "keys", method="POST", body={"provider": "openai", "key": CANARY}
    )
    assert code == 201
    client = Client()
    client._server = ServerInfo(jp_serverapp.connection_url, jp_serverapp.identity_provider.token)
    client._looked = True
    transport = BatchTransport(client)
    assert transport.remote
    assert await transport.check_budget([BudgetGroup("openai:gpt-4o-mini", None, None, 1)]) == []
    (record,) = await transport.submit(Submission.from_dict(submission(2)))
    record = await transport.refresh(record.id)
    assert record.fetched and record.done == 2
    assert [r.id for r in await transport.list()] == [record.id]
    assert (await transport.cancel(record.id)).state == "completed"
    budgets.set_budget("day", "0.00001")
    with pytest.raises(jupyter_byok.errors.BudgetExceededError, match="before anything"):
        await transport.check_budget([BudgetGroup("openai:gpt-4o-mini", Decimal(1), None, 5)])


async def test_a_submission_with_bad_parameters_is_refused_unsent(
    fake_providers: FakeProviders, jp_fetch: Any
) -> None:
    await call(jp_fetch, "keys", method="POST", body={"provider": "openai", "key": CANARY})
    body = submission(1)
    body["params"] = {"max_tokens": "lots"}
    code, data = await call(jp_fetch, "batches", method="POST", body=json.dumps(body))
    assert code == 400 and "max_tokens" in data["message"]
    body["params"] = {"bad name!": 1}
    code, data = await call(jp_fetch, "batches", method="POST", body=body)
    assert code == 400
    assert fake_providers.requests == []
