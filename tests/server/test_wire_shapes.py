"""The REST wire: every value round-trips through its ``to_dict``/``from_dict``, every reply
of a real server matches its TypedDict (server/_replies.py), and the TypeScript interfaces
of the panel (labextension/src) have the same field names, required the same way."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from jupyter_byok.errors import InvalidInputError
from jupyter_byok.server import _replies, _wire
from jupyter_byok.server._replies import from_dict
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Completion, Message, Request, SearchResult, Usage

SRC = Path(__file__).resolve().parents[2] / "labextension" / "src"


def json_trip(data: Any) -> Any:
    return json.loads(json.dumps(data))


# ------------------------------------------------------------------ round trips
USAGE = Usage(
    input_tokens=120,
    cached_input_tokens=20,
    cache_write_tokens=3,
    cache_write_1h_tokens=4,
    output_tokens=50,
    reasoning_tokens=10,
    search_credits=1.5,
    provider_cost_usd=Decimal("0.000123"),
)

VALUES: list[Any] = [
    Message("user", "hello"),
    Message("system", "be brief"),
    Usage(),
    USAGE,
    Request(model="openai:gpt-4o-mini", messages=[Message("user", "hi")]),
    Request(
        model="anthropic:claude-haiku-4-5@work",
        messages=[Message("system", "s"), Message("user", "u"), Message("assistant", "a")],
        params={"temperature": 0.2, "max_tokens": 300, "stop": ["\n"]},
        stream=True,
        feature="magic",
        origin={"notebook": "/work/nb.ipynb", "cell_id": "c1"},
        cache=True,
    ),
    Completion(text="", model="m", provider="p"),
    Completion(
        text="Echo: hi",
        model="gpt-4o-mini",
        provider="openai",
        usage=USAGE,
        cost_usd=Decimal("0.0000345"),
        cost_source="price_table",
        finish_reason="stop",
        request_id="r1",
        response_id="resp-1",
        latency_s=0.25,
        ttft_s=0.1,
        cached=True,
        ledger_id="l1",
        warnings=["budget day: 85% used"],
    ),
    SearchResult(query="q"),
    SearchResult(
        query="jupyter byok",
        results=[{"title": "T", "url": "https://example.com", "score": 0.9}],
        answer="an answer",
        usage=Usage(search_credits=2.0),
        cost_usd=Decimal("0.016"),
        cost_source="price_table",
        request_id="r2",
        response_id="s-1",
        latency_s=0.5,
        cached=True,
        warnings=["ledger: kept pending"],
    ),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_value_round_trips(value: Any) -> None:
    data = value.to_dict()
    assert type(value).from_dict(data) == value
    assert type(value).from_dict(json_trip(data)) == value  # through JSON, as on the wire


def test_key_info_round_trips() -> None:
    from jupyter_byok.keys import KeyInfo

    info = KeyInfo(
        provider="gemini",
        name="work",
        kind="api_key",
        last4="abcd",
        fingerprint="f" * 16,
        created="2026-01-01T00:00:00+00:00",
        updated="2026-01-02T00:00:00+00:00",
        last_verified=None,
        tier="free",
        base_url=None,
        id="k1",
    )
    data = json_trip(info.to_dict())
    assert from_dict(_replies.KeyInfoDict, data) == data
    assert KeyInfo.from_dict(data) == info


def test_reply_values_match_their_shapes() -> None:
    """What to_dict builds is exactly what the reply shape declares, nothing more."""
    for value in VALUES:
        shape = {
            Usage: _replies.UsageDict,
            Completion: _replies.CompletionDict,
            SearchResult: _replies.SearchReply,
        }.get(type(value))
        if shape is not None:
            data = json_trip(value.to_dict())
            assert from_dict(shape, data) == data
        if isinstance(value, Request):  # what a kernel posts is a valid CompleteBody
            data = json_trip(value.to_dict())
            assert _wire.COMPLETE(data, "the body") == data


def test_from_dict_names_what_is_wrong() -> None:
    good = json_trip(VALUES[-4].to_dict())
    from_dict(_replies.CompletionDict, good)
    with pytest.raises(InvalidInputError, match="text"):
        from_dict(_replies.CompletionDict, {k: v for k, v in good.items() if k != "text"})
    with pytest.raises(InvalidInputError, match="latency_s"):
        from_dict(_replies.CompletionDict, {**good, "latency_s": "slow"})
    with pytest.raises(InvalidInputError, match="surprise"):
        from_dict(_replies.CompletionDict, {**good, "surprise": 1})


def test_older_flat_search_reply_is_still_read() -> None:
    flat: dict[str, Any] = {
        "query": "q",
        "results": [],
        "answer": None,
        "search_credits": 2,
        "cost_usd": "0.016",
    }
    result = SearchResult.from_dict(flat)
    assert result.usage.search_credits == 2.0 and result.cost_usd == Decimal("0.016")


# ------------------------------------------------------------- a real server
@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_byok": True}, "allow_root": True}}


async def _get(jp_fetch: Any, *path: str, **kwargs: Any) -> Any:
    response = await jp_fetch("byok", *path, **kwargs)
    assert response.code in (200, 201), response.body
    return json.loads(response.body)


async def test_every_reply_of_a_server_matches_its_shape(
    jp_fetch: Any, fake_providers: FakeProviders
) -> None:
    post = {"method": "POST"}
    key = await _get(
        jp_fetch, "keys", **post, body=json.dumps({"provider": "openai", "key": "sk-" + "a" * 40})
    )
    from_dict(_replies.KeyInfoDict, key)
    verified = await _get(jp_fetch, "keys", key["id"], "verify", **post, body="{}")
    assert from_dict(_replies.VerifyReply, verified) == verified and verified["ok"] is True
    budgets = {
        "budgets": [{"period": "day", "limit_usd": "5"}, {"period": "call", "limit_usd": "1"}]
    }
    put = await _get(jp_fetch, "budgets", method="PUT", body=json.dumps(budgets))
    assert from_dict(_replies.BudgetsReply, put) == put and len(put["budgets"]) == 2

    body = {"model": "openai:gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    done = await _get(jp_fetch, "complete", **post, body=json.dumps(body))
    assert from_dict(_replies.CompletionDict, done) == done
    assert Completion.from_dict(done).to_dict() == done
    response = await jp_fetch("byok", "complete", **post, body=json.dumps({**body, "stream": True}))
    events = [b.split("\n", 1) for b in response.body.decode().split("\n\n") if b.strip()]
    for event, data in events:
        shapes: dict[str, type] = {
            "event: delta": _replies.DeltaEvent,
            "event: done": _replies.CompletionDict,
        }
        from_dict(shapes[event], json.loads(data.removeprefix("data: ")))

    replies: list[tuple[type, tuple[str, ...], dict[str, Any]]] = [
        (_replies.StatusReply, ("status",), {}),
        (_replies.KeysReply, ("keys",), {}),
        (_replies.BudgetsReply, ("budgets",), {}),
        (_replies.ConfigReply, ("config",), {}),
        (_replies.ModelsReply, ("models",), {}),
        (_replies.PriceTableReply, ("prices",), {}),
        (_replies.PriceReply, ("prices",), {"params": {"model": "openai:gpt-4o-mini"}}),
        (_replies.UsageReply, ("usage",), {"params": {"since": "today", "by": "provider,model"}}),
        (_replies.UsageReply, ("usage",), {"params": {"since": "7d", "bucket": "day"}}),
        (_replies.LocalOverview, ("local", "models"), {}),
        (_replies.PullsReply, ("local", "pulls"), {}),
    ]
    for shape, path, kwargs in replies:
        data = await _get(jp_fetch, *path, **kwargs)
        assert from_dict(shape, data) == data, path
    status = await _get(jp_fetch, "status")
    assert [b["state"] for b in status["budgets"]] == ["ok", "ok"]
    usage = await _get(jp_fetch, "usage", params={"since": "today"})
    assert len(usage["recent"]) == 2 and usage["groups"][0]["calls"] == 2

    response = await jp_fetch("byok", "keys", "0123abcd", method="DELETE", raise_error=False)
    error = json.loads(response.body)
    assert response.code == 404 and from_dict(_replies.ErrorBody, error) == error


# ---------------------------------------------------- the TypeScript interfaces
#: Python shape -> the TypeScript interface that mirrors it (file in labextension/src)
TS_MIRRORS: list[tuple[type, str, str]] = [
    (_replies.StatusReply, "IStatus", "api.ts"),
    (_replies.KeystoreStatus, "IKeystoreStatus", "api.ts"),
    (_replies.LedgerHealth, "ILedgerHealth", "api.ts"),
    (_replies.BudgetStatus, "IBudgetStatus", "api.ts"),
    (_replies.BudgetsReply, "IBudgets", "api.ts"),
    (_replies.KeyInfoDict, "IKeyInfo", "api.ts"),
    (_replies.ProviderKeys, "IProviderKeys", "api.ts"),
    (_replies.KeysReply, "IKeysList", "api.ts"),
    (_replies.VerifyReply, "IVerifyResult", "api.ts"),
    (_replies.UsageGroup, "IUsageGroup", "api.ts"),
    (_replies.UsageRow, "IUsageRow", "api.ts"),
    (_replies.UsageReply, "IUsage", "api.ts"),
    (_replies.ModelsReply, "IModels", "api.ts"),
    (_replies.EndpointDict, "IEndpoint", "api.ts"),
    (_replies.ConfigReply, "IConfig", "api.ts"),
    (_replies.LocalModel, "ILocalModel", "api.ts"),
    (_replies.PullJob, "IPullJob", "api.ts"),
    (_replies.LocalOverview, "ILocalOverview", "api.ts"),
    (_replies.PullsReply, "IPulls", "api.ts"),
    (_replies.LocalTest, "ILocalTest", "api.ts"),
    (_replies.UploadReply, "IUploaded", "backup.ts"),
    (_replies.RestoreReport, "IRestoreReport", "backup.ts"),
    (_replies.MergeCounts, "IMergeCounts", "backup.ts"),
    (_wire.AddKeyBody, "IAddKey", "api.ts"),
    (_wire.PullBody, "IPullRequest", "api.ts"),
]

_INTERFACE = re.compile(r"^export interface (\w+)(?: extends ([\w, ]+))? \{\n(.*?)^\}", re.M | re.S)
_FIELD = re.compile(r"^  (\w+)(\??):", re.M)  # top-level members only (two spaces in)


def ts_interfaces(text: str) -> dict[str, dict[str, bool]]:
    """Every ``export interface`` of a .ts file: field name -> required. Index signatures
    (``[extra: string]: unknown``) and nested members are not fields; ``extends`` adds the
    parent's fields, a field redeclared in the child takes the child's optionality."""
    found: dict[str, tuple[list[str], dict[str, bool]]] = {}
    for name, parents, body in _INTERFACE.findall(text):
        fields = {f: not q for f, q in _FIELD.findall(body)}
        found[name] = ([p.strip() for p in parents.split(",") if p.strip()], fields)

    def resolve(name: str) -> dict[str, bool]:
        parents, own = found[name]
        out: dict[str, bool] = {}
        for parent in parents:
            out.update(resolve(parent))
        out.update(own)
        return out

    return {name: resolve(name) for name in found}


def py_fields(shape: type) -> dict[str, bool]:
    """A TypedDict's fields (its bases' included): name -> required."""
    required = shape.__required_keys__  # type: ignore[attr-defined]
    return {name: name in required for name in shape.__annotations__}


def test_ts_reader_reads_fields_optionality_and_extends() -> None:
    text = (
        "export interface IA {\n  a: string;\n  b?: number;\n  [extra: string]: unknown;\n}\n"
        "export interface IB extends IA {\n  b: number;\n  c: { d: string; e?: number };\n"
        "  f: {\n    g: string;\n  };\n}\n"
    )
    assert ts_interfaces(text) == {
        "IA": {"a": True, "b": False},
        "IB": {"a": True, "b": True, "c": True, "f": True},
    }


@pytest.mark.parametrize(
    ("shape", "interface", "file"), TS_MIRRORS, ids=[i for _, i, _ in TS_MIRRORS]
)
def test_typescript_interface_mirrors_python_shape(shape: type, interface: str, file: str) -> None:
    interfaces = ts_interfaces((SRC / file).read_text())
    assert interface in interfaces, f"{interface} is not exported from {file}"
    ts, py = interfaces[interface], py_fields(shape)
    assert sorted(ts) == sorted(py), (
        f"{shape.__name__} vs {interface}: only in Python {sorted(set(py) - set(ts))}, "
        f"only in TypeScript {sorted(set(ts) - set(py))}"
    )
    differ = sorted(f for f in py if py[f] != ts[f])
    assert not differ, f"{shape.__name__} vs {interface}: required on one side only: {differ}"


def test_every_reply_shape_is_mirrored_or_kernel_only() -> None:
    """A new reply shape is either mirrored in TypeScript or read only by kernels."""
    kernel_only = {
        "CompletionDict",
        "UsageDict",
        "SearchResultDict",
        "DeltaEvent",
        "ErrorBody",  # read by errors.ts (errorFromResponse), field by field
        "PriceReply",
        "PriceTableReply",
        "LocalMessage",
    }
    mirrored = {shape.__name__ for shape, _, _ in TS_MIRRORS}
    names = {shape.__name__ for shape in _replies.REPLIES.values()}
    assert names - mirrored - kernel_only == set()
