"""What a call uses, kept open between calls: the keystore and the key of a call, the
ledger and its writer, the response cache, and the HTTP clients of each event loop.

The performance machinery lives here so that the call path (:mod:`.call`) reads top to
bottom: client pools per loop, disk work moved off the server's loop (``offload``) only
where it costs more than a thread hop, and rows written in batches but acknowledged only
after ``COMMIT``.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .._runner import close_with_loop
from ..config import byok_home
from ..errors import MissingKeyError
from ..keys import Keystore, resolve_key
from ..ledger import default_ledger
from ..models import ModelRef
from ..redact import Secret
from ..types import Completion

if TYPE_CHECKING:
    import httpx

    from ..cache import ResponseCache
    from ..ledger import Ledger, LedgerRow
    from ..providers.base import AsyncHTTPClient

__all__ = ["CLIENT_POOLS", "Resources"]

T = TypeVar("T")

#: HTTP connection pools per event loop with plain httpx (see :meth:`Resources.client`).
CLIENT_POOLS = 8


class Resources:
    """The engine's resources (see :class:`.call.Engine`, which adds the call path)."""

    #: the base-URL overrides environment keys are bound to (the server sets the ones it
    #: saw at start); ``None``: this process's environment at each call
    env_base_urls: dict[str, str] | None = None

    def __init__(
        self,
        home: Path | None = None,
        *,
        keystore: Keystore | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        allow_local: bool = True,
        offload: bool = False,
        timeout: float = 600.0,
    ) -> None:
        self.home = home
        self._keystore = keystore
        self.allow_local = allow_local
        #: run keystore, cache and budget work in worker threads (the server's Tornado loop
        #: must never wait on disk); in a kernel or script a thread hop costs more than the
        #: sub-millisecond file reads it would hide
        self.offload = offload
        self._transport = transport
        self._timeout = timeout
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._turn = 0
        #: calls of this engine under way (all loops); see :meth:`_write_rows`
        self._in_flight = 0
        self._count_lock = threading.Lock()
        self._ledger: Ledger | None = None
        self._cache: ResponseCache | None = None
        self._cache_home: Path | None = None

    # ---------------------------------------------------------------- resources
    @property
    def keystore(self) -> Keystore:
        """The keystore at ``home``, or at the current ``JUPYTER_BYOK_HOME``."""
        store = self._keystore
        if store is not None:
            if self.home is not None:
                return store
            home = byok_home(create=False)
            if store.home is home or store.home == home:  # `is`: no Path comparison
                return store
        self._keystore = Keystore(self.home)
        return self._keystore

    @property
    def ledger(self) -> Ledger:
        if self.home is None:
            return default_ledger()
        if self._ledger is None:
            from ..ledger import Ledger, ledger_path

            self._ledger = Ledger(ledger_path(self.home))
        return self._ledger

    def client(self) -> AsyncHTTPClient:
        """An HTTP client of the running loop (clients are bound to one loop).

        httpx2 is used when installed (see :func:`providers.base.make_async_client`). With
        plain httpx, calls are spread over a few clients: httpcore 1.x rescans every pooled
        connection on each request (encode/httpx#3215), so one pool of hundreds of
        connections spends more time scanning than sending.
        """
        loop = asyncio.get_running_loop()
        pool = self._clients.get(loop)
        if pool is None or pool[0].is_closed:
            from ..providers.base import make_async_client

            first = make_async_client(timeout=self._timeout, transport=self._transport)
            transport = type(getattr(first, "_transport", None)).__name__
            scales = type(first).__module__.startswith("httpx2") or transport == "AiohttpTransport"
            shards = 1 if scales else CLIENT_POOLS
            pool = [first]
            pool += [
                make_async_client(timeout=self._timeout, transport=self._transport)
                for _ in range(shards - 1)
            ]
            self._clients[loop] = pool
            close_with_loop(loop, self.aclose)
        self._turn = (self._turn + 1) % len(pool)
        return pool[self._turn]

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        for client in self._clients.pop(loop, []):
            await client.aclose()

    @property
    def cache(self) -> ResponseCache:
        """The response cache at the current home (kept open between calls)."""
        from ..cache import ResponseCache

        home = self.home or byok_home()
        if self._cache is None or self._cache_home != home:
            self._cache, self._cache_home = ResponseCache(home / "cache.sqlite3"), home
        return self._cache

    # ----------------------------------------------------------------- helpers
    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        if self.offload:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def _secret(self, ref: ModelRef, key: str | Secret | None) -> Secret | None:
        """The key for this call. In the server, a read that would parse the keystore file
        goes to a worker thread; the usual read (file unchanged since its last parse: a few
        ``stat`` calls and one AES-GCM decryption) costs less than the thread hop."""
        if self.offload and not self.keystore.read_is_cheap():
            return await asyncio.to_thread(self._key_for, ref, key)
        return self._key_for(ref, key)

    def _key_for(self, ref: ModelRef, key: str | Secret | None) -> Secret | None:
        """The key, bound to the origin it may go to (see :func:`resolve_key`). A provider
        that needs no key goes without when none is stored; a stored key that may not go
        there is still refused, never dropped silently."""
        env = self.env_base_urls
        if not ref.spec.needs_key and key is None:
            try:
                return resolve_key(
                    ref.provider, ref.key_name, store=self.keystore, env_base_urls=env
                )
            except MissingKeyError:
                return None
        return resolve_key(
            ref.provider, ref.key_name, explicit=key, store=self.keystore, env_base_urls=env
        )

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        return self.cache.get(key)

    def _cache_put(self, key: str, completion: Completion) -> None:
        self.cache.put(key, completion.to_dict(), completion.cost_usd)

    async def _write_rows(
        self, rows: list[LedgerRow], warnings: list[str] | None = None
    ) -> list[str]:
        """Record the rows; returns their ids once they are committed, never before.

        In a kernel or script, one call at a time, one short transaction in the caller's
        thread (tens of microseconds in WAL mode) costs less than handing the rows to
        another thread. With several calls in flight on one loop, and always in the server
        (``offload``), the rows of every call that finishes in the same turn of the loop
        are committed together at the start of the next turn: on the loop itself, or in
        the server by the ledger's writer thread (see :mod:`..ledger.writer`: concurrent
        turns share its transactions, and the Tornado loop never waits on the disk). Each
        call returns only once its rows are committed: a reply is never sent for a row that
        a crash could still lose.

        If the write fails (disk full, I/O error, read-only file), the rows are kept pending
        in memory by the ledger (:meth:`Ledger.keep_pending`: logged, retried, and new calls
        refused until they are written) and the one-line warning goes to ``warnings``: an
        answer the provider already gave (and billed) is never thrown away.
        """
        # the ledger's writer batches (one writer for both modes: see :mod:`..ledger.writer`)
        warning = await self.ledger.writer.write(
            rows, thread=self.offload, alone=self._in_flight <= 1
        )
        if warning is not None and warnings is not None:
            warnings.append(warning)
        return [row.id for row in rows]
