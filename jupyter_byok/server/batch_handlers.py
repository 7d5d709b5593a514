"""``/byok/batches``: the batch service (:mod:`jupyter_byok.batch._service`) for kernels,
so that batch uploads, polls and downloads use keys that never leave this server.

Routes (all authenticated and authorized, resource ``jupyter_byok:batches``):
``GET batches`` (recent batches), ``POST batches`` (submit one node's rows),
``POST batches/budget`` (check the whole map's estimate), ``GET batches/{id}``,
``POST batches/{id}/refresh`` (poll; fetch results once ended), ``POST batches/{id}/cancel``.
A submission may be larger than other bodies (:data:`MAX_SUBMISSION`).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..validate import loads
from .handlers import ByokHandler
from .service import BadInput, TooLarge

__all__ = ["MAX_SUBMISSION", "BatchHandler", "BatchesHandler", "BudgetHandler"]

#: the largest submission body: one node's rows (a provider takes 200-256 MB a batch)
MAX_SUBMISSION = 256 * 1024 * 1024
BATCH_ID = r"([A-Za-z0-9_-]{1,128})"


class _Base(ByokHandler):
    auth_resource = "jupyter_byok:batches"

    def body_refused(self) -> bool:
        if self._finished:
            return True
        declared = self.request.headers.get("Content-Length", "")
        size = int(declared) if declared.strip().isdigit() else -1
        if size > MAX_SUBMISSION:
            self.fail(TooLarge(f"batch submission too large ({size:,} bytes)"))
            return True
        self.request.connection.set_max_body_size(MAX_SUBMISSION)  # type: ignore[union-attr]
        return False

    def data_received(self, chunk: bytes) -> None:
        if len(self.request.body) <= MAX_SUBMISSION:
            self.request.body += chunk

    def json_body(self) -> dict[str, Any]:
        raw = self.request.body or b""
        if len(raw) > MAX_SUBMISSION:
            raise TooLarge("batch submission too large")
        data = loads(raw) if raw.strip() else {}
        if not isinstance(data, dict):
            raise BadInput("request body must be a JSON object")
        return data

    @property
    def batches(self) -> Any:
        from ..batch._service import BatchService

        service = self.settings.get("jupyter_byok_batches")
        if service is None:
            service = self.settings["jupyter_byok_batches"] = BatchService(self.service.engine)
        return service


def _money(value: Any, what: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise BadInput(f"{what} must be a decimal string") from None


class BatchesHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        active = self.get_argument("active", "0") == "1"
        limit = self.get_argument("limit", "50")
        if not limit.isdigit():
            self.fail(BadInput("limit must be a whole number"))
            return

        async def run() -> dict[str, Any]:
            found = await self.batches.list(active=active, limit=min(int(limit), 1000))
            return {"batches": [r.to_dict() for r in found]}

        await self.run(run())

    @web.authenticated
    @authorized
    async def post(self) -> None:
        from ..batch._service import Submission

        async def run() -> dict[str, Any]:
            try:
                sub = Submission.from_dict(self.json_body())
            except (KeyError, TypeError, ValueError) as exc:
                raise BadInput(f"not a batch submission ({type(exc).__name__}: {exc})") from None
            records = await self.batches.submit(sub)
            return {"batches": [r.to_dict() for r in records]}

        await self.run(run())


class BudgetHandler(_Base):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        from ..batch._service import BudgetGroup

        async def run() -> dict[str, Any]:
            groups = []
            for g in self.json_body().get("groups") or []:
                if not isinstance(g, dict) or not isinstance(g.get("model"), str):
                    raise BadInput("groups: each needs a model id")
                groups.append(
                    BudgetGroup(
                        g["model"],
                        _money(g.get("cost_usd"), "cost_usd"),
                        _money(g.get("item_usd"), "item_usd"),
                        int(g.get("rows") or 0),
                    )
                )
            return {"warnings": await self.batches.check_budget(groups)}

        await self.run(run())


class BatchHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self, batch_id: str, action: str | None = None) -> None:
        async def run() -> dict[str, Any]:
            record = await self.batches.engine._io(self.batches.store.get, batch_id)
            result: dict[str, Any] = record.to_dict()
            return result

        await self.run(run())

    @web.authenticated
    @authorized
    async def post(self, batch_id: str, action: str | None = None) -> None:
        async def run() -> dict[str, Any]:
            if action == "refresh":
                record = await self.batches.refresh(batch_id)
            elif action == "cancel":
                record = await self.batches.cancel(batch_id)
            else:
                raise BadInput("use POST batches/{id}/refresh or batches/{id}/cancel")
            result: dict[str, Any] = record.to_dict()
            return result

        await self.run(run())


ROUTES: tuple[tuple[str, type[ByokHandler]], ...] = (
    ("batches", BatchesHandler),
    ("batches/budget", BudgetHandler),
    (rf"batches/{BATCH_ID}/(refresh|cancel)", BatchHandler),
    (rf"batches/{BATCH_ID}", BatchHandler),
)
