"""Key origins: a key goes only to the origin (scheme, host, port) it was stored for.

Invariants:

* Every key the keystore or the environment hands out is a :class:`BoundSecret`: it
  carries the base URL its calls go to and that URL's origin. Dispatch sends a bound key
  only to a URL of that origin (:func:`check_destination`), whatever asked for the call.
* A base URL users give (an endpoint, ``keys set --base-url``) is ``https``, or ``http``
  for a server on this machine (loopback), or ``http`` elsewhere only when explicitly
  allowed (``--allow-http``, ``"allow_http": true``); it carries no credentials, query or
  fragment.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import NamedTuple
from urllib.parse import urlsplit

from .errors import ConfigError, KeyOriginError
from .redact import Secret

__all__ = [
    "BoundSecret",
    "Origin",
    "check_base_url",
    "check_destination",
    "is_loopback",
    "origin_of",
]

DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if DEFAULT_PORTS.get(self.scheme) == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}"


def _split(url: str, what: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, rest)`` of an http(s) URL, or a one-line ConfigError."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{what} must be an http(s) URL such as https://api.example.com/v1")
    return _split_text(url, what)


@functools.lru_cache(maxsize=512)
def _split_text(url: str, what: str) -> tuple[str, str, int, str]:
    # Every provider request checks its URL's origin: the few distinct URLs a process
    # uses are parsed once (a parse is ~70 µs, mostly the character check below).
    text = url.strip()
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise ConfigError(f"{what} {text!r} has spaces or control characters: write it again")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a valid URL (check the host and port)") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(
            f"{what} {text!r} must start with https:// (or http:// for a server on this machine)"
        )
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise ConfigError(f"{what} {text!r} has no host: use e.g. https://api.example.com/v1")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{what} must not carry credentials (user:password@): store the key with "
            "`jupyter byok keys set` instead"
        )
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ConfigError(f"{what} {text!r} must not have a query (?) or fragment (#)")
    return scheme, host, port or DEFAULT_PORTS[scheme], parts.path


def origin_of(url: str, what: str = "base URL") -> Origin:
    """The (scheme, host, port) of an http(s) URL, default ports made explicit."""
    scheme, host, port, _ = _split(url, what)
    return Origin(scheme, host, port)


def is_loopback(host: str) -> bool:
    """A host name or address that stays on this machine."""
    host = host.lower().strip("[]").rstrip(".")
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str, *, allow_http: bool = False, what: str = "base URL") -> str:
    """The base URL, cleaned (no trailing ``/``), or a one-line :class:`ConfigError`.

    ``http`` is accepted for loopback hosts, and elsewhere only with ``allow_http``: a key
    sent over plain HTTP can be read by anyone on the network path.
    """
    scheme, host, _, _ = _split(url, what)
    if scheme == "http" and not allow_http and not is_loopback(host):
        raise ConfigError(
            f"{what} {url.strip()!r} uses plain http to another machine, which would send "
            "the key unencrypted: use https://, or allow it explicitly with --allow-http "
            '("allow_http": true)'
        )
    return url.strip().rstrip("/")


class BoundSecret(Secret):
    """A key with the base URL its calls go to; it may be sent to that URL's origin only.

    ``source`` says where the key came from (``keystore`` or ``environment``), for messages.
    """

    __slots__ = ("base_url", "origin", "source")

    def __init__(self, value: str | Secret, base_url: str, source: str = "keystore") -> None:
        super().__init__(value.reveal() if isinstance(value, Secret) else value)
        self.base_url = base_url.rstrip("/")
        self.origin = origin_of(self.base_url)
        self.source = source


def check_destination(key: Secret | None, url: str, label: str) -> None:
    """Refuse to send a bound key to any origin but its own (before any byte is sent)."""
    if not isinstance(key, BoundSecret):
        return
    try:
        target = origin_of(url, "request URL")
    except ConfigError:
        target = None
    if target != key.origin:
        where = str(target) if target is not None else "an invalid URL"
        raise KeyOriginError(
            f"refused to send the {label} key to {where}: it is bound to {key.origin}; "
            f"store a key for that origin with `jupyter byok keys set`"
        )
