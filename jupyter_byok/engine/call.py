"""The call path: resolve -> ledger check -> budget -> cache -> provider -> cost -> ledger.

:meth:`Engine._run_call` is the whole path of one ``complete`` or ``stream``, one step a
line or a few. The steps are in :mod:`.steps`, in the order the path takes them; what
they use (keystore, ledger writer, response cache, HTTP clients) is in :mod:`.resources`;
the ledger rows are built in :mod:`.rows`, the completion in :mod:`.answer`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from ..errors import ByokError, LocalModelError
from ..ledger import new_id
from ..models import ModelRef, parse_model
from ..redact import Secret
from ..types import Attempt, Completion, Request, SearchResult
from . import rows
from .answer import Answer
from .steps import Steps

__all__ = ["Engine"]


class Engine(Steps):
    """One engine per process (see :func:`get_engine`); safe to use from several loops."""

    # ------------------------------------------------------------ entry points
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

    def resolve(self, model: str | None) -> ModelRef:
        return self._allowed(parse_model(model))

    def _allowed(self, ref: ModelRef) -> ModelRef:
        if ref.is_local and not self.allow_local:
            raise LocalModelError(
                "local models run in the kernel, not in the Jupyter server: call them from a "
                "notebook or script"
            )
        return ref

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

    # ----------------------------------------------------------- the call path
    async def _run_call(
        self, request: Request, ref: ModelRef, *, key: str | Secret | None, stream: bool
    ) -> AsyncIterator[str | Completion]:
        request_id = new_id()
        started = time.monotonic()
        base = rows.base_row(request, ref, request_id, stream)

        await self._check_ledger(ref)
        warnings = await self._check_budget(request, ref, base)

        cache_key = None
        if request.cache:
            from ..cache import cache_key as make_key

            cache_key = make_key(
                ref.provider, ref.model, [m.to_dict() for m in request.messages], request.params
            )
            hit = await self._from_cache(cache_key, base, ref, request_id, started, warnings)
            if hit is not None:
                if stream:
                    yield hit.text
                yield hit
                return

        attempts: list[Attempt] = []
        answer = Answer()
        try:
            if stream:
                async for event in self._events(ref, request, key, attempts):
                    answer.add(event, started)
                    if event.delta:
                        yield event.delta
            else:
                answer.take(await self._result(ref, request, key, attempts))
        except (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit):
            rows.end_cancelled(attempts, started)
            await asyncio.shield(self._record_attempts(base, ref, attempts))
            raise
        except ByokError as exc:
            rows.end_failed(attempts, exc, started)
            await self._record_attempts(base, ref, attempts)
            raise

        completion = answer.completion(ref, request_id, started)
        rows.end_ok(attempts, completion.latency_s, completion.usage)
        ids, cost = await self._record_attempts(base, ref, attempts, warnings)
        completion.ledger_id = ids[-1] if ids else None
        completion.cost_usd, completion.cost_source = cost or self._price(ref, completion.usage)
        completion.warnings = warnings
        if cache_key is not None:
            await self._io(self._cache_put, cache_key, completion)
        yield completion

    # ------------------------------------------------- the other ledger entries
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
        """A web search (Tavily): the same ledger, budget and key steps, then dispatch."""
        from ..providers import dispatch, get_spec

        spec = get_spec("tavily")
        ref = ModelRef("tavily", depth)
        request = Request(model=ref.id, messages=[], feature=feature, origin=origin or {})
        request_id = new_id()
        base = rows.base_row(request, ref, request_id, False)
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
        base = rows.base_row(request, ref, new_id(), False)
        return await self._record(
            base,
            status="cache_hit",
            cost=(Decimal(0), "computed", ""),
            latency_s=latency_s,
            cache_hit=True,
            saved_usd=saved_usd,
        )
