"""Cost corpus: each provider's usage semantics, computed by hand (providers.md §6)."""

from __future__ import annotations

import json
import warnings
from decimal import Decimal
from pathlib import Path

import pytest

from jupyter_byok import pricing
from jupyter_byok.config import Endpoint, Settings, save_settings
from jupyter_byok.errors import ConfigError
from jupyter_byok.pricing import compute_cost, estimate_cost, price_for, update_prices
from jupyter_byok.types import Usage

M = Decimal(1_000_000)
TOL = Decimal("1e-9")


def close(a: Decimal | None, b: Decimal) -> bool:
    assert a is not None
    return abs(a - b) <= TOL


def test_openai_cached_and_reasoning() -> None:
    # prompt_tokens=10000 (cached_tokens=4000), completion_tokens=2000 (reasoning_tokens=500)
    u = Usage(
        input_tokens=10_000, cached_input_tokens=4_000, output_tokens=2_000, reasoning_tokens=500
    )
    r = compute_cost("openai", "gpt-4o-mini", u)
    hand = (6000 * Decimal("0.15") + 4000 * Decimal("0.075") + 2000 * Decimal("0.60")) / M
    assert hand == Decimal("0.0024")
    assert r.cost_usd == hand and r.source == "computed"
    assert r.price_version == "2026-11-27"
    # reasoning model: reasoning billed as output, not twice
    u = Usage(
        input_tokens=1500, cached_input_tokens=1024, output_tokens=3000, reasoning_tokens=2500
    )
    r = compute_cost("openai", "o4-mini-2025-04-16", u)  # dated snapshot resolves to o4-mini
    assert close(r.cost_usd, Decimal("0.0005236") + Decimal("0.0002816") + Decimal("0.0132"))


def test_anthropic_cache_writes_per_ttl_and_reads() -> None:
    # wire: input_tokens=100 (excludes cache), cache_read=20000, 5m write 3000, 1h write 2000
    u = Usage(
        input_tokens=100 + 20_000 + 3_000 + 2_000,
        cached_input_tokens=20_000,
        cache_write_tokens=3_000,
        cache_write_1h_tokens=2_000,
        output_tokens=500,
    )
    r = compute_cost("anthropic", "claude-sonnet-4-6", u)
    assert close(
        r.cost_usd,
        Decimal("0.0003")
        + Decimal("0.006")
        + Decimal("0.01125")
        + Decimal("0.012")
        + Decimal("0.0075"),
    )
    assert r.cost_usd == Decimal("0.03705")
    # 1h writes cost more than 5m writes: swapping the split changes the cost
    swapped = Usage(
        input_tokens=25_100,
        cached_input_tokens=20_000,
        cache_write_tokens=2_000,
        cache_write_1h_tokens=3_000,
        output_tokens=500,
    )
    assert (
        compute_cost("anthropic", "claude-sonnet-4-6", swapped).cost_usd
        == Decimal("0.03705") + 1000 * (Decimal(6) - Decimal("3.75")) / M
    )


def test_gemini_thoughts_and_long_context_tier() -> None:
    # 2.5-flash: output = candidates 200 + thoughts 800
    u = Usage(input_tokens=1000, output_tokens=1000, reasoning_tokens=800)
    assert compute_cost("gemini", "gemini-2.5-flash", u).cost_usd == Decimal("0.0028")
    # 2.5-pro above 200k: the WHOLE request at the higher tier
    u = Usage(
        input_tokens=250_000, cached_input_tokens=50_000, output_tokens=4000, reasoning_tokens=3000
    )
    hand = (200_000 * Decimal("2.50") + 50_000 * Decimal("0.25") + 4000 * Decimal(15)) / M
    assert hand == Decimal("0.5725")
    assert close(compute_cost("gemini", "models/gemini-2.5-pro", u).cost_usd, hand)
    # exactly at the threshold is not "above" for Gemini
    u = Usage(input_tokens=200_000, output_tokens=0)
    assert compute_cost("gemini", "gemini-2.5-pro", u).cost_usd == Decimal("0.25")
    u = Usage(input_tokens=200_001, output_tokens=0)
    assert compute_cost("gemini", "gemini-2.5-pro", u).cost_usd == 200_001 * Decimal("2.5") / M


def test_xai_reported_ticks_preferred_and_token_fallback() -> None:
    ticks = 37_756_000
    u = Usage(
        input_tokens=1000,
        output_tokens=500,
        reasoning_tokens=400,
        provider_cost_usd=Decimal(ticks) / Decimal(10**10),
    )
    r = compute_cost("xai", "grok-4.3", u)
    assert r.source == "provider" and r.cost_usd == Decimal("0.0037756")
    # no ticks: reasoning (reported outside completion, folded in by the provider module)
    u = Usage(
        input_tokens=1000, cached_input_tokens=200, output_tokens=100 + 400, reasoning_tokens=400
    )
    r = compute_cost("xai", "grok-4.20", u)  # alias of grok-4.3
    assert r.source == "computed" and r.cost_usd == Decimal("0.00229")
    # xAI's tier starts AT the threshold (inclusive)
    u = Usage(input_tokens=200_000, output_tokens=10)
    assert compute_cost("xai", "grok-4.3", u).cost_usd == Decimal("0.50005")


def test_tavily_credits() -> None:
    assert compute_cost("tavily", "advanced", Usage(search_credits=2)).cost_usd == Decimal("0.016")
    # usage not reported: the depth's credits per request
    assert compute_cost("tavily", "advanced", Usage()).cost_usd == Decimal("0.016")
    assert compute_cost("tavily", "basic", Usage(search_credits=1)).cost_usd == Decimal("0.008")
    assert estimate_cost("tavily", "advanced", 0, 0) == Decimal("0.016")


def test_service_tiers() -> None:
    u = Usage(input_tokens=1_000_000, output_tokens=0)
    assert compute_cost("openai", "gpt-5", u, service_tier="batch").cost_usd == Decimal("0.625")
    assert compute_cost("openai", "gpt-5", u, service_tier="flex").cost_usd == Decimal("0.625")
    assert compute_cost("openai", "gpt-5", u, service_tier="default").cost_usd == Decimal("1.25")
    u = Usage(input_tokens=1000, output_tokens=1000)
    assert compute_cost("openai", "gpt-5", u, service_tier="priority").cost_usd == Decimal("0.0225")


def test_every_table_model_is_priced() -> None:
    expected = [
        "openai:gpt-4o", "openai:gpt-4o-mini", "openai:gpt-4.1", "openai:gpt-4.1-mini",
        "openai:gpt-5", "openai:gpt-5-mini", "openai:gpt-5.4", "openai:gpt-5.5", "openai:o3",
        "openai:o4-mini", "anthropic:claude-haiku-4-5", "anthropic:claude-sonnet-4-5",
        "anthropic:claude-sonnet-4-6", "anthropic:claude-opus-4-5", "anthropic:claude-opus-4-6",
        "anthropic:claude-opus-4-7", "gemini:gemini-2.5-pro", "gemini:gemini-2.5-flash",
        "gemini:gemini-2.5-flash-lite", "gemini:gemini-3-flash-preview",
        "gemini:gemini-3.1-pro-preview", "xai:grok-4.3", "xai:grok-code-fast-1",
        "tavily:basic", "tavily:advanced",
    ]  # fmt: skip
    for key in expected:
        provider, _, model = key.partition(":")
        entry = price_for(provider, model)
        assert entry is not None, key
        assert entry["key"] == key
    data = json.loads(pricing.BUILTIN_PATH.read_text())
    assert data["version"] and data["sources"]
    listed = {m["id"]: m for m in pricing.list_models()}
    assert set(expected) <= set(listed)
    assert listed["openai:gpt-4o-mini"]["input_per_1m"] == "0.15"
    p = price_for("openai", "gpt-5.4")
    assert p is not None and p["long_context"]["threshold"] == 272_000


def test_unknown_model_null_cost_and_one_warning(recwarn: pytest.WarningsRecorder) -> None:
    u = Usage(input_tokens=10, output_tokens=10)
    r1 = compute_cost("openai", "gpt-unpriced-xyz", u)
    r2 = compute_cost("openai", "gpt-unpriced-xyz", u)
    assert r1.cost_usd is None and r1.source == "unknown" and r2.cost_usd is None
    w = [x for x in recwarn if issubclass(x.category, pricing.UnpricedModelWarning)]
    assert len(w) == 1 and "gpt-unpriced-xyz" in str(w[0].message)
    assert estimate_cost("openai", "gpt-unpriced-xyz", 10, 10) is None


def test_local_models_free_unless_priced(byok_home: Path) -> None:
    u = Usage(input_tokens=1000, output_tokens=1000)
    r = compute_cost("local", "smollm2", u)
    assert r.cost_usd == 0 and r.source == "local"
    save_settings(
        Settings(
            endpoints={"ollama": Endpoint(base_url="http://127.0.0.1:11434/v1")},
            local_prices={"local:big": {"input": "0.10", "output": "0.20"}},
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a keyless endpoint is local: no "unpriced" warning
        assert compute_cost("ollama", "llama3.2", u).cost_usd == 0
    r = compute_cost("local", "big", u)
    assert r.cost_usd == Decimal("0.0003") and r.source == "local"
    assert estimate_cost("local", "smollm2", 100, 100) == 0


def test_estimate_is_an_upper_bound() -> None:
    est = estimate_cost("anthropic", "claude-sonnet-4-6", 10_000, 1000)
    assert est == (10_000 * Decimal(3) + 1000 * Decimal(15)) / M
    cached = compute_cost(
        "anthropic",
        "claude-sonnet-4-6",
        Usage(input_tokens=10_000, cached_input_tokens=9000, output_tokens=1000),
    )
    assert est is not None and cached.cost_usd is not None and cached.cost_usd < est
    assert estimate_cost(
        "anthropic", "claude-sonnet-4-6", 10_000, 0, cache_write_1h=True
    ) == Decimal("0.06")
    # long context raises the whole estimate
    assert estimate_cost("gemini", "gemini-2.5-pro", 300_000, 0) == Decimal("0.75")
    assert pricing.estimate_prompt_tokens("x" * 100) >= 25


def test_user_override_and_bad_file_changes_nothing(byok_home: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"version": "2027-01-01", "models": {
        "openai:gpt-4o-mini": {"input": "0.10", "output": "0.50"},
        "mistral:small": {"input": "0.20", "output": "0.60"},
    }}))  # fmt: skip
    assert update_prices(good) == {"version": "2027-01-01", "models": 2}
    r = compute_cost("openai", "gpt-4o-mini", Usage(input_tokens=1000, output_tokens=1000))
    assert r.cost_usd == Decimal("0.0006") and r.price_version == "2026-11-27+user:2027-01-01"
    assert compute_cost("mistral", "small", Usage(input_tokens=1000)).cost_usd == Decimal("0.0002")
    before = (byok_home / "prices.json").read_bytes()

    def one(entry: object, key: str = "openai:a") -> str:
        return json.dumps({"version": "x", "models": {key: entry}})

    bads = {
        "notjson.json": "{nope",
        "noversion.json": json.dumps({"models": {}}),
        "float.json": one({"input": 0.1, "output": "1"}),
        "negative.json": one({"input": "-1", "output": "1"}),
        "badkey.json": one({"input": "1", "output": "1"}, key="nocolon"),
        "typo.json": one({"input": "1", "ouput": "1"}),
        "tier.json": one({"input": "1", "output": "1", "long_context": {"input": "2"}}),
        "nan.json": one({"input": "NaN", "output": "1"}),
    }
    for name, text in bads.items():
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(ConfigError) as err:
            update_prices(p)
        assert "\n" not in str(err.value)
        assert (byok_home / "prices.json").read_bytes() == before, name
    with pytest.raises(ConfigError):
        update_prices(tmp_path / "missing.json")
    assert compute_cost(
        "openai", "gpt-4o-mini", Usage(input_tokens=1000, output_tokens=1000)
    ).cost_usd == Decimal("0.0006")


def test_openai_prompts_are_counted_exactly_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import tiktoken

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a budget estimate tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))  # empty cache
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # nothing loaded in this process
    from jupyter_byok.pricing import tokens

    monkeypatch.setattr(tokens, "_ENCODINGS", {})  # nothing loaded by us either
    text = "Summarise the quarterly report in three bullet points, please."
    for model, name in (("gpt-4o-mini", "o200k_base"), ("gpt-4", "cl100k_base")):
        got = pricing.estimate_prompt_tokens(text, provider="openai", model=model)
        exact = len(tiktoken.get_encoding(name).encode(text))
        assert got == exact + 8 and exact < len(text) / 3  # real tokens, not the 2-char bound
    # a model tiktoken does not know yet counts with the current vocabulary
    assert pricing.estimate_prompt_tokens(text, provider="openai", model="gpt-9-preview") == (
        len(tiktoken.get_encoding("o200k_base").encode(text)) + 8
    )
    # special-token text in a prompt is counted as text, never refused
    assert pricing.estimate_prompt_tokens("<|endoftext|>", provider="openai", model="gpt-4o") > 8
    # a model on a vocabulary that is not shipped (tiktoken would download it): the bound
    assert (
        pricing.estimate_prompt_tokens("x" * 100, provider="openai", model="text-davinci-003") == 58
    )
    # other providers: the documented conservative bound
    assert pricing.estimate_prompt_tokens("x" * 100, provider="anthropic") == 58
