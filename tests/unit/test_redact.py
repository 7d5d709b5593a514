"""Redaction: a true/false positive corpus per provider (security.md §7 T12, §8 G6), the
``Secret`` wrapper, and the logging filter on every logger (root, httpx, httpcore and
their children, tornado, ours) including handlers added after installation."""

from __future__ import annotations

import copy
import io
import json
import logging
import pickle
from collections.abc import Iterator

import pytest

from jupyter_byok import redact as redact_module
from jupyter_byok.errors import ByokError, KeystoreError
from jupyter_byok.redact import (
    KEY_PATTERNS,
    MASK,
    RedactingFilter,
    Secret,
    install_log_filter,
    mask_value,
    redact,
)

A40 = "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7dEf0h"  # 40 mixed characters

# Each true positive is a key as it may appear in text; the key itself is the part that
# must disappear entirely.
TRUE_POSITIVES: dict[str, list[str]] = {
    "openai": [
        "sk-proj-" + A40 + "T3BlbkFJ" + A40[:20],
        "sk-svcacct-" + A40 + "_-" + A40[:10],
        "sk-admin-" + A40[:30],
        "sk-" + A40[:20] + "T3BlbkFJ" + A40[20:40],  # legacy 48-character key
        "sk-None-" + A40[:12] + "T3BlbkFJ" + A40[:12],
        "sk-proj-" + "a1B2-c3D4_e5F6g7H8i9J0",
    ],
    "anthropic": [
        "sk-ant-api03-" + A40 + A40 + "-abcdefAA",
        "sk-ant-admin01-" + A40 + "AA",
        "sk-ant-oat01-" + A40[:25],
        "sk-ant-api03-" + "x_y-z" * 5,
        "sk-ant-api03-" + A40[:20],
    ],
    "gemini": [
        "AIza" + A40[:35],
        "AIzaSy" + "B-" * 16 + "_",
        "AIza" + "0" * 35,
        "AQ." + A40 + A40[:13],
        "AQ.Ab8RN6" + A40[:30],
        "AQ." + "x-Y_" * 5,
    ],
    "xai": [
        "xai-" + A40 + A40,
        "xai-" + A40,
        "xai-" + "0123456789" * 8,
        "xai-" + A40 + "_" + A40[:20],
        "xai-" + "Z" * 64,
    ],
    "tavily": [
        "tvly-" + A40[:32],
        "tvly-dev-" + A40[:32],
        "tvly-prod-" + A40[:24],
        "tvly-" + "a_b-" * 4,
        "tvly-" + "0" * 16,
    ],
}

# Look-alikes that are not keys: redaction leaves them exactly as they are.
FALSE_POSITIVES: dict[str, list[str]] = {
    "openai": [
        "sk-proj-short123",  # far too short
        "sklearn.linear_model.LogisticRegression",
        "risk-free rate of 4.2%",
        "sk-" + A40[:19],  # plain sk- without the T3BlbkFJ marker
        "T3BlbkFJ is base64 for OpenAI",  # the marker alone
        "model gpt-4o-mini at https://api.openai.com/v1/chat/completions",
    ],
    "anthropic": [
        "sk-ant-api03-tooShort",
        "sk-ant-",
        "sk-antelope-migration-notes",
        "ant-api03-" + A40,  # no sk- prefix
        "claude-sonnet-4-5 via https://api.anthropic.com/v1/messages",
    ],
    "gemini": [
        "AIza" + A40[:20],  # too short for an AIza key
        "aiza" + A40[:35],  # case matters
        "AQ.short-token",
        "AQ" + A40,  # no dot
        "see FAQ.md and FAQ.html",
        "gemini-2.5-flash at generativelanguage.googleapis.com",
    ],
    "xai": [
        "xai-grok-beta",
        "xai-" + A40[:39],  # one character short
        "XAI-" + A40 + A40,  # case matters
        "xai_api_key",
        "grok-4-0709 via https://api.x.ai/v1",
    ],
    "tavily": [
        "tvly-short",
        "tvly-",
        "tavily-python 0.5.0",
        "TVLY-" + A40[:32],  # case matters
        "tvly " + A40[:32],  # a space, not a dash
    ],
}

GENERIC_FALSE_POSITIVES = [
    "550e8400-e29b-41d4-a716-446655440000",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "aGVsbG8gd29ybGQgdGhpcyBpcyBub3QgYSBrZXk=",
    "https://generativelanguage.googleapis.com/v1beta/models?pageSize=50",
    "jupyter byok keys set openai --name work",
    "",
]


def _cases(table: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(provider, text) for provider, items in table.items() for text in items]


def test_corpus_has_enough_cases_per_provider() -> None:
    assert set(TRUE_POSITIVES) == set(FALSE_POSITIVES) == set(KEY_PATTERNS)
    for provider in KEY_PATTERNS:
        assert len(TRUE_POSITIVES[provider]) >= 5, provider
        assert len(FALSE_POSITIVES[provider]) >= 5, provider
    assert any(k.startswith("AIza") for k in TRUE_POSITIVES["gemini"])
    assert any(k.startswith("AQ.") for k in TRUE_POSITIVES["gemini"])


@pytest.mark.parametrize(("provider", "key"), _cases(TRUE_POSITIVES))
def test_true_positive_is_masked(provider: str, key: str) -> None:
    assert KEY_PATTERNS[provider].fullmatch(key), "the corpus key matches its own pattern"
    for template in (
        "{}",
        "Authorization: Bearer {}",
        "x-api-key: {}",
        '{{"api_key": "{}", "n": 1}}',
        "GET https://host/v1/models?key={}&alt=sse",
        "error: key '{}' was refused",
        "line one\n{}\nline three",
    ):
        text = template.format(key)
        out = redact(text)
        assert key not in out, (template, out)
        assert MASK in out
        # The surrounding text survives.
        assert out == template.format(MASK), (template, out)


@pytest.mark.parametrize(
    ("provider", "text"),
    [*_cases(FALSE_POSITIVES), *(("generic", t) for t in GENERIC_FALSE_POSITIVES)],
)
def test_false_positive_is_left_alone(
    provider: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the key shapes are under test here: forget the secrets other tests registered
    # (random Hypothesis values would otherwise mask arbitrary text).
    monkeypatch.setattr(redact_module, "_known_re", None)
    assert redact(text) == text, redact(text)
    assert redact(f"before {text} after") == f"before {text} after"


def test_known_secrets_are_masked_whatever_their_shape() -> None:
    token = "mcp-token-4f1e2d3c2b1a"  # not shaped like any provider key
    assert redact(f"token={token}") == f"token={token}"
    Secret(token)
    assert redact(f"token={token};") == f"token={MASK};"
    # A longer secret containing a shorter one is masked whole.
    Secret(token + "-extended")
    assert redact(f"{token}-extended!") == f"{MASK}!"
    # A short secret is masked too, where it stands as a token of its own (only there:
    # masking it inside longer words would garble text; tests/test_redact_short.py).
    Secret("abc")
    assert redact("abc abcdef") == f"{MASK} abcdef"


def test_mask_value_walks_json() -> None:
    key = TRUE_POSITIVES["openai"][0]
    value = {"a": [key, 1, {"b": key}], "c": None, "d": (key,)}
    assert mask_value(value) == {"a": [MASK, 1, {"b": MASK}], "c": None, "d": [MASK]}


def test_error_messages_are_redacted_and_one_line() -> None:
    key = TRUE_POSITIVES["anthropic"][0]
    err = KeystoreError(f"provider said:\n  bad key {key}\n  (401)")
    assert str(err) == f"provider said: bad key {MASK} (401)"
    assert key not in repr(err)
    assert isinstance(err, ByokError)


# --------------------------------------------------------------------------- Secret
def test_secret_never_shows_its_value() -> None:
    value = "sk-proj-SECRETWRAPPERTESTVALUEQQQQQQQQQQQQQ"
    secret = Secret(value)
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>60}",
        format(secret, ""),
        "%s" % secret,  # noqa: UP031
        "%r" % (secret,),  # noqa: UP031
        "{}".format(secret),  # noqa: UP032
        repr([secret]),
        repr({"k": secret}),
    ]
    for text in shown:
        assert value not in text and value[:-4] not in text
        assert "Secret('…QQQQ')" in text
    assert repr(secret) == "Secret('…QQQQ')"
    assert repr(Secret("short")) == "Secret('****')"
    with pytest.raises(TypeError) as err:
        pickle.dumps(secret)
    assert value not in str(err.value)
    with pytest.raises(TypeError):
        copy.copy(secret)
    with pytest.raises(TypeError) as err:
        json.dumps({"key": secret})
    assert value not in str(err.value)
    assert secret.reveal() == value
    assert secret == Secret(value) and secret != Secret(value + "x") and secret != value
    assert hash(secret) == hash(Secret(value))
    assert bool(secret) and not bool(Secret(""))
    assert Secret(secret).reveal() == value
    assert not hasattr(secret, "__dict__")


# ------------------------------------------------------------------------- logging
@pytest.fixture
def late_handler() -> Iterator[io.StringIO]:
    """A root handler added *after* the filter was installed (as Jupyter does)."""
    install_log_filter()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s|%(message)s"))
    root = logging.getLogger()
    old_level = root.level
    # First in line, so no filter on pytest's own handlers can mask the record for it.
    root.handlers.insert(0, handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


LOGGERS = [
    "",
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.http3",  # a child nobody listed
    "httpx._client",
    "tornado.access",
    "tornado.application",
    "ServerApp",
    "jupyter_byok",
    "jupyter_byok.keystore",
    "some.library.module",
]


@pytest.mark.parametrize("name", LOGGERS)
def test_log_records_are_masked_on_every_logger(
    name: str, late_handler: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    shaped = TRUE_POSITIVES["gemini"][0]
    known = "plain-known-secret-" + name.replace(".", "-") + "-zz"
    Secret(known)
    logger = logging.getLogger(name)
    logger.debug("HTTP Request: GET https://host/v1?key=%s %s", shaped, "ok")
    logger.info("known %s and mapping %(x)s", {"x": known})
    logger.warning("dict arg %(k)s", {"k": known})
    try:
        raise RuntimeError(f"upstream refused {known} / {shaped}")
    except RuntimeError:
        logger.exception("failed with %s", known)
    logger.error("stack", stack_info=True, extra={"note": known})
    texts = [late_handler.getvalue(), caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    texts += [r.exc_text or "" for r in caplog.records]
    for text in texts:
        assert shaped not in text and known not in text
    assert late_handler.getvalue().count(MASK) >= 4
    assert "RuntimeError: upstream refused" in late_handler.getvalue()


def test_filter_on_a_foreign_handler_and_broken_records() -> None:
    key = TRUE_POSITIVES["xai"][0]
    f = RedactingFilter()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key=%s", (key,), None)
    assert f.filter(record) is True
    assert record.getMessage() == f"key={MASK}"
    # A record whose format string does not match its arguments is passed on untouched.
    broken = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %s", ("one",), None)
    assert f.filter(broken) is True
    # Installing twice adds the filter once.
    install_log_filter()
    filt = install_log_filter()
    assert logging.getLogger("httpx").filters.count(filt) == 1
    assert logging.getLogger().filters.count(filt) == 1
