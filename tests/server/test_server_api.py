"""The REST API on a real in-process Jupyter server (pytest-jupyter), against the fake providers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from tornado.httpclient import HTTPResponse

from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Completion

CANARY = "sk-proj-SERVERCANARY" + "q" * 40 + "T3BlbkFJ" + "w" * 20


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_byok": True}, "allow_root": True}}


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Everything the server says: log lines and every response body and header."""
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    yield seen
    seen.extend(r.getMessage() for r in caplog.records)
    seen.extend(caplog.text.splitlines())
    assert not [s for s in seen if CANARY in s], "the canary key leaked"


def record(seen: list[str], response: HTTPResponse) -> Any:
    body = response.body.decode() if response.body else ""
    seen.append(body)
    seen.extend(f"{k}: {v}" for k, v in response.headers.get_all())
    return json.loads(body) if body and body.lstrip().startswith(("{", "[")) else body


async def call(jp_fetch: Any, seen: list[str], *path: str, **kwargs: Any) -> tuple[int, Any]:
    kwargs.setdefault("raise_error", False)
    response = await jp_fetch("byok", *path, **kwargs)
    return response.code, record(seen, response)


async def add_key(
    jp_fetch: Any, seen: list[str], provider: str = "openai", key: str = CANARY, **extra: Any
) -> dict[str, Any]:
    code, data = await call(
        jp_fetch,
        seen,
        "keys",
        method="POST",
        body=json.dumps({"provider": provider, "key": key, **extra}),
    )
    assert code == 201, data
    return dict(data)


async def test_status(jp_fetch: Any, captured: list[str]) -> None:
    code, data = await call(jp_fetch, captured, "status")
    assert code == 200
    assert data["keystore"]["tier"] in ("machine-file", "file")
    assert data["default_model"] == "local:smollm2"
    assert "version" in data


async def test_keys_lifecycle(
    jp_fetch: Any, captured: list[str], fake_providers: FakeProviders
) -> None:
    info = await add_key(jp_fetch, captured, name="work", tier="paid")
    assert info["label"] == "openai@work" and info["last4"] == CANARY[-4:]
    assert "key" not in info and CANARY not in json.dumps(info)

    code, listing = await call(jp_fetch, captured, "keys")
    assert code == 200
    assert [k["label"] for k in listing["keys"]] == ["openai@work"]
    openai = next(p for p in listing["providers"] if p["provider"] == "openai")
    assert openai["configured"] is True

    code, verified = await call(
        jp_fetch, captured, "keys", info["id"], "verify", method="POST", body="{}"
    )
    assert code == 200 and verified["ok"] is True, verified
    assert fake_providers.requests_for("openai")[-1].auth == CANARY
    code, listing = await call(jp_fetch, captured, "keys")
    assert listing["keys"][0]["last_verified"]

    code, _ = await call(jp_fetch, captured, "keys", info["id"], method="DELETE")
    assert code == 204
    code, listing = await call(jp_fetch, captured, "keys")
    assert listing["keys"] == []
    code, data = await call(jp_fetch, captured, "keys", info["id"], method="DELETE")
    assert code == 404 and data["error"] == "NotFound"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ("{not json", 400, "not valid JSON"),
        ("[1, 2]", 400, "JSON object"),
        (json.dumps({"provider": "nosuch", "key": "abcdefghijklmnop"}), 400, "unknown provider"),
        (json.dumps({"provider": "openai"}), 400, "'key' is required"),
        (json.dumps({"provider": "openai", "key": "has space inside"}), 400, "whitespace"),
        (json.dumps({"provider": "openai", "key": "x" * 2_000_000}), 413, "too large"),
    ],
)
async def test_keys_bad_input(
    jp_fetch: Any, captured: list[str], body: str, status: int, needle: str
) -> None:
    code, data = await call(jp_fetch, captured, "keys", method="POST", body=body)
    assert code == status, data
    assert needle in data["message"]
    code, listing = await call(jp_fetch, captured, "keys")
    assert listing["keys"] == []


async def test_complete_and_stream(
    jp_fetch: Any, captured: list[str], fake_providers: FakeProviders
) -> None:
    await add_key(jp_fetch, captured)
    request = {
        "model": "openai:gpt-4o-mini",
        "messages": [{"role": "user", "content": "hello server"}],
        "params": {"temperature": 0},
        "origin": {"notebook": "/work/nb.ipynb"},
    }
    code, data = await call(jp_fetch, captured, "complete", method="POST", body=json.dumps(request))
    assert code == 200, data
    assert data["text"] == "Echo: hello server"
    assert data["usage"]["output_tokens"] == 3 and data["cost_usd"] is not None

    code, raw = await call(
        jp_fetch, captured, "complete", method="POST", body=json.dumps({**request, "stream": True})
    )
    assert code == 200
    events = [block for block in raw.split("\n\n") if block.strip()]
    deltas = [
        json.loads(e.split("data: ", 1)[1])["text"] for e in events if e.startswith("event: delta")
    ]
    done = [json.loads(e.split("data: ", 1)[1]) for e in events if e.startswith("event: done")]
    assert "".join(deltas) == "Echo: hello server" and len(deltas) > 1
    assert done and done[0]["text"] == "Echo: hello server"

    import jupyter_byok

    frame = jupyter_byok.usage()
    assert set(frame["notebook"]) == {"/work/nb.ipynb"}
    assert len(frame) == 2

    code, data = await call(
        jp_fetch, captured, "usage", params={"since": "today", "by": "provider"}
    )
    assert code == 200 and data["groups"], data


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (
            {"model": "nosuch:x", "messages": [{"role": "user", "content": "x"}]},
            400,
            "unknown provider",
        ),
        ({"model": "openai:gpt-4o-mini", "messages": []}, 400, "non-empty list"),
        ({"model": "local:smollm2", "messages": [{"role": "user", "content": "x"}]}, 400, "kernel"),
        (
            {"model": "anthropic:claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}]},
            400,
            "no key for anthropic",
        ),
    ],
)
async def test_complete_errors(
    jp_fetch: Any,
    captured: list[str],
    fake_providers: FakeProviders,
    body: dict[str, Any],
    status: int,
    needle: str,
) -> None:
    code, data = await call(jp_fetch, captured, "complete", method="POST", body=json.dumps(body))
    assert code == status, data
    assert needle in data["message"]


async def test_provider_errors_map_to_statuses(
    jp_fetch: Any, captured: list[str], fake_providers: FakeProviders
) -> None:
    await add_key(jp_fetch, captured)
    body = json.dumps(
        {"model": "openai:gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    )
    fake_providers.add_fault("openai", "auth")
    code, data = await call(jp_fetch, captured, "complete", method="POST", body=body)
    assert code == 502 and data["error"] == "AuthenticationError" and data["provider_status"] == 401
    fake_providers.add_fault("openai", "quota")
    code, data = await call(jp_fetch, captured, "complete", method="POST", body=body)
    assert code == 402 and data["error"] == "QuotaExceededError"


async def test_config_models_prices_budgets(jp_fetch: Any, captured: list[str]) -> None:
    code, data = await call(
        jp_fetch,
        captured,
        "config",
        method="PUT",
        body=json.dumps({"default_model": "fast", "aliases": {"fast": "openai:gpt-4o-mini"}}),
    )
    assert code == 200 and data["effective_default_model"] == "fast"
    code, data = await call(
        jp_fetch, captured, "config", method="PUT", body=json.dumps({"colour": "red"})
    )
    assert code == 400 and "colour" in data["message"]
    code, data = await call(jp_fetch, captured, "models")
    assert code == 200 and "openai" in data["providers"] and data["models"]
    # the settings editor's default-model suggestions: local models first, then priced
    # models, then the alias just added
    choices = data["choices"]
    assert choices[0] == "local:smollm2" and "openai:gpt-4o-mini" in choices
    assert choices[-1] == "fast" and len(choices) == len(set(choices))
    code, data = await call(jp_fetch, captured, "prices", params={"model": "openai:gpt-4o-mini"})
    assert code == 200 and data["price"]
    code, data = await call(jp_fetch, captured, "prices", params={"model": "openai:no-such-model"})
    assert code == 404
    code, data = await call(jp_fetch, captured, "budgets")
    assert code == 200 and data["budgets"] == []


# ---------------------------------------------------------------- auth matrix
ROUTES = [
    ("GET", ("status",)),
    ("GET", ("keys",)),
    ("POST", ("keys",)),
    ("DELETE", ("keys", "abc123")),
    ("POST", ("keys", "abc123", "verify")),
    ("POST", ("complete",)),
    ("POST", ("search",)),
    ("GET", ("usage",)),
    ("GET", ("models",)),
    ("GET", ("prices",)),
    ("GET", ("budgets",)),
    ("PUT", ("budgets",)),
    ("GET", ("config",)),
    ("PUT", ("config",)),
    ("GET", ("local", "models")),
    ("DELETE", ("local", "models", "smollm2")),
    ("POST", ("local", "models", "smollm2", "test")),
    ("PUT", ("local", "default")),
    ("GET", ("local", "pulls")),
    ("POST", ("local", "pulls")),
    ("GET", ("local", "pulls", "0123456789abcdef")),
    ("DELETE", ("local", "pulls", "0123456789abcdef")),
]


def _body(method: str) -> str | None:
    return json.dumps({"provider": "openai", "key": CANARY}) if method in ("POST", "PUT") else None


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_requires_token(
    jp_fetch: Any, captured: list[str], method: str, path: tuple[str, ...]
) -> None:
    response = await jp_fetch(
        "byok",
        *path,
        method=method,
        body=_body(method),
        headers={"Authorization": ""},
        raise_error=False,
        follow_redirects=False,
    )
    record(captured, response)
    assert response.code in (302, 403), response.code


async def browser_cookies(jp_fetch: Any, jp_serverapp: Any) -> dict[str, str]:
    """Log in the way a browser does (token once in the URL) and keep the cookies."""
    token = jp_serverapp.identity_provider.token
    login = await jp_fetch("api", "status", params={"token": token}, headers={"Authorization": ""})
    cookies = dict(
        v.split(";", 1)[0].split("=", 1)
        for k, v in login.headers.get_all()
        if k.lower() == "set-cookie"
    )
    assert any(name.startswith("username-") for name in cookies), cookies
    return cookies


def cookie_header(cookies: dict[str, str], xsrf: bool) -> dict[str, str]:
    jar = {k: v for k, v in cookies.items() if k.startswith("username-")}
    headers = {"Authorization": ""}
    if xsrf:
        value = "2|00000000|" + "ab" * 16 + "|1"
        jar["_xsrf"] = value
        headers["X-XSRFToken"] = value
    headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
    return headers


async def test_cookie_login_works_for_reads(
    jp_fetch: Any, jp_serverapp: Any, captured: list[str]
) -> None:
    cookies = await browser_cookies(jp_fetch, jp_serverapp)
    response = await jp_fetch(
        "byok", "status", headers=cookie_header(cookies, xsrf=False), raise_error=False
    )
    record(captured, response)
    assert response.code == 200


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r[0] != "GET"])
async def test_cookie_without_xsrf_is_refused(
    jp_fetch: Any, jp_serverapp: Any, captured: list[str], method: str, path: tuple[str, ...]
) -> None:
    cookies = await browser_cookies(jp_fetch, jp_serverapp)
    response = await jp_fetch(
        "byok",
        *path,
        method=method,
        body=_body(method),
        headers=cookie_header(cookies, xsrf=False),
        raise_error=False,
    )
    record(captured, response)
    assert response.code == 403, response.code


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_cross_origin_is_refused(
    jp_fetch: Any, jp_serverapp: Any, captured: list[str], method: str, path: tuple[str, ...]
) -> None:
    cookies = await browser_cookies(jp_fetch, jp_serverapp)
    headers = {**cookie_header(cookies, xsrf=True), "Origin": "https://evil.example"}
    response = await jp_fetch(
        "byok", *path, method=method, body=_body(method), headers=headers, raise_error=False
    )
    record(captured, response)
    # jupyter_server answers a cross-origin request 404, on every verb: APIHandler.prepare
    # for reads, check_xsrf_cookie (which checks the origin first) for writes
    assert response.code == 404, response.code


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_authorizer_denies(
    jp_fetch: Any, jp_serverapp: Any, captured: list[str], method: str, path: tuple[str, ...]
) -> None:
    from jupyter_server.auth.authorizer import Authorizer

    class Deny(Authorizer):
        def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
            return not resource.startswith("jupyter_byok:")

    jp_serverapp.web_app.settings["authorizer"] = Deny(parent=jp_serverapp)
    try:
        response = await jp_fetch(
            "byok", *path, method=method, body=_body(method), raise_error=False
        )
    finally:
        jp_serverapp.web_app.settings["authorizer"] = jp_serverapp.authorizer
    record(captured, response)
    assert response.code == 403, response.code


async def test_no_unauthenticated_handler_warning(
    jp_serverapp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from jupyter_byok.server.handlers import ROUTES as HANDLERS

    for _, handler in HANDLERS:
        for verb in ("get", "post", "put", "delete"):
            method = getattr(handler, verb, None)
            if method is not None and verb in handler.__dict__:
                assert getattr(method, "__wrapped__", None) is not None, (
                    f"{handler.__name__}.{verb}"
                )
    assert "without @allow_unauthenticated" not in caplog.text


async def test_kernel_client_keeps_one_connection_to_its_server(
    jp_fetch: Any,
    jp_serverapp: Any,
    jp_http_port: int,
    jp_base_url: str,
    captured: list[str],
    fake_providers: FakeProviders,
) -> None:
    """What a kernel does: calls through the server over one kept-alive client per loop."""
    from jupyter_byok.client import Client, ServerInfo
    from jupyter_byok.types import Message, Request

    await add_key(jp_fetch, captured)
    client = Client(transport="server")
    token = jp_serverapp.identity_provider.token
    client._server = ServerInfo(url=f"http://127.0.0.1:{jp_http_port}{jp_base_url}", token=token)
    client._looked = True
    texts = []
    for i in range(3):
        request = Request(model="openai:gpt-4o-mini", messages=[Message("user", f"kept {i}")])
        texts.append((await client.acomplete(request)).text)
        streamed = [
            item
            async for item in client.astream(
                Request(model="openai:gpt-4o-mini", messages=[Message("user", f"s {i}")])
            )
        ]
        assert isinstance(streamed[-1], Completion) and streamed[-1].text == f"Echo: s {i}"
    assert texts == ["Echo: kept 0", "Echo: kept 1", "Echo: kept 2"]
    (http,) = client._https.values()  # one client for this loop, reused by every call
    pool = http._transport._pool
    assert len(pool.connections) == 1  # and one connection to the server, kept alive
    await http.aclose()
