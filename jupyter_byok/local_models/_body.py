"""The body of a model download, read with the standard library's ``http.client``.

huggingface_hub's session (httpx2 on h11) copies every byte of a response three times in
Python (the socket read, h11's receive buffer, the data event) in 64 KiB pieces; for a
multi-gigabyte model that is most of a pull's time. ``http.client`` reads a body with
``readinto`` straight into a block of ours: one copy, in C. So a pull opens the body here
and reads it in 4 MiB blocks, and everything else stays with huggingface_hub:

* only a ``200``/``206`` answer is read here. Any other status (an error, a rate limit, a
  redirect loop) returns ``None`` and the caller repeats the request through
  huggingface_hub's session, whose errors and back-off the user gets as before;
* the same TLS trust as that session (its library's ``create_ssl_context``: certifi, or
  ``SSL_CERT_FILE``/``SSL_CERT_DIR``), and the same proxies (``urllib.request.getproxies``,
  which httpx reads too, and ``NO_PROXY``). A proxy this module does not speak (not
  ``http://``) also returns ``None``;
* redirects are followed (at most 5), and the ``Authorization`` header is dropped when one
  leaves the host, as huggingface_hub does.
"""

from __future__ import annotations

import base64
import functools
import http.client
import importlib
import ssl
import urllib.request
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

__all__ = ["Body", "BodyBroken", "open_body"]

#: what a dropped or broken connection raises in ``http.client``
_NETWORK = (OSError, http.client.HTTPException)
#: bytes per ``readinto``: progress and cancellation are checked this often
_STEP = 1024**2
_REDIRECTS = 5


class BodyBroken(Exception):
    """The connection failed while sending the request or reading the body (the caller
    resumes from what it wrote, with a ``Range``); the cause is chained."""


class Body:
    """An open ``200``/``206`` answer; iterate :meth:`chunks`, then close."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse):
        self._conn = conn
        self.response = response
        self.status = response.status

    def chunks(self, size: int = _STEP) -> Iterator[memoryview]:
        """The body, ``size`` bytes at a time (the last chunk may be shorter), each read
        straight into a buffer of its own that is never reused: a chunk may be handed to
        another thread (the hasher) as it is."""
        while True:
            view = memoryview(bytearray(size))
            try:
                got = self.response.readinto(view)
            except _NETWORK as exc:
                raise BodyBroken(f"{type(exc).__name__}: {exc}") from exc
            if got:
                yield view[:got]
            if got < size:  # the end of the body, or of the connection
                left = self.response.length  # http.client does not raise for a short body
                if left:
                    raise BodyBroken(f"the connection closed {left} bytes before the end")
                return

    def close(self) -> None:
        self.response.close()
        self._conn.close()

    def __enter__(self) -> Body:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@functools.lru_cache(maxsize=4)
def _ssl_context(library: Any) -> ssl.SSLContext:
    """The TLS context of ``library``'s clients, made once (on the first https URL: loading
    the CA file takes ~60 ms), as huggingface_hub keeps one session."""
    make = getattr(library, "create_ssl_context", None)
    return make() if callable(make) else ssl.create_default_context()


def _connection(
    scheme: str, host: str, port: int | None, timeout: float, context: Callable[[], ssl.SSLContext]
) -> tuple[http.client.HTTPConnection, dict[str, str] | None] | None:
    """A connection to ``host``, through the environment's proxy if one applies, and for
    plain HTTP through a proxy the headers that go with an absolute-URL request (else
    ``None``); ``None`` for a proxy this module does not speak."""
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=context()), None
        return http.client.HTTPConnection(host, port, timeout=timeout), None
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme != "http" or not parts.hostname:
        return None  # an HTTPS or SOCKS proxy: left to huggingface_hub's session
    auth: dict[str, str] = {}
    if parts.username:
        user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth["Proxy-Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
    if scheme == "https":  # a CONNECT tunnel through the proxy, TLS to the host
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port or 80, timeout=timeout, context=context()
        )
        conn.set_tunnel(host, port or 443, headers=auth)
        return conn, None
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout), auth


def open_body(
    url: str, headers: dict[str, str], *, timeout: float, library: Any = None
) -> Body | None:
    """GET ``url``; the open body of a ``200``/``206`` answer, or ``None`` when the caller
    should use huggingface_hub's session instead (see the module). ``library``: the HTTP
    library of that session (its TLS trust is used here). Raises :class:`BodyBroken` when
    the connection fails."""
    library = library if library is not None else importlib.import_module("httpx")

    def context() -> ssl.SSLContext:
        return _ssl_context(library)

    headers = {**headers, "Accept-Encoding": "identity"}
    for _ in range(_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        made = _connection(parts.scheme, parts.hostname, parts.port, timeout, context)
        if made is None:
            return None
        conn, proxied = made
        if proxied is None:
            target, sent = (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers
        else:
            target, sent = url, {**headers, **proxied}
        try:
            conn.request("GET", target, headers=sent)
            response = conn.getresponse()
        except _NETWORK as exc:
            conn.close()
            raise BodyBroken(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        if response.status in (200, 206):
            return Body(conn, response)
        location = response.getheader("Location")
        response.close()
        conn.close()
        if response.status not in (301, 302, 303, 307, 308) or not location:
            return None
        following = urljoin(url, location)
        if urlsplit(following).netloc != parts.netloc:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        url = following
    return None
