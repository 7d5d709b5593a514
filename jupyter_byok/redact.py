"""Masking of secrets in logs, error messages and outputs.

Invariant: every secret this process has held as a :class:`Secret` is masked by
:func:`redact`, and so is every string shaped like a provider key (the scanner
patterns of gitleaks and trufflehog, the key formats providers publish).
The patterns are used for masking only, never to reject a key a user types.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any, NoReturn

__all__ = ["KEY_PATTERNS", "RedactingFilter", "Secret", "install_log_filter", "redact"]

MASK = "[redacted]"

#: Provider key shapes (for masking and scanning, not for validation).
KEY_PATTERNS: dict[str, re.Pattern[str]] = {
    "openai": re.compile(
        r"sk-(?:proj|svcacct|admin|service)-[A-Za-z0-9_-]{20,}"
        r"|sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}"
        r"|sk-[A-Za-z0-9_-]*T3BlbkFJ[A-Za-z0-9_-]+"
    ),
    "anthropic": re.compile(r"sk-ant-(?:api03|admin01|oat01)-[\w-]{20,}"),
    "gemini": re.compile(r"AIza[\w-]{35}|AQ\.[A-Za-z0-9_-]{20,}"),
    "xai": re.compile(r"xai-[0-9A-Za-z_]{40,}"),
    "tavily": re.compile(r"tvly-(?:dev-|prod-)?[A-Za-z0-9_-]{16,}"),
}
_SHAPES = re.compile("|".join(f"(?:{p.pattern})" for p in KEY_PATTERNS.values()))

_known: set[str] = set()
_known_re: re.Pattern[str] | None = None
_lock = threading.Lock()


#: A secret at least this long is masked wherever it appears, even inside a longer word.
#: A shorter one (a test key, a short proxy token) is masked where it stands as a token
#: of its own, so that a key "abc" masks "key abc.", "=abc&", "'abc'" and "Bearer abc",
#: but not "abcdef", "tabc", "x-abc" or "abc.d": masking it inside other words would
#: garble text for nothing (a word that merely contains it does not reveal it).
WHOLE_WORD_BELOW = 8
#: key characters: a short secret touching one of these is part of a longer token
_KEYCHARS = r"A-Za-z0-9_\-"


def _pattern(value: str) -> str:
    if len(value) >= WHOLE_WORD_BELOW:
        return re.escape(value)
    # not preceded by a key character or a dot; not followed by one, nor by a dot that
    # continues the token ("abc." ending a sentence is masked, "abc.def" is not)
    return rf"(?<![{_KEYCHARS}.]){re.escape(value)}(?![{_KEYCHARS}]|\.[{_KEYCHARS}])"


def _remember(value: str) -> None:
    """Register ``value`` for :func:`redact`, whatever its length (an empty one excepted)."""
    global _known_re
    if not value or value in _known:
        return
    with _lock:
        _known.add(value)
        ordered = sorted(_known, key=len, reverse=True)  # a longer secret is masked whole
        _known_re = re.compile("|".join(_pattern(v) for v in ordered))


@contextlib.contextmanager
def isolated_registry() -> Iterator[None]:
    """Secrets registered inside the block are forgotten when it ends (test isolation:
    a test that registers random values, some of one character, must not mask another
    test's text)."""
    global _known_re
    with _lock:
        before, pattern = set(_known), _known_re
    try:
        yield
    finally:
        with _lock:
            _known.clear()
            _known.update(before)
            _known_re = pattern


def redact(text: str) -> str:
    """Return ``text`` with every known secret and every key-shaped string masked."""
    if not text:
        return text
    known = _known_re
    if known is not None:
        text = known.sub(MASK, text)
    return _SHAPES.sub(MASK, text)


class Secret:
    """A secret value that does not leak by accident.

    ``repr``, ``str`` and ``format`` show a mask; pickling and copying to JSON refuse.
    The value is only available through :meth:`reveal`, at the place that sends it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = value
        _remember(value)

    def reveal(self) -> str:
        return self._value

    @property
    def last4(self) -> str:
        return self._value[-4:] if len(self._value) >= 12 else ""

    def __repr__(self) -> str:
        return f"Secret('…{self.last4}')" if self.last4 else "Secret('****')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")

    def __eq__(self, other: object) -> bool:
        import hmac

        return isinstance(other, Secret) and hmac.compare_digest(
            self._value.encode(), other._value.encode()
        )

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the formatted message and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is not our business to fix
            return True
        clean = redact(message)
        if clean != message or record.args:
            record.msg = clean
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()
_LOGGERS = (
    "",
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "tornado",
    "tornado.access",
    "tornado.application",
    "tornado.general",
    "ServerApp",
    "jupyter_byok",
)


_factory_installed = False


def _install_record_factory() -> None:
    """Mask every log record when it is created, whichever logger makes it.

    Logger filters do not see records that propagate from child loggers (``httpcore.http3``,
    ``jupyter_byok.keystore``, any library), and handler filters miss handlers added after
    installation (Jupyter configures its handlers late). A record factory sees them all.
    """
    global _factory_installed
    with _lock:
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _FILTER.filter(record)
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True


def install_log_filter(extra: tuple[str, ...] = ()) -> RedactingFilter:
    """Mask secrets in every log record of this process.

    A record factory masks each record as it is created (every logger, every handler,
    also those added later); the filter also goes on the root logger, its handlers and
    the HTTP/server loggers. Calling this twice is harmless.
    """
    _install_record_factory()
    for name in (*_LOGGERS, *extra):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
    return _FILTER


def mask_value(value: Any) -> Any:
    """Redact strings inside a JSON-like value (for output metadata and REST replies)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: mask_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_value(v) for v in value]
    return value
