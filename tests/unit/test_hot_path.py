"""What the per-call fast paths must keep true: each shortcut behaves like the long way."""

from __future__ import annotations

import asyncio
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from jupyter_byok import ledger as ledger_module
from jupyter_byok.config import Settings, load_settings, update_settings
from jupyter_byok.errors import KeystoreCorruptError, ModelIdError, ProviderTimeoutError
from jupyter_byok.keys import Keystore
from jupyter_byok.keys import store as keystore_module
from jupyter_byok.models import parse_model
from jupyter_byok.pricing import compute_cost
from jupyter_byok.providers import BUILTIN, ProviderSpec, dispatch
from jupyter_byok.providers.base import _DIRECT, RetryPolicy, make_async_client
from jupyter_byok.redact import Secret
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Message, Usage

KEY = "sk-proj-HOTPATH" + "h" * 45 + "T3BlbkFJ" + "p" * 20
MESSAGES = [Message("user", "hello fast path")]


def openai_spec(fake: FakeProviders) -> ProviderSpec:
    spec = BUILTIN["openai"]
    return ProviderSpec(spec.name, spec.wire, fake.base_url("openai"), spec.env_vars)


async def call(fake: FakeProviders, client: Any, **kw: Any) -> Any:
    try:
        return await dispatch.complete(
            openai_spec(fake), "gpt-4o-mini", MESSAGES, {}, Secret(KEY), client=client, **kw
        )
    finally:
        await client.aclose()


# ------------------------------------------------------------ straight to the transport
def test_our_client_goes_to_the_transport_and_sends_the_same_request(
    fake_providers: FakeProviders,
) -> None:
    async def both() -> tuple[Any, Any]:
        ours = make_async_client()
        assert ours in _DIRECT  # the aiohttp transport is installed: the direct path
        plain = httpx.AsyncClient()  # a caller's own client: the client layer
        assert plain not in _DIRECT
        return await call(fake_providers, ours), await call(fake_providers, plain)

    direct, layered = asyncio.run(both())
    assert direct.text == layered.text and direct.usage == layered.usage
    first, second = fake_providers.requests_for("openai")
    for name in ("authorization", "content-type", "user-agent", "accept", "accept-encoding"):
        assert first.headers.get(name) == second.headers.get(name), name
    assert first.body == second.body and first.path == second.path


def test_no_cookie_is_kept_or_sent_back(fake_providers: FakeProviders) -> None:
    # Provider edges (Cloudflare) set cookies; a BYOK call has no use for them.
    fake_providers.add_fault(
        "openai", "rate_limit", retry_after=0, headers={"set-cookie": "__cf_bm=tracker; Path=/"}
    )
    result = asyncio.run(call(fake_providers, make_async_client()))
    assert result.attempts == 2
    retried = fake_providers.requests_for("openai")[1]
    assert "cookie" not in retried.headers


def test_timeout_applies_on_the_direct_path(fake_providers: FakeProviders) -> None:
    fake_providers.add_fault("openai", "slow_first_byte", delay=2.0)
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError):
        asyncio.run(
            call(
                fake_providers,
                make_async_client(),
                timeout=0.3,
                retry=RetryPolicy(max_retries=0),
            )
        )
    assert time.monotonic() - started < 1.8


def test_query_parameters_survive_the_direct_path(fake_providers: FakeProviders) -> None:
    spec = BUILTIN["gemini"]
    gemini = ProviderSpec(spec.name, spec.wire, fake_providers.base_url("gemini"), spec.env_vars)

    async def go() -> list[Any]:
        client = make_async_client()
        try:
            events = dispatch.stream(
                gemini, "gemini-2.5-flash", MESSAGES, {}, Secret("AIza" + "g" * 35), client=client
            )
            return [e async for e in events]
        finally:
            await client.aclose()

    events = asyncio.run(go())
    assert events[-1].done and "".join(e.delta or "" for e in events)
    (recorded,) = fake_providers.requests_for("gemini")
    assert recorded.query.get("alt") == ["sse"]


# --------------------------------------------------------- keystore reads by file identity
def test_a_second_reader_sees_every_change_of_the_file(byok_home: Path) -> None:
    writer, reader = Keystore(), Keystore()
    writer.set("openai", KEY)
    assert reader.get("openai").reveal() == KEY
    assert reader.get("openai").reveal() == KEY  # from the remembered parse
    other = KEY.replace("h", "k")
    writer.set("openai", other)
    assert reader.get("openai").reveal() == other
    writer.delete("openai")
    with pytest.raises(KeyError):
        reader.get("openai")


def test_an_edit_in_place_of_the_same_size_is_caught(byok_home: Path) -> None:
    writer, reader = Keystore(), Keystore()
    writer.set("openai", KEY)
    assert reader.get("openai").reveal() == KEY
    path = writer.path
    raw = bytearray(path.read_bytes())
    where = raw.index(b'"ct"') + 8
    raw[where] = ord("A") if raw[where] != ord("A") else ord("B")
    st = path.stat()
    with open(path, "r+b") as handle:  # same inode, same size
        handle.write(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with mtime put back
    with pytest.raises(KeystoreCorruptError):
        reader.get("openai")


def test_loosened_permissions_are_repaired_on_the_fast_path(byok_home: Path) -> None:
    ks = Keystore()
    ks.set("openai", KEY)
    assert ks.get("openai").reveal() == KEY
    os.chmod(ks.path, 0o644)  # the file: repaired on the very next read
    assert ks.get("openai").reveal() == KEY
    assert ks.path.stat().st_mode & 0o777 == 0o600
    os.chmod(ks.kek_dir, 0o755)  # the folders: checked at most once a DIR_CHECK_INTERVAL
    os.chmod(ks.home, 0o755)
    time.sleep(keystore_module.DIR_CHECK_INTERVAL + 0.1)
    assert ks.get("openai").reveal() == KEY
    assert ks.kek_dir.stat().st_mode & 0o777 == 0o700
    assert ks.home.stat().st_mode & 0o777 == 0o700


# ------------------------------------------------------------------- remembered parses
def test_model_ids_follow_alias_and_endpoint_changes(byok_home: Path) -> None:
    update_settings(lambda s: s.aliases.update({"fast": "openai:gpt-4o-mini"}))
    assert parse_model("fast").id == "openai:gpt-4o-mini"
    update_settings(lambda s: s.aliases.update({"fast": "anthropic:claude-haiku-4-5"}))
    assert parse_model("fast").id == "anthropic:claude-haiku-4-5"
    same = load_settings()
    assert parse_model("fast", same) is parse_model("fast", same)
    with pytest.raises(ModelIdError):  # other settings: no such alias, and not an id
        parse_model("fast", Settings())


def test_settings_without_a_file_are_one_shared_object(byok_home: Path) -> None:
    assert load_settings() is load_settings()
    assert load_settings(fresh=True) is not load_settings()


def test_remembered_rates_follow_the_long_context_tier() -> None:
    model = "gemini-2.5-pro"
    small = compute_cost("gemini", model, Usage(input_tokens=1_000, output_tokens=10))
    large = compute_cost("gemini", model, Usage(input_tokens=300_000, output_tokens=10))
    again = compute_cost("gemini", model, Usage(input_tokens=1_000, output_tokens=10))
    assert small.cost_usd == again.cost_usd
    assert large.cost_usd is not None and small.cost_usd is not None
    # above the threshold every token costs more, not just the extra ones
    assert large.cost_usd / 300 > small.cost_usd


# ------------------------------------------------------------------------ ledger ids
def test_ledger_ids_are_unique_and_sort_by_time(tmp_path: Path) -> None:
    ids = [ledger_module.new_id() for _ in range(2000)]
    time.sleep(0.002)
    later = ledger_module.new_id()
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert later > max(ids)
    ledger = ledger_module.Ledger(tmp_path / "ledger.sqlite3")
    row = ledger_module.LedgerRow(provider="openai", model="gpt-4o-mini", status="ok")
    assert ledger.record(row) == row.id
    assert ledger.record(row) == row.id  # a replay is ignored, not double-counted
    assert ledger.count() == 1


# ---------------------------------------------------- concurrent calls share commits
def test_calls_in_flight_together_return_only_committed_rows(
    fake_providers: FakeProviders, byok_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import jupyter_byok
    from jupyter_byok.engine import get_engine

    Keystore().set("openai", KEY)
    fake_providers.set_latency("openai", 0.05)
    batches: list[int] = []
    real = ledger_module.Ledger.record_many

    def counting(self: Any, rows: Any) -> Any:
        rows = list(rows)
        batches.append(len(rows))
        return real(self, rows)

    monkeypatch.setattr(ledger_module.Ledger, "record_many", counting)
    path = ledger_module.default_ledger().path
    visible: list[bool] = []

    async def one(i: int) -> Any:
        result = await jupyter_byok.acomplete("openai:gpt-4o-mini", f"call {i}")
        # committed before the call returned: another connection already sees the row
        with sqlite3.connect(path) as other:
            found = other.execute("SELECT 1 FROM attempts WHERE id = ?", (result.ledger_id,))
            visible.append(found.fetchone() is not None)
        return result

    async def go() -> list[Any]:
        try:
            return await asyncio.gather(*(one(i) for i in range(40)))
        finally:
            await get_engine().aclose()

    results = asyncio.run(go())
    assert len(results) == 40 and all(visible) and len(visible) == 40
    assert sum(batches) == 40
    assert max(batches) > 1 and len(batches) < 40  # answers arriving together share commits
    assert get_engine()._in_flight == 0
    # one call at a time writes its row in its own transaction, in the caller's thread
    batches.clear()
    jupyter_byok.complete("openai:gpt-4o-mini", "alone")
    jupyter_byok.complete("openai:gpt-4o-mini", "alone again")
    assert batches == [1, 1]
    assert ledger_module.default_ledger().count() == 42


# ------------------------------------------------------- clients closed with their loop
SCRIPT = """
import asyncio, gc, os, sys
import jupyter_byok
from jupyter_byok.testing import FakeProviders

with FakeProviders() as fake:
    os.environ.update(fake.env())
    os.environ["OPENAI_API_KEY"] = "sk-test-" + "x" * 40
    for word in ("first", "second"):  # a new loop each time, like scripts do
        print(asyncio.run(jupyter_byok.acomplete("openai:gpt-4o-mini", word)).text)
    gc.collect()
    print(jupyter_byok.complete("openai:gpt-4o-mini", "then sync").text)
"""


def test_asyncio_run_leaves_no_unclosed_client_behind(byok_home: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["Echo: first", "Echo: second", "Echo: then sync"]
    assert "nclosed" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


def test_server_engine_reads_a_parsed_keystore_without_a_thread_hop(
    fake_providers: FakeProviders, byok_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_byok.engine import Engine
    from jupyter_byok.types import Request

    Keystore().set("openai", KEY)
    engine = Engine(offload=True)  # as the server runs it
    hops: list[str] = []
    real = asyncio.to_thread

    async def counting(fn: Any, *args: Any) -> Any:
        hops.append(getattr(fn, "__name__", "?"))
        return await real(fn, *args)

    monkeypatch.setattr(asyncio, "to_thread", counting)

    async def calls(n: int) -> list[str]:
        try:
            out = []
            for i in range(n):
                request = Request(model="openai:gpt-4o-mini", messages=[Message("user", str(i))])
                out.append((await engine.acomplete(request)).text)
            return out
        finally:
            await engine.aclose()

    assert asyncio.run(calls(3)) == ["Echo: 0", "Echo: 1", "Echo: 2"]
    # two hops for three calls: the first ledger check, which opens the ledger (later
    # checks are a statvfs and a stat, on the loop), and the first key read, which parses
    # the keystore file
    assert len(hops) == 2 and "ensure_writable" in hops
    Keystore().set("openai", KEY.replace("h", "j"))  # a new file: parsed off the loop again
    asyncio.run(calls(2))
    assert len(hops) == 3 and hops[2] == hops[1] != "ensure_writable"
    assert fake_providers.requests_for("openai")[-1].auth.endswith(KEY.replace("h", "j")[-8:])


def test_a_completion_survives_its_json_form_whole() -> None:
    """The server's reply and the response cache both store ``to_dict``; one inverse reads
    both back, budget warnings and the provider's own cost included."""
    import json

    from jupyter_byok.types import Completion

    original = Completion(
        text="hi",
        model="xai:grok-4",
        provider="xai",
        usage=Usage(
            input_tokens=5, output_tokens=7, reasoning_tokens=2, provider_cost_usd=Decimal("1.2e-5")
        ),
        cost_usd=Decimal("0.000012"),
        finish_reason="stop",
        request_id="r1",
        response_id="resp",
        latency_s=0.25,
        ttft_s=0.1,
        ledger_id="L1",
        warnings=["80% of the daily budget is spent"],
    )
    assert Completion.from_dict(json.loads(json.dumps(original.to_dict()))) == original


# ------------------------------------------- per-call state read again on every call
def test_the_ledger_keystore_and_budgets_follow_the_home(
    byok_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_byok import budgets
    from jupyter_byok.config import set_home
    from jupyter_byok.engine import Engine

    monkeypatch.delenv("JUPYTER_BYOK_LEDGER_URL", raising=False)
    monkeypatch.delenv("JUPYTER_BYOK_LEDGER_DIR", raising=False)
    other = tmp_path / "other-home"
    engine = Engine()
    seen = []
    for home in (byok_home, other, byok_home, other):
        set_home(home)
        seen.append(
            (ledger_module.default_ledger().path.parent, engine.keystore.home, engine.ledger.path)
        )
    assert [s[0] for s in seen] == [byok_home, other, byok_home, other]
    assert [s[1] for s in seen] == [byok_home, other, byok_home, other]
    assert [s[2].parent for s in seen] == [byok_home, other, byok_home, other]

    set_home(byok_home)
    assert not budgets.has_budgets()
    (byok_home / "budgets.json").write_text('{"version": 1, "budgets": []}\n')
    assert budgets.has_budgets()  # made between two calls: seen by the next one
    set_home(other)
    assert not budgets.has_budgets()
    set_home(byok_home)
    (byok_home / "budgets.json").unlink()
    assert not budgets.has_budgets()


def test_limits_follow_the_environment_between_calls(
    fake_providers: FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_byok.errors import ResponseTooLargeError
    from jupyter_byok.providers.base import default_limits

    monkeypatch.delenv("JUPYTER_BYOK_MAX_RESPONSE_BYTES", raising=False)
    assert asyncio.run(call(fake_providers, make_async_client())).text
    monkeypatch.setenv("JUPYTER_BYOK_MAX_RESPONSE_BYTES", "10")
    assert default_limits().max_response_bytes == 10
    with pytest.raises(ResponseTooLargeError):
        asyncio.run(call(fake_providers, make_async_client()))
    monkeypatch.setenv("JUPYTER_BYOK_MAX_RESPONSE_BYTES", "1000000")
    assert default_limits().max_response_bytes == 1_000_000
    assert asyncio.run(call(fake_providers, make_async_client())).text
    monkeypatch.delenv("JUPYTER_BYOK_MAX_RESPONSE_BYTES")
    assert default_limits().max_response_bytes == 32 * 1024 * 1024


def test_each_row_says_who_as_the_environment_is_now(monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_byok.ledger.schema import COLUMNS

    def who_of_a_row() -> tuple[Any, ...]:
        row = ledger_module.LedgerRow(provider="openai", model="gpt-4o-mini", status="ok")
        values = dict(zip(COLUMNS, row.values(), strict=True))
        return values["user_name"], values["team"], values["server"]

    monkeypatch.setenv("JUPYTERHUB_USER", "ada")
    monkeypatch.setenv("JUPYTER_BYOK_TEAM", "red")
    monkeypatch.setenv("JUPYTER_BYOK_SERVER_NAME", "box-1")
    assert who_of_a_row() == ("ada", "red", "box-1")
    monkeypatch.setenv("JUPYTER_BYOK_TEAM", "blue")
    assert who_of_a_row() == ("ada", "blue", "box-1")
    monkeypatch.setenv("JUPYTERHUB_USER", "grace")
    monkeypatch.setenv("JUPYTER_BYOK_SERVER_NAME", "box-2")
    assert who_of_a_row() == ("grace", "blue", "box-2")
    monkeypatch.delenv("JUPYTER_BYOK_TEAM")
    assert who_of_a_row()[1] is None
