"""The steps of the call path, in the order :meth:`.call.Engine._run_call` takes them:
ledger check, budget, response cache, provider (a local model or a cloud call with its
key), cost, ledger rows. Each step is short; what they use is in :mod:`.resources`, the
rows they write are built in :mod:`.rows`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from .. import budgets
from ..errors import BudgetExceededError, LedgerUnavailableError
from ..models import ModelRef
from ..pricing import compute_cost
from ..providers import dispatch
from ..redact import Secret
from ..types import Attempt, Completion, ProviderResult, Request, StreamEvent, Usage
from . import rows
from .answer import from_cache
from .estimate import estimate_call
from .resources import Resources

__all__ = ["Steps"]


class Steps(Resources):
    """The steps of one call (see :class:`.call.Engine` for the path that takes them)."""

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
        if not budgets.has_budgets():
            return await self._reserve(request, ref, base) if self.ledger.shared else []
        estimate = estimate_call(ref, request.messages, request.params.get("max_tokens"))
        decision = await self._io(
            budgets.check, ref.provider, ref.model, request.feature, estimate.cost_usd, self.ledger
        )
        if not decision.allowed:
            await self._record(base, status="blocked", error_type="BudgetExceededError")
            raise BudgetExceededError(decision.message)
        if self.ledger.shared:  # after the personal budgets: a blocked call reserves nothing
            return list(decision.warnings) + await self._reserve(request, ref, base)
        return list(decision.warnings)

    async def _reserve(self, request: Request, ref: ModelRef, base: dict[str, Any]) -> list[str]:
        """Budgets across servers (a shared ledger): reserve this call's estimate in the
        database, or block the call (see :mod:`..team_budgets`)."""
        from ..team_budgets import reserve

        ledger: Any = self.ledger
        if not ledger.budgets_fresh():  # the budget list, re-read every few seconds
            await self._io(ledger.shared_budgets)
        if not ledger.budgets_apply(ref.provider, ref.key_name):
            return []
        estimate = estimate_call(ref, request.messages, request.params.get("max_tokens"))
        decision = await self._io(
            reserve, ledger, base["request_id"], ref.provider, ref.key_name, estimate.cost_usd
        )
        if not decision.allowed:
            await self._record(base, status="blocked", error_type="BudgetExceededError")
            raise BudgetExceededError(decision.message)
        return list(decision.warnings)

    async def _from_cache(
        self,
        cache_key: str,
        base: dict[str, Any],
        ref: ModelRef,
        request_id: str,
        started: float,
        warnings: list[str],
    ) -> Completion | None:
        """A cached answer, recorded as one ``cache_hit`` row (cost 0, what it saved)."""
        hit = await self._io(self._cache_get, cache_key)
        if hit is None:
            return None
        completion = from_cache(hit, ref, request_id)
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
        return completion

    async def _events(
        self, ref: ModelRef, request: Request, key: str | Secret | None, attempts: list[Attempt]
    ) -> AsyncIterator[StreamEvent]:
        """The provider's stream: a local model in this process, or a cloud call."""
        if ref.is_local:
            from ..providers import local

            async for event in local.astream_local(
                ref.model, request.messages, request.params, on_attempt=attempts.append
            ):
                yield event
            return
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
            from ..providers import local

            return await local.acomplete_local(
                ref.model, request.messages, request.params, on_attempt=attempts.append
            )
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

    def _price(self, ref: ModelRef, usage: Usage) -> tuple[Decimal | None, str]:
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
        made, cost = rows.attempt_rows(base, ref, attempts)
        ids = await self._write_rows(made, warnings)
        return ids, cost

    async def _record(
        self, base: dict[str, Any], warnings: list[str] | None = None, **fields: Any
    ) -> str:
        ids = await self._write_rows([rows.make_row(base, **fields)], warnings)
        return ids[0]
