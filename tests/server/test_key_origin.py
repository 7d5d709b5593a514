"""Keys go only to the origin (scheme, host, port) they were stored for (issue 15, items 1-2).

Every path a key can take is tried against a loopback "catch" server with canary keys
planted: a built-in provider's key, a named key, a key stored with a base URL, an
environment key, an endpoint's key, a generic secret, and verification. The server runs
in process (pytest-jupyter) with the jupyter_byok extension; providers are the loopback
fakes. Nothing here reaches past 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from catch_server import Catch, serve
from tornado.httpclient import HTTPResponse

import jupyter_byok
from jupyter_byok.config import Endpoint, Settings, load_settings, save_settings
from jupyter_byok.engine import Engine
from jupyter_byok.errors import ConfigError, KeyOriginError, UnknownProviderError
from jupyter_byok.keys import Keystore, resolve_key
from jupyter_byok.origin import BoundSecret, check_base_url, check_destination, origin_of
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Message, Request

OPENAI = "sk-proj-ORIGINOPENAI" + "a" * 40 + "T3BlbkFJ" + "b" * 20
AZURE = "sk-proj-ORIGINAZURE0" + "c" * 40 + "T3BlbkFJ" + "d" * 20
ENV_OPENAI = "sk-proj-ORIGINENVOAI" + "e" * 40 + "T3BlbkFJ" + "f" * 20
ENV_GOOGLE = "AIzaSyORIGINENVGOOGLE" + "g" * 18
ENV_CORP = "corp-ORIGIN-ENV-" + "h" * 30
CORP = "corp-ORIGIN-STORED-" + "i" * 30
SECRET = "ghp_ORIGINSECRET" + "j" * 30
CANARIES = (OPENAI, AZURE, ENV_OPENAI, ENV_GOOGLE, ENV_CORP, CORP, SECRET)


@pytest.fixture
def catch() -> Iterator[Catch]:
    yield from serve()


@pytest.fixture
def other_catch() -> Iterator[Catch]:
    yield from serve()


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_byok": True}, "allow_root": True}}


def _record(response: HTTPResponse) -> Any:
    body = response.body.decode() if response.body else ""
    for canary in CANARIES:  # no reply ever carries a key
        assert canary not in body
        assert all(canary not in v for _, v in response.headers.get_all())
    return json.loads(body) if body.lstrip().startswith(("{", "[")) else body


async def call(jp_fetch: Any, *path: str, **kwargs: Any) -> tuple[int, Any]:
    kwargs.setdefault("raise_error", False)
    if "body" in kwargs and not isinstance(kwargs["body"], str):
        kwargs["body"] = json.dumps(kwargs["body"])
    response = await jp_fetch("byok", *path, **kwargs)
    return response.code, _record(response)


async def put_config(jp_fetch: Any, body: dict[str, Any]) -> tuple[int, Any]:
    return await call(jp_fetch, "config", method="PUT", body=body)


async def add_key(jp_fetch: Any, provider: str, key: str, **extra: Any) -> dict[str, Any]:
    code, data = await call(
        jp_fetch, "keys", method="POST", body={"provider": provider, "key": key, **extra}
    )
    assert code == 201, data
    return dict(data)


async def complete(jp_fetch: Any, model: str, stream: bool = False) -> tuple[int, Any]:
    body = {"model": model, "prompt": "hi", "stream": stream}
    return await call(jp_fetch, "complete", method="POST", body=body)


def write_endpoints(home: Path, endpoints: dict[str, dict[str, Any]]) -> None:
    """A settings file written by hand (or by an older version), bypassing every check."""
    settings = Settings(endpoints={n: Endpoint(**v) for n, v in endpoints.items()})
    assert home.name == "byok-home"
    save_settings(settings)  # creates the (0700) home folder when needed


def assert_never_received(*catches: Catch) -> None:
    for c in catches:
        for canary in CANARIES:
            assert not c.received(canary), f"a canary key reached {c.url}"


# ------------------------------------------------------------------ 1a. generic secrets
@pytest.mark.parametrize("name", ["secret", "Secret", "SECRET"])
async def test_a_generic_secret_never_goes_to_a_provider(
    fake_providers: FakeProviders, catch: Catch, jp_fetch: Any, byok_home: Path, name: str
) -> None:
    await add_key(jp_fetch, "secret", SECRET, name="github-mcp")
    endpoint = {"base_url": catch.url + "/catch", "wire": "openai", "needs_key": True}
    code, data = await put_config(jp_fetch, {"endpoints": {name: endpoint}})
    assert code == 400 and "reserved" in data["message"], data
    assert load_settings(fresh=True).endpoints == {}

    # the same endpoint written straight into the settings file is refused on use
    write_endpoints(byok_home, {name: endpoint})
    for stream in (False, True):
        code, data = await complete(jp_fetch, f"{name}:anything@github-mcp", stream)
        assert code == 400, data
        assert "\n" not in data["message"]
    assert catch.raw == []
    assert_never_received(catch)


def test_a_generic_secret_is_never_resolved_as_a_provider_key(byok_home: Path) -> None:
    Keystore().set("secret", SECRET, "github-mcp")
    for provider in ("secret", "Secret"):
        with pytest.raises((KeyOriginError, UnknownProviderError)):
            resolve_key(provider, "github-mcp")


# ------------------------------------------- 1b. no endpoint shadows a built-in provider
SHADOWS = ["OpenAI", "openai", "google", "GOOGLE", "Gemini", "xAI", "TAVILY", "Anthropic", "Local"]


@pytest.mark.parametrize("name", SHADOWS)
async def test_endpoint_names_cannot_shadow_a_provider(
    fake_providers: FakeProviders,
    catch: Catch,
    monkeypatch: pytest.MonkeyPatch,
    jp_fetch: Any,
    byok_home: Path,
    name: str,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_OPENAI)
    monkeypatch.setenv("GOOGLE_API_KEY", ENV_GOOGLE)
    endpoint = {"base_url": catch.url + "/v1", "wire": "openai", "needs_key": False}
    code, data = await put_config(jp_fetch, {"endpoints": {name: endpoint}})
    assert code == 400 and "choose another name" in data["message"], data

    write_endpoints(byok_home, {name: endpoint})
    code, data = await complete(jp_fetch, f"{name}:gpt-4o-mini")
    if name in ("openai",):  # the built-in provider itself: its own origin, the fake
        assert code == 200, data
    else:
        assert code == 400, data
    assert_never_received(catch)


async def test_an_endpoint_takes_no_key_from_the_environment(
    fake_providers: FakeProviders,
    catch: Catch,
    monkeypatch: pytest.MonkeyPatch,
    jp_fetch: Any,
) -> None:
    monkeypatch.setenv("CORP_API_KEY", ENV_CORP)
    monkeypatch.setenv("OPENAI_API_KEY", ENV_OPENAI)
    endpoint = {"base_url": catch.url + "/v1", "wire": "openai", "needs_key": False}
    code, data = await put_config(jp_fetch, {"endpoints": {"corp": endpoint}})
    assert code == 200, data
    code, data = await complete(jp_fetch, "corp:some-model")
    assert code == 200 and data["text"] == "caught", data
    assert len(catch.raw) == 1 and b"authorization" not in catch.raw[0].lower()
    assert_never_received(catch)

    # needs_key: still nothing from the environment, a one-line "store the key" instead
    code, data = await put_config(
        jp_fetch, {"endpoints": {"corp": {**endpoint, "needs_key": True}}}
    )
    assert code == 200, data
    code, data = await complete(jp_fetch, "corp:some-model")
    assert code == 400 and "jupyter byok keys set corp" in data["message"], data
    assert len(catch.raw) == 1
    assert_never_received(catch)


# ------------------------------------------------ 1c. keys do not follow a moved endpoint
@pytest.mark.parametrize("needs_key", [True, False])
async def test_changing_an_endpoints_url_does_not_carry_its_key(
    fake_providers: FakeProviders,
    catch: Catch,
    other_catch: Catch,
    jp_fetch: Any,
    needs_key: bool,
) -> None:
    home = {"base_url": other_catch.url + "/v1", "wire": "openai", "needs_key": needs_key}
    assert (await put_config(jp_fetch, {"endpoints": {"corp": home}}))[0] == 200
    info = await add_key(jp_fetch, "corp", CORP)
    assert info["base_url"] == other_catch.url + "/v1"
    code, data = await complete(jp_fetch, "corp:m")
    assert code == 200 and other_catch.received(CORP), data  # at home: the key goes

    moved = {**home, "base_url": catch.url + "/catch"}
    assert (await put_config(jp_fetch, {"endpoints": {"corp": moved}}))[0] == 200
    for stream in (False, True):
        code, data = await complete(jp_fetch, "corp:m", stream)
        assert code == 400 and data["error"] == "KeyOriginError", data
        assert "keys rebind corp" in data["message"] and "keys set corp" in data["message"]
    code, data = await call(jp_fetch, "keys", info["id"], "verify", method="POST", body="{}")
    assert code == 400 and data["error"] == "KeyOriginError", data
    assert catch.raw == []

    # the same origin under another path: the key is bound to the origin, so it goes
    same_origin = {**home, "base_url": other_catch.url + "/v2"}
    assert (await put_config(jp_fetch, {"endpoints": {"corp": same_origin}}))[0] == 200
    code, data = await complete(jp_fetch, "corp:m")
    assert code == 200 and other_catch.paths[-1] == "/v2/chat/completions", data
    # removed and added again at another origin: still not carried along
    assert (await put_config(jp_fetch, {"endpoints": {}}))[0] == 200
    assert (await put_config(jp_fetch, {"endpoints": {"corp": moved}}))[0] == 200
    code, data = await complete(jp_fetch, "corp:m")
    assert code == 400 and data["error"] == "KeyOriginError", data
    # entered again for the new origin, it goes there
    await add_key(jp_fetch, "corp", AZURE)
    code, data = await complete(jp_fetch, "corp:m")
    assert code == 200 and catch.received(AZURE), data
    assert not catch.received(CORP)


async def test_an_endpoint_key_may_not_be_bound_elsewhere(
    fake_providers: FakeProviders, catch: Catch, other_catch: Catch, jp_fetch: Any
) -> None:
    home = {"base_url": other_catch.url + "/v1", "needs_key": True}
    assert (await put_config(jp_fetch, {"endpoints": {"corp": home}}))[0] == 200
    code, data = await call(
        jp_fetch,
        "keys",
        method="POST",
        body={"provider": "corp", "key": CORP, "base_url": catch.url + "/v1"},
    )
    assert code == 400 and "endpoint's origin" in data["message"], data
    code, listing = await call(jp_fetch, "keys")
    assert listing["keys"] == []


# ------------------------------------------------- 2. keys set --base-url routes the key
async def test_a_key_stored_with_a_base_url_goes_there_and_only_there(
    fake_providers: FakeProviders, catch: Catch, jp_fetch: Any
) -> None:
    await add_key(jp_fetch, "openai", OPENAI)
    azure = await add_key(jp_fetch, "openai", AZURE, name="azure", base_url=catch.url + "/v1/")
    assert azure["base_url"] == catch.url + "/v1"

    code, data = await complete(jp_fetch, "openai:gpt-4o-mini@azure")
    assert code == 200 and data["text"] == "caught", data
    assert catch.received(AZURE) and catch.paths == ["/v1/chat/completions"]
    assert not fake_providers.requests_for("openai")
    code, data = await complete(jp_fetch, "openai:gpt-4o-mini@azure", stream=True)
    assert code == 200 and len(catch.paths) == 2

    code, data = await call(jp_fetch, "keys", azure["id"], "verify", method="POST", body="{}")
    assert code == 200 and data["ok"] is True, data
    assert catch.paths[-1] == "/v1/models"

    # the default key goes to the provider's own URL, never to the other key's
    code, data = await complete(jp_fetch, "openai:gpt-4o-mini")
    assert code == 200 and data["text"].startswith("Echo:"), data
    assert fake_providers.requests_for("openai")[-1].auth == OPENAI
    assert not catch.received(OPENAI)
    assert all(r.auth != AZURE for r in fake_providers.requests_for("openai"))


def test_a_key_stored_with_a_base_url_goes_there_in_a_kernel_too(
    fake_providers: FakeProviders, catch: Catch
) -> None:
    """Without a server (a script, a kernel on its own): the same rule in the engine."""
    store = Keystore()
    store.set("openai", OPENAI)
    store.set("openai", AZURE, "azure", base_url=catch.url + "/v1")
    answer = jupyter_byok.complete("openai:gpt-4o-mini@azure", "hi")
    assert answer.text == "caught" and catch.received(AZURE)
    answer = jupyter_byok.complete("openai:gpt-4o-mini", "hi")
    assert answer.text.startswith("Echo:") and not catch.received(OPENAI)


@pytest.mark.parametrize(
    ("base_url", "extra", "needle"),
    [
        ("gopher://127.0.0.1:70/", {}, "https://"),
        ("http://10.0.0.5/v1", {}, "--allow-http"),
        ("https://user:pw@proxy.example/v1", {}, "credentials"),
        ("https://proxy.example/v1?api-version=1", {}, "query"),
        ("not a url", {}, "spaces"),
    ],
)
async def test_a_bad_key_base_url_is_refused(
    jp_fetch: Any, base_url: str, extra: dict[str, Any], needle: str
) -> None:
    body = {"provider": "openai", "key": AZURE, "name": "azure", "base_url": base_url, **extra}
    code, data = await call(jp_fetch, "keys", method="POST", body=body)
    assert code == 400 and needle in data["message"], data
    code, listing = await call(jp_fetch, "keys")
    assert listing["keys"] == []


async def test_http_to_another_machine_only_when_explicitly_allowed(jp_fetch: Any) -> None:
    body = {"provider": "openai", "key": AZURE, "name": "lan", "base_url": "http://10.0.0.5/v1"}
    code, data = await call(jp_fetch, "keys", method="POST", body={**body, "allow_http": True})
    assert code == 201 and data["base_url"] == "http://10.0.0.5/v1", data


# --------------------------------------------------------------- environment keys
async def test_an_environment_key_is_bound_to_the_base_url_seen_at_start(
    fake_providers: FakeProviders,
    catch: Catch,
    monkeypatch: pytest.MonkeyPatch,
    jp_fetch: Any,
) -> None:
    """The server started with JUPYTER_BYOK_OPENAI_BASE_URL at the fake: a later change of
    the variable in the server's process does not move the environment key."""
    monkeypatch.setenv("OPENAI_API_KEY", ENV_OPENAI)
    monkeypatch.setenv("JUPYTER_BYOK_OPENAI_BASE_URL", catch.url + "/v1")
    code, data = await complete(jp_fetch, "openai:gpt-4o-mini")
    assert code == 200 and data["text"].startswith("Echo:"), data
    assert fake_providers.requests_for("openai")[-1].auth == ENV_OPENAI
    assert_never_received(catch)


def test_environment_keys_are_bound_to_the_providers_origin(
    monkeypatch: pytest.MonkeyPatch, catch: Catch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_OPENAI)
    monkeypatch.setenv("GOOGLE_API_KEY", ENV_GOOGLE)
    key = resolve_key("openai")
    assert isinstance(key, BoundSecret) and key.source == "environment"
    assert key.base_url == "https://api.openai.com/v1"
    gemini = resolve_key("gemini")
    assert isinstance(gemini, BoundSecret)
    assert gemini.origin == origin_of("https://generativelanguage.googleapis.com")
    # the server passes the overrides it saw at start: those win over the environment now
    monkeypatch.setenv("JUPYTER_BYOK_OPENAI_BASE_URL", catch.url + "/v1")
    started = {"JUPYTER_BYOK_OPENAI_BASE_URL": "https://proxy.example/v1"}
    assert resolve_key("openai", env_base_urls=started).origin == origin_of(  # type: ignore[attr-defined]
        "https://proxy.example"
    )
    assert resolve_key("openai").origin == origin_of(catch.url)  # type: ignore[attr-defined]


# ------------------------------------------------------------- the rule, every path
def test_every_stored_key_is_bound(
    fake_providers: FakeProviders, catch: Catch, byok_home: Path
) -> None:
    store = Keystore()
    store.set("openai", OPENAI)
    store.set("openai", AZURE, "azure", base_url=catch.url + "/v1")
    write_endpoints(byok_home, {"corp": {"base_url": catch.url + "/corp", "needs_key": True}})
    store.set("corp", CORP)
    store.set("secret", SECRET, "github-mcp")

    default = resolve_key("openai", store=store)
    assert isinstance(default, BoundSecret)
    assert default.base_url == fake_providers.base_url("openai")
    named = resolve_key("openai", "azure", store=store)
    assert isinstance(named, BoundSecret) and named.base_url == catch.url + "/v1"
    endpoint = resolve_key("corp", store=store)
    assert isinstance(endpoint, BoundSecret) and endpoint.base_url == catch.url + "/corp"
    with pytest.raises(KeyOriginError):
        resolve_key("secret", "github-mcp", store=store)
    explicit = resolve_key("openai", explicit=OPENAI)
    assert not isinstance(explicit, BoundSecret)  # the caller's own key, not the store's


def test_dispatch_refuses_a_key_for_another_origin(catch: Catch, other_catch: Catch) -> None:
    key = BoundSecret(CORP, catch.url + "/v1")
    check_destination(key, catch.url + "/v1/models", "corp")  # its own origin: fine
    for url in (
        other_catch.url + "/v1/models",
        catch.url.replace("http://", "https://") + "/v1",
        f"http://localhost:{catch.port}/v1",
    ):
        with pytest.raises(KeyOriginError) as err:
            check_destination(key, url, "corp")
        assert CORP not in str(err.value) and "\n" not in str(err.value)


def test_a_moved_endpoint_refuses_its_key_in_a_kernel_too(
    catch: Catch, other_catch: Catch, byok_home: Path
) -> None:
    save_settings(Settings(endpoints={"corp": Endpoint(other_catch.url + "/v1", needs_key=True)}))
    Keystore().set("corp", CORP)
    save_settings(Settings(endpoints={"corp": Endpoint(catch.url + "/v1", needs_key=True)}))
    engine = Engine()
    request = Request(model="corp:m", messages=[Message("user", "hi")])

    async def go() -> None:
        try:
            await engine.acomplete(request)
        finally:
            await engine.aclose()

    with pytest.raises(KeyOriginError):
        asyncio.run(go())
    assert catch.raw == [] and other_catch.raw == []


def test_an_endpoint_in_the_settings_file_is_checked_on_use(byok_home: Path) -> None:
    for bad in (
        {"base_url": "gopher://127.0.0.1/"},
        {"base_url": "http://127.0.0.1:9/v1", "wire": "local"},
        {"base_url": "http://127.0.0.1:9/v1", "wire": "evil"},
        {"base_url": "http://203.0.113.9/v1"},
    ):
        write_endpoints(byok_home, {"corp": bad})
        with pytest.raises(ConfigError):
            jupyter_byok.complete("corp:m", "hi")


# ----------------------------------------------------------------- origins and URLs
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://API.example.com/v1", "https://api.example.com:443/other"),
        ("http://127.0.0.1:80/x", "HTTP://127.0.0.1"),
        ("http://[::1]:8080/v1", "http://[::1]:8080"),
        ("https://api.example.com./v1", "https://api.example.com"),
    ],
)
def test_same_origin(a: str, b: str) -> None:
    assert origin_of(a) == origin_of(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://api.example.com", "http://api.example.com"),
        ("https://api.example.com", "https://api.example.com:8443"),
        ("https://api.example.com", "https://api.example.com.evil.net"),
        ("http://127.0.0.1:8000", "http://localhost:8000"),
    ],
)
def test_different_origins(a: str, b: str) -> None:
    assert origin_of(a) != origin_of(b)


@pytest.mark.parametrize(
    "url",
    [
        "https://llm.example.com/v1",
        "http://127.0.0.1:11434/v1",
        "http://127.5.6.7/v1",
        "http://localhost:8000",
        "http://[::1]:9/v1",
    ],
)
def test_accepted_base_urls(url: str) -> None:
    assert check_base_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "gopher://127.0.0.1:70/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://10.0.0.5/v1",
        "http://example.com/v1",
        "http://169.254.169.254/latest",
        "https://user:pw@example.com/v1",
        "https://example.com/v1#frag",
        "https:///v1",
        "",
        "https://exa mple.com",
        "https://example.com:99999/",
    ],
)
def test_refused_base_urls(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_base_url(url)
    assert "\n" not in str(err.value)


def test_http_elsewhere_when_explicitly_allowed() -> None:
    assert check_base_url("http://10.0.0.5/v1", allow_http=True) == "http://10.0.0.5/v1"
    with pytest.raises(ConfigError):
        check_base_url("gopher://10.0.0.5/", allow_http=True)


# ------------------------------------------- PUT /byok/config: what it accepts (item 7)
GOOD = {"base_url": "https://llm.example.com/v1", "wire": "openai", "needs_key": True}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"default_model": "gpt-4o-mini"}, "PROVIDER:MODEL"),
        ({"default_model": "nosuch:model"}, "unknown provider"),
        ({"default_model": ":model"}, "PROVIDER:MODEL"),
        ({"endpoints": {"corp": {**GOOD, "wire": "local"}}}, "unknown wire"),
        ({"endpoints": {"corp": {**GOOD, "wire": "evil"}}}, "unknown wire"),
        ({"endpoints": {"corp": {**GOOD, "wire": "tavily"}}}, "unknown wire"),
        ({"endpoints": {"corp": {**GOOD, "wire": 5}}}, "must be a string"),
        ({"endpoints": {"corp": {**GOOD, "base_url": "gopher://127.0.0.1:70/"}}}, "https://"),
        ({"endpoints": {"corp": {**GOOD, "base_url": "file:///etc/passwd"}}}, "https://"),
        ({"endpoints": {"corp": {**GOOD, "base_url": "http://10.0.0.5/v1"}}}, "allow_http"),
        ({"endpoints": {"corp": {**GOOD, "base_url": "http://llm.example.com"}}}, "allow_http"),
        ({"endpoints": {"corp": {**GOOD, "base_url": "https://u:p@h.example/v1"}}}, "credentials"),
        ({"endpoints": {"corp": {**GOOD, "base_url": 7}}}, "must be a string"),
        ({"endpoints": {"corp": {"wire": "openai"}}}, "needs a base_url"),
        ({"endpoints": {"corp": {**GOOD, "allow_http": "yes"}}}, "true or false"),
        ({"endpoints": {"corp": {**GOOD, "colour": "red"}}}, "unknown field"),
        ({"endpoints": {"corp": "https://llm.example.com"}}, "must be an object"),
        ({"endpoints": {"a:b": GOOD}}, "invalid endpoint name"),
        ({"endpoints": {"a@b": GOOD}}, "invalid endpoint name"),
        ({"endpoints": {"": GOOD}}, "invalid endpoint name"),
        ({"endpoints": {"corp": GOOD, "Corp": GOOD}}, "only by case"),
        ({"endpoints": ["corp"]}, "endpoints"),
    ],
)
async def test_put_config_refuses(
    jp_fetch: Any, byok_home: Path, body: dict[str, Any], needle: str
) -> None:
    code, data = await put_config(jp_fetch, body)
    assert code == 400, data
    assert needle in data["message"] and "\n" not in data["message"], data
    assert not (byok_home / "config.json").exists()


@pytest.mark.parametrize(
    "endpoint",
    [
        GOOD,
        {"base_url": "http://127.0.0.1:11434/v1", "wire": "openai"},
        {"base_url": "http://localhost:8000/", "wire": "anthropic"},
        {"base_url": "http://[::1]:9/v1", "wire": "gemini"},
        {"base_url": "http://10.0.0.5/v1", "allow_http": True},
        {"base_url": "https://llm.example.com/v1", "key_name": "prod", "needs_key": True},
    ],
)
async def test_put_config_accepts(jp_fetch: Any, endpoint: dict[str, Any]) -> None:
    body = {"endpoints": {"corp": endpoint}, "default_model": "corp:some-model"}
    code, data = await put_config(jp_fetch, body)
    assert code == 200, data
    stored = data["endpoints"]["corp"]
    assert stored["base_url"] == endpoint["base_url"].rstrip("/")
    assert data["default_model"] == "corp:some-model"


async def test_an_endpoints_key_name_picks_its_stored_key(
    fake_providers: FakeProviders, catch: Catch, jp_fetch: Any
) -> None:
    endpoint = {"base_url": catch.url + "/v1", "needs_key": True, "key_name": "prod"}
    assert (await put_config(jp_fetch, {"endpoints": {"corp": endpoint}}))[0] == 200
    await add_key(jp_fetch, "corp", CORP, name="prod")
    code, data = await complete(jp_fetch, "corp:m")
    assert code == 200 and catch.received(CORP), data


# ------------------------------------- endpoints need a permission of their own (item 1)
def deny_only(resource: str) -> Any:
    from jupyter_server.auth.authorizer import Authorizer

    class DenyOne(Authorizer):
        def is_authorized(self, handler: Any, user: Any, action: str, res: str) -> bool:
            return res != resource

    return DenyOne


async def test_changing_endpoints_needs_the_endpoints_permission(
    fake_providers: FakeProviders, catch: Catch, jp_fetch: Any, jp_serverapp: Any
) -> None:
    assert (await put_config(jp_fetch, {"endpoints": {"corp": GOOD}}))[0] == 200
    settings = jp_serverapp.web_app.settings
    settings["authorizer"] = deny_only("jupyter_byok:endpoints")(parent=jp_serverapp)
    try:
        moved = {**GOOD, "base_url": catch.url + "/v1"}
        for endpoints in (
            {"corp": moved},  # changed
            {"corp": GOOD, "other": moved},  # added
            {},  # removed
            {"corp": {**GOOD, "needs_key": False}},
        ):
            code, data = await put_config(jp_fetch, {"endpoints": endpoints})
            assert code == 403, data
            assert "jupyter_byok:endpoints" in data["message"] and "\n" not in data["message"]
        # the rest of the settings, and the same endpoints sent back, need no more than config
        code, data = await put_config(jp_fetch, {"default_model": "openai:gpt-4o-mini"})
        assert code == 200, data
        code, data = await put_config(jp_fetch, {"endpoints": data["endpoints"]})
        assert code == 200, data
        code, data = await complete(jp_fetch, "openai:gpt-4o-mini")
        assert code == 400 and "no key for openai" in data["message"], data
    finally:
        settings["authorizer"] = jp_serverapp.authorizer
    assert load_settings(fresh=True).endpoints["corp"].base_url == GOOD["base_url"]
    assert catch.raw == []


async def test_without_the_config_permission_nothing_changes(
    jp_fetch: Any, jp_serverapp: Any
) -> None:
    settings = jp_serverapp.web_app.settings
    settings["authorizer"] = deny_only("jupyter_byok:config")(parent=jp_serverapp)
    try:
        code, _ = await put_config(jp_fetch, {"endpoints": {"corp": GOOD}})
    finally:
        settings["authorizer"] = jp_serverapp.authorizer
    assert code == 403
    assert load_settings(fresh=True).endpoints == {}
