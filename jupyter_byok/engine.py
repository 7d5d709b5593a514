"""The one call path: ledger check -> resolve -> budget -> cache -> provider -> cost -> ledger.

Invariants:

* Every provider attempt (success, error, timeout, cancel), every cache hit and every
  budget block writes exactly one ledger row; a logical call's rows share ``request_id``.
* A call returns (the server replies) only once its rows are committed, on every path;
  a call is not sent while the ledger is known not to take its row, and a row whose
  write failed after the provider answered is kept pending, never dropped silently (see
  :meth:`Engine._write_rows` and the "Failures" notes in :mod:`.ledger`).
* The key is resolved just before dispatch and only handed to the provider module,
  which puts it in the request header; it is never stored on the engine or a result.
* In the server (``offload``), ledger and keystore work that touches the disk runs off
  the event loop (the ledger's writer thread, worker threads).
* Local models run in the process that owns this engine; an engine made for the
  Jupyter server refuses them (``allow_local=False``), since they belong to kernels.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ._runner import close_with_loop
from .config import byok_home
from .errors import (
    BudgetExceededError,
    ByokError,
    LedgerUnavailableError,
    LocalModelError,
    MissingKeyError,
)
from .keys import Keystore, resolve_key
from .ledger import new_id
from .models import ModelRef, parse_model
from .redact import Secret
from .types import (
    DEFAULT_MAX_TOKENS,
    Attempt,
    Completion,
    Message,
    ProviderResult,
    Request,
    SearchResult,
    StreamEvent,
    Usage,
)

if TYPE_CHECKING:
    import httpx

    from .cache import ResponseCache
    from .ledger import Ledger, LedgerRow
    from .providers.base import AsyncHTTPClient

__all__ = ["Engine", "Estimate", "build_messages", "estimate_call", "get_engine"]

T = TypeVar("T")

#: HTTP connection pools per event loop with plain httpx (see :meth:`Engine.client`).
CLIENT_POOLS = 8


def build_messages(
    prompt: str | list[Message] | list[dict[str, str]], system: str | None = None
) -> list[Message]:
    """A prompt string or a list of messages (dicts or Message) -> list[Message]."""
    if isinstance(prompt, str):
        messages = [Message("user", prompt)]
    else:
        messages = []
        for item in prompt:
            if isinstance(item, Message):
                messages.append(item)
            else:
                role = item.get("role", "user")
                if role not in ("system", "user", "assistant"):
                    raise ByokError(f"unknown message role {role!r}: use system, user or assistant")
                messages.append(Message(role, str(item.get("content", ""))))  # type: ignore[arg-type]
    if system:
        messages = [Message("system", system), *[m for m in messages if m.role != "system"]]
    return messages


@dataclass(frozen=True)
class Estimate:
    """An upper bound for one call, as budgets use it (never sent anywhere)."""

    model: str
    input_tokens: int
    max_output_tokens: int
    cost_usd: Decimal | None

    def __str__(self) -> str:
        cost = "cost unknown (no price)" if self.cost_usd is None else f"at most ${self.cost_usd}"
        return (
            f"{self.model}: about {self.input_tokens:,} input tokens (an upper bound), up to "
            f"{self.max_output_tokens:,} output tokens: {cost}"
        )


def estimate_call(ref: ModelRef, messages: list[Message], max_tokens: int | None) -> Estimate:
    """The upper-bound cost of a call before it is made: the prompt through
    :func:`pricing.estimate_prompt_tokens` (tiktoken for OpenAI where its files are
    available, else a deliberately high bound) plus ``max_tokens`` of output."""
    from . import pricing

    max_out = int(max_tokens or DEFAULT_MAX_TOKENS)
    if ref.provider == "tavily":
        return Estimate(ref.id, 0, 0, pricing.estimate_cost(ref.provider, ref.model, 0, 0))
    text = "\n".join(m.content for m in messages)
    tokens = pricing.estimate_prompt_tokens(text, provider=ref.provider, model=ref.model)
    tokens += 4 * max(len(messages) - 1, 0)
    return Estimate(
        ref.id, tokens, max_out, pricing.estimate_cost(ref.provider, ref.model, tokens, max_out)
    )


class Engine:
    """One engine per process (see :func:`get_engine`); safe to use from several loops."""

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
        if self._keystore is not None and (
            self.home is not None or self._keystore.home == byok_home(create=False)
        ):
            return self._keystore
        self._keystore = Keystore(self.home)
        return self._keystore

    @property
    def ledger(self) -> Ledger:
        if self.home is None:
            from .ledger import default_ledger

            return default_ledger()
        if self._ledger is None:
            from .ledger import Ledger, ledger_path

            self._ledger = Ledger(ledger_path(self.home))
        return self._ledger

    def client(self) -> AsyncHTTPClient:
        """An HTTP client of the running loop (clients are bound to one loop).

        httpx2 is used when installed (see :func:`providers.base.make_async_client`). With
        plain httpx, calls are spread over a few clients: httpcore 1.x rescans every pooled
        connection on each request (encode/httpx#3215), so one pool of hundreds of
        connections spends more time scanning than sending.
        """
        from .providers.base import make_async_client

        loop = asyncio.get_running_loop()
        pool = self._clients.get(loop)
        if pool is None or pool[0].is_closed:
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

    # ------------------------------------------------------------------- calls
    def resolve(self, model: str | None) -> ModelRef:
        return self._allowed(parse_model(model))

    def _allowed(self, ref: ModelRef) -> ModelRef:
        if ref.is_local and not self.allow_local:
            raise LocalModelError(
                "local models run in the kernel, not in the Jupyter server: call them from a "
                "notebook or script"
            )
        return ref

    async def acomplete(
        self, request: Request, *, key: str | Secret | None = None, ref: ModelRef | None = None
    ) -> Completion:
        """``ref``: ``request.model`` already parsed by the caller (it is not parsed twice)."""
        result: Completion | None = None
        async for item in self._run(request, key=key, stream=False, ref=ref):
            if isinstance(item, Completion):
                result = item
        assert result is not None
        return result

    async def astream(
        self, request: Request, *, key: str | Secret | None = None, ref: ModelRef | None = None
    ) -> AsyncIterator[str | Completion]:
        """Text deltas as they arrive, then the finished :class:`Completion`."""
        async for item in self._run(request, key=key, stream=True, ref=ref):
            yield item

    async def _run(
        self,
        request: Request,
        *,
        key: str | Secret | None,
        stream: bool,
        ref: ModelRef | None = None,
    ) -> AsyncIterator[str | Completion]:
        ref = self.resolve(request.model) if ref is None else self._allowed(ref)
        with self._count_lock:
            self._in_flight += 1
        try:
            async for item in self._run_call(request, ref, key=key, stream=stream):
                yield item
        finally:
            with self._count_lock:
                self._in_flight -= 1

    async def _run_call(
        self, request: Request, ref: ModelRef, *, key: str | Secret | None, stream: bool
    ) -> AsyncIterator[str | Completion]:
        request_id = new_id()
        started = time.monotonic()
        base = self._base_row(request, ref, request_id, stream)

        await self._check_ledger(ref)
        warnings = await self._check_budget(request, ref, base)

        cache_key = None
        if request.cache:
            from .cache import cache_key as make_key

            cache_key = make_key(
                ref.provider, ref.model, [m.to_dict() for m in request.messages], request.params
            )
            hit = await self._io(self._cache_get, cache_key)
            if hit is not None:
                completion = self._completion_from_cache(hit, ref, request_id)
                completion.latency_s = time.monotonic() - started
                saved = completion.cost_usd
                completion.cost_usd = Decimal(0)
                completion.ledger_id = await self._record(
                    base,
                    warnings=warnings,
                    status="cache_hit",
                    usage=completion.usage,
                    cost=(Decimal(0), "computed", ""),
                    latency_s=completion.latency_s,
                    cache_hit=True,
                    saved_usd=saved,
                )
                completion.warnings = warnings
                if stream:
                    yield completion.text
                yield completion
                return

        attempts: list[Attempt] = []
        text_parts: list[str] = []
        final_usage: Usage | None = None
        finish_reason: str | None = None
        response_id: str | None = None
        ttft: float | None = None
        try:
            if stream:
                async for event in self._events(ref, request, key, attempts):
                    if event.delta:
                        if ttft is None:
                            ttft = time.monotonic() - started
                        text_parts.append(event.delta)
                        yield event.delta
                    if event.done:
                        final_usage, finish_reason = event.usage, event.finish_reason
                        response_id = event.response_id
            else:
                result = await self._result(ref, request, key, attempts)
                text_parts.append(result.text)
                final_usage, finish_reason = result.usage, result.finish_reason
                response_id, ttft = result.response_id, result.ttft_s
        except (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit):
            if not attempts or attempts[-1].status == "ok":
                attempts.append(Attempt(len(attempts) + 1, "cancelled", time.monotonic() - started))
            await asyncio.shield(self._record_attempts(base, ref, attempts))
            raise
        except ByokError as exc:
            if not attempts:
                attempts.append(
                    Attempt(
                        1,
                        "error",
                        time.monotonic() - started,
                        error_type=type(exc).__name__,
                        error_message=str(exc),
                    )
                )
            await self._record_attempts(base, ref, attempts)
            raise

        usage = final_usage or Usage()
        completion = Completion(
            text="".join(text_parts),
            model=ref.id,
            provider=ref.provider,
            usage=usage,
            finish_reason=finish_reason,
            request_id=request_id,
            response_id=response_id,
            latency_s=time.monotonic() - started,
            ttft_s=ttft,
        )
        if not attempts or attempts[-1].status != "ok":
            attempts.append(Attempt(len(attempts) + 1, "ok", completion.latency_s, usage=usage))
        elif attempts[-1].usage is None:
            attempts[-1].usage = usage
        ids, cost = await self._record_attempts(base, ref, attempts, warnings)
        completion.ledger_id = ids[-1] if ids else None
        completion.cost_usd, completion.cost_source = cost or self._price(ref, usage)
        completion.warnings = warnings
        if cache_key is not None:
            await self._io(self._cache_put, cache_key, completion)
        yield completion

    async def _events(
        self, ref: ModelRef, request: Request, key: str | Secret | None, attempts: list[Attempt]
    ) -> AsyncIterator[StreamEvent]:
        """The provider's stream: a local model in this process, or a cloud call."""
        if ref.is_local:
            from .providers import local

            async for event in local.astream_local(
                ref.model, request.messages, request.params, on_attempt=attempts.append
            ):
                yield event
            return
        from .providers import dispatch

        secret = await self._secret(ref, key)
        async for event in dispatch.stream(
            ref.spec,
            ref.model,
            request.messages,
            request.params,
            secret,
            client=self.client(),
            on_attempt=attempts.append,
        ):
            yield event

    async def _result(
        self, ref: ModelRef, request: Request, key: str | Secret | None, attempts: list[Attempt]
    ) -> ProviderResult:
        """The provider's finished answer: a local model in this process, or a cloud call."""
        if ref.is_local:
            from .providers import local

            return await local.acomplete_local(
                ref.model, request.messages, request.params, on_attempt=attempts.append
            )
        from .providers import dispatch

        secret = await self._secret(ref, key)
        return await dispatch.complete(
            ref.spec,
            ref.model,
            request.messages,
            request.params,
            secret,
            client=self.client(),
            on_attempt=attempts.append,
        )

    async def asearch(
        self,
        query: str,
        *,
        depth: str = "basic",
        feature: str = "search",
        origin: dict[str, str] | None = None,
        key: str | Secret | None = None,
        **params: Any,
    ) -> SearchResult:
        from .providers import dispatch, get_spec

        spec = get_spec("tavily")
        ref = ModelRef("tavily", depth)
        request = Request(model=ref.id, messages=[], feature=feature, origin=origin or {})
        request_id = new_id()
        base = self._base_row(request, ref, request_id, False)
        await self._check_ledger(ref)
        await self._check_budget(request, ref, base)
        secret = await self._secret(ref, key)
        attempts: list[Attempt] = []
        try:
            result = await dispatch.search(
                spec,
                query,
                {"search_depth": depth, **params},
                secret,
                client=self.client(),
                on_attempt=attempts.append,
            )
        except ByokError:
            await self._record_attempts(base, ref, attempts)
            raise
        result.request_id = request_id
        _, cost = await self._record_attempts(base, ref, attempts, result.warnings)
        result.cost_usd, result.cost_source = cost or self._price(ref, result.usage)
        return result

    async def record_cache_hit(
        self,
        model: str,
        *,
        feature: str,
        origin: dict[str, str],
        saved_usd: Decimal | None,
        latency_s: float,
    ) -> str:
        """One ``cache_hit`` ledger row for an answer served from a cache outside the engine
        (a pipeline's node cache), so that every served answer is accounted."""
        ref = parse_model(model)
        request = Request(model=model, messages=[], feature=feature, origin=origin)
        base = self._base_row(request, ref, new_id(), False)
        return await self._record(
            base,
            status="cache_hit",
            cost=(Decimal(0), "computed", ""),
            latency_s=latency_s,
            cache_hit=True,
            saved_usd=saved_usd,
        )

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

    def _base_row(
        self, request: Request, ref: ModelRef, request_id: str, stream: bool
    ) -> dict[str, Any]:
        origin = request.origin or {}
        return {
            "request_id": request_id,
            "provider": ref.provider,
            "model": ref.model,
            "key_name": None if ref.is_local else ref.key_name,
            "feature": request.feature,
            "notebook": origin.get("notebook"),
            "cell_id": origin.get("cell_id"),
            "pipeline": origin.get("pipeline"),
            "node": origin.get("node"),
            "stream": stream,
        }

    async def _check_ledger(self, ref: ModelRef) -> None:
        """Refuse the call, before anything is sent, if the ledger is known not to take its
        row (:meth:`Ledger.ensure_writable`): remembered state, re-checked at most every
        ``Ledger.check_every_s`` (in the server, on a worker thread)."""
        try:
            ledger = self.ledger
        except OSError as exc:  # its folder could not be made
            raise LedgerUnavailableError(
                f"not sending {ref.id}: the usage ledger's folder cannot be used ({exc}); "
                "fix it or set JUPYTER_BYOK_LEDGER_DIR, then retry"
            ) from exc
        if ledger.health_is_fresh():
            ledger.raise_if_refused(ref.id)
        elif not self.offload or ledger.check_is_cheap():  # a statvfs and a stat or two
            ledger.ensure_writable(ref.id)
        else:  # opening the file, or writing rows kept pending: off the server's loop
            await asyncio.to_thread(ledger.ensure_writable, ref.id)

    async def _check_budget(
        self, request: Request, ref: ModelRef, base: dict[str, Any]
    ) -> list[str]:
        """Block the call (one ledger row, then an error) or return budget warnings."""
        from . import budgets

        if not budgets.has_budgets():
            return []
        estimate = estimate_call(ref, request.messages, request.params.get("max_tokens"))
        decision = await self._io(
            budgets.check, ref.provider, ref.model, request.feature, estimate.cost_usd, self.ledger
        )
        if not decision.allowed:
            await self._record(base, status="blocked", error_type="BudgetExceededError")
            raise BudgetExceededError(decision.message)
        return list(decision.warnings)

    def _price(self, ref: ModelRef, usage: Usage) -> tuple[Decimal | None, str]:
        from .pricing import compute_cost

        result = compute_cost(ref.provider, ref.model, usage)
        return result.cost_usd, result.source

    async def _record_attempts(
        self,
        base: dict[str, Any],
        ref: ModelRef,
        attempts: list[Attempt],
        warnings: list[str] | None = None,
    ) -> tuple[list[str], tuple[Decimal | None, str] | None]:
        """One ledger row per attempt; returns the row ids and the last attempt's cost
        (``warnings`` gets the warning of a write that failed; see :meth:`_write_rows`)."""
        from .pricing import compute_cost

        rows = []
        cost: tuple[Decimal | None, str, str] | None = None
        for attempt in attempts:
            if attempt.usage is not None:
                priced = compute_cost(ref.provider, ref.model, attempt.usage)
                cost = (priced.cost_usd, priced.source, priced.price_version)
            else:
                cost = None
            rows.append(
                self._make_row(
                    base,
                    status=attempt.status,
                    attempt=attempt.number,
                    http_status=attempt.http_status,
                    error_type=attempt.error_type,
                    response_id=attempt.response_id,
                    usage=attempt.usage,
                    cost=cost,
                    latency_s=attempt.latency_s,
                    ttft_s=attempt.ttft_s,
                    started_at=attempt.started_at,
                )
            )
        ids = await self._write_rows(rows, warnings)
        return ids, (cost[0], cost[1]) if cost is not None else None

    async def _record(
        self, base: dict[str, Any], warnings: list[str] | None = None, **fields: Any
    ) -> str:
        row = self._make_row(base, **fields)
        ids = await self._write_rows([row], warnings)
        return ids[0]

    def _make_row(
        self,
        base: dict[str, Any],
        *,
        status: str,
        attempt: int = 1,
        http_status: int | None = None,
        error_type: str | None = None,
        response_id: str | None = None,
        usage: Usage | None = None,
        cost: tuple[Decimal | None, str, str] | None = None,
        latency_s: float | None = None,
        ttft_s: float | None = None,
        cache_hit: bool = False,
        saved_usd: Decimal | None = None,
        started_at: float | None = None,
    ) -> LedgerRow:
        from .ledger import LedgerRow

        usage = usage or Usage()
        if started_at is None:  # each attempt's own times when dispatch reported them
            ts_end = time.time()
            started_at = ts_end - (latency_s or 0.0)
        else:
            ts_end = started_at + (latency_s or 0.0)
        cost_usd, cost_source, price_version = cost if cost is not None else (None, "unknown", "")
        # An error after the provider accepted the call (a 2xx or 3xx: an answer cut off,
        # over the cap, of the wrong shape) may be billed: its cost is unknown, never 0.
        answered = status == "error" and http_status is not None and http_status < 400
        if cost is None and status in ("error", "cancelled", "blocked") and not answered:
            cost_usd, cost_source = Decimal(0), "computed"
        return LedgerRow(
            **base,
            status=status,
            attempt=attempt,
            ts_start=started_at,
            ts_end=ts_end,
            http_status=http_status,
            error_type=error_type,
            response_id=response_id,
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            output_tokens=usage.output_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            search_credits=usage.search_credits,
            cost_usd=cost_usd,
            cost_source=cost_source,
            price_version=price_version,
            latency_s=latency_s,
            ttft_s=ttft_s,
            cache_hit=cache_hit,
            saved_usd=saved_usd,
        )

    async def _write_rows(
        self, rows: list[LedgerRow], warnings: list[str] | None = None
    ) -> list[str]:
        """Record the rows; returns their ids once they are committed, never before.

        In a kernel or script, one call at a time, one short transaction in the caller's
        thread (tens of microseconds in WAL mode) costs less than handing the rows to
        another thread. With several calls in flight on one loop, and always in the server
        (``offload``), the rows of every call that finishes in the same turn of the loop
        are committed together at the start of the next turn: on the loop itself, or in
        the server by the ledger's writer thread (see :mod:`.ledger.writer`: concurrent
        turns share its transactions, and the Tornado loop never waits on the disk). Each
        call returns only once its rows are committed: a reply is never sent for a row that
        a crash could still lose.

        If the write fails (disk full, I/O error, read-only file), the rows are kept pending
        in memory by the ledger (:meth:`Ledger.keep_pending`: logged, retried, and new calls
        refused until they are written) and the one-line warning goes to ``warnings``: an
        answer the provider already gave (and billed) is never thrown away.
        """
        # the ledger's writer batches (one writer for both modes: see :mod:`.ledger.writer`)
        warning = await self.ledger.writer.write(
            rows, thread=self.offload, alone=self._in_flight <= 1
        )
        if warning is not None and warnings is not None:
            warnings.append(warning)
        return [row.id for row in rows]

    @property
    def cache(self) -> ResponseCache:
        """The response cache at the current home (kept open between calls)."""
        from .cache import ResponseCache

        home = self.home or byok_home()
        if self._cache is None or self._cache_home != home:
            self._cache, self._cache_home = ResponseCache(home / "cache.sqlite3"), home
        return self._cache

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        return self.cache.get(key)

    def _cache_put(self, key: str, completion: Completion) -> None:
        self.cache.put(key, completion.to_dict(), completion.cost_usd)

    def _completion_from_cache(
        self, payload: dict[str, Any], ref: ModelRef, request_id: str
    ) -> Completion:
        """The cached answer as this call's completion (its own id, no latency yet)."""
        stored = Completion.from_dict(payload)
        return dataclasses.replace(
            stored,
            model=ref.id,
            provider=ref.provider,
            request_id=request_id,
            latency_s=0.0,
            ttft_s=None,
            cached=True,
            ledger_id=None,
            warnings=[],
        )


_engine: Engine | None = None


def get_engine() -> Engine:
    """The process-wide in-process engine."""
    global _engine
    if _engine is None:
        _engine = Engine()
    return _engine
