"""Issue 15 §7 outside the server: the Python API refuses what the server refuses, times
out of the calendar's range are one line, and short secrets are masked as words."""

from __future__ import annotations

import logging
import math
import subprocess
import sys

import pytest

import jupyter_byok as byok
from jupyter_byok.errors import ByokError, ConfigError, InvalidInputError
from jupyter_byok.ledger import parse_time
from jupyter_byok.redact import MASK, Secret, redact
from jupyter_byok.testing import FakeProviders
from jupyter_byok.validate import MAX_DEPTH, check_params, loads

KEY = "sk-proj-INPROCESS" + "i" * 40 + "T3BlbkFJ" + "p" * 20
MODEL = "openai:gpt-4o-mini"


@pytest.fixture
def inprocess(monkeypatch: pytest.MonkeyPatch, fake_providers: FakeProviders) -> FakeProviders:
    """Calls run in this process (no Jupyter server is looked for)."""
    from jupyter_byok import client

    monkeypatch.setattr(client, "_client", client.Client("inprocess"))
    return fake_providers


# ------------------------------------------------------------------- Python API
BAD_KWARGS = (
    {"max_tokens": math.nan},
    {"max_tokens": math.inf},
    {"max_tokens": -5},
    {"max_tokens": 1e30},
    {"max_tokens": "300"},
    {"temperature": math.nan},
    {"temperature": 7},
    {"top_p": -math.inf},
    {"stop": [None]},
    {"response_format": {"x": math.nan}},
    {"contents": [{"parts": []}]},
    {"stream": True},
    {"messages": []},
)


@pytest.mark.parametrize("kwargs", BAD_KWARGS, ids=[str(k) for k in BAD_KWARGS])
def test_python_api_refuses_bad_params_before_sending(
    inprocess: FakeProviders, kwargs: dict[str, object]
) -> None:
    with pytest.raises(InvalidInputError) as err:
        byok.complete(MODEL, "hello", key=KEY, **kwargs)  # type: ignore[arg-type]
    name = next(iter(kwargs))
    assert f"'{name}" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, ByokError)
    with pytest.raises(InvalidInputError):
        list(byok.stream(MODEL, "hello", key=KEY, **kwargs))  # type: ignore[arg-type]
    assert inprocess.requests == []


async def test_async_api_refuses_too(inprocess: FakeProviders) -> None:
    with pytest.raises(InvalidInputError, match="max_tokens"):
        await byok.acomplete(MODEL, "hello", key=KEY, max_tokens=math.nan)
    with pytest.raises(InvalidInputError, match="'colour'"):
        await byok.asearch("jupyter", key="tvly-" + "k" * 30, colour="red")
    assert inprocess.requests == []


def test_python_api_sends_normalised_params(inprocess: FakeProviders) -> None:
    answer = byok.complete(MODEL, "hello", key=KEY, max_tokens=300.0, temperature=0)
    assert answer.text == "Echo: hello"
    sent = inprocess.requests_for("openai")[-1].body
    assert sent["max_completion_tokens"] == 300 and type(sent["max_completion_tokens"]) is int


def test_search_options_are_typed(inprocess: FakeProviders) -> None:
    key = "tvly-" + "k" * 30
    with pytest.raises(InvalidInputError, match="'max_results'"):
        byok.search("jupyter", key=key, max_results="3")
    assert inprocess.requests == []
    result = byok.search("jupyter", key=key, max_results=2)
    assert len(result.results) == 2


# ------------------------------------------------------------------ the checker
def test_check_params_ranges_and_names() -> None:
    assert check_params(None) == {} and check_params({}) == {}
    assert check_params({"max_tokens": 10, "temperature": 1.5, "x-y.z": [1, {"a": None}]}) == {
        "max_tokens": 10,
        "temperature": 1.5,
        "x-y.z": [1, {"a": None}],
    }
    for bad in ({"max_tokens": True}, {"top_k": 0.5}, {"bad name": 1}, {"seed": 2**64}, [1]):
        with pytest.raises(InvalidInputError):
            check_params(bad)


def test_loads_limits_depth_before_parsing() -> None:
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads(ok) is not None
    for levels in (MAX_DEPTH + 1, 5_000, 100_000, 1_000_000):
        with pytest.raises(InvalidInputError, match="nested"):
            loads("[" * levels + "]" * levels)
    # brackets inside strings are text, not nesting
    assert loads('{"code": "' + "[" * 5_000 + '"}') == {"code": "[" * 5_000}
    for token in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(InvalidInputError, match="not valid JSON"):
            loads(f'{{"a": {token}}}')
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        loads(b"\xff\xfe")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        loads("1" * 5_000)  # an integer longer than Python converts


# ----------------------------------------------------------------------- times
@pytest.mark.parametrize(
    "value",
    ["99999999999d", "999999999w", "99999999999999h", "9" * 5000 + "m", math.nan, math.inf, 1e300],
)
def test_times_out_of_range_are_one_config_error(value: object) -> None:
    with pytest.raises(ConfigError, match="out of range") as err:
        parse_time(value)
    assert len(str(err.value)) < 200


def test_cli_since_out_of_range_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jupyter_byok.cli", "usage", "--since", "99999999999d"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: the time '99999999999d' is out of range: use an ISO date such as 2026-11-01, "
        "'today', 'month' or a span such as '7d'"
    ]


# ----------------------------------------------------------------- short secrets
def test_short_secrets_are_masked_where_they_stand_alone() -> None:
    for short in ("Zq7", "k3Y-9x", "a1", "pXw_41Q"):
        Secret(short)
        for text in (
            f"Incorrect API key provided: {short}.",
            f"key={short}&x=1",
            f"'{short}'",
            f"Bearer {short}",
            f"({short})",
            f"{short}\n",
        ):
            assert short not in redact(text), text
            assert MASK in redact(text)
        # a word that merely contains it is left alone (it does not reveal it)
        for text in (f"x{short}", f"{short}x", f"{short}-more", f"{short}.more", f"x_{short}"):
            assert redact(text) == text, text
    # ordinary text around a short secret is untouched
    assert redact("Zq7 costs 0.50 USD") == f"{MASK} costs 0.50 USD"


def test_short_secrets_in_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    Secret("hX2")
    err = ByokError("the provider said: key hX2 is invalid")
    assert str(err) == f"the provider said: key {MASK} is invalid"
    from jupyter_byok.redact import install_log_filter

    install_log_filter()
    caplog.set_level(logging.INFO)
    logging.getLogger("httpx").info("sent key %s", "hX2")
    assert "hX2" not in caplog.text and MASK in caplog.text
