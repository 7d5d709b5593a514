"""How the kernel reaches the batch service: the Jupyter server's ``/byok/batches`` routes
when this kernel has one (keys stay in the server), else the service in this process (the
same rule, and the same ``require_server`` refusal, as :class:`~jupyter_byok.client.Client`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._store import BatchRecord

if TYPE_CHECKING:
    from ..client import Client
    from ._service import BatchService, BudgetGroup, Submission

__all__ = ["BatchTransport"]


class BatchTransport:
    def __init__(self, client: Client | None = None) -> None:
        if client is None:
            from ..client import get_client

            client = get_client()
        self.client = client
        self._service: BatchService | None = None

    @property
    def remote(self) -> bool:
        return self.client.server is not None

    def service(self) -> BatchService:
        if self._service is None:
            from ._service import BatchService

            self._service = BatchService(self.client._engine())
        return self._service

    async def _rest(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return await self.client._rest(method, f"batches{path}", body)

    async def check_budget(self, groups: list[BudgetGroup]) -> list[str]:
        if self.remote:
            body = {
                "groups": [
                    {
                        "model": g.model,
                        "cost_usd": None if g.cost_usd is None else str(g.cost_usd),
                        "item_usd": None if g.item_usd is None else str(g.item_usd),
                        "rows": g.rows,
                    }
                    for g in groups
                ]
            }
            return list((await self._rest("POST", "/budget", body))["warnings"])
        return await self.service().check_budget(groups)

    async def submit(self, sub: Submission) -> list[BatchRecord]:
        if self.remote:
            data = await self._rest("POST", "", sub.to_dict())
            return [BatchRecord.from_dict(b) for b in data["batches"]]
        return await self.service().submit(sub)

    async def refresh(self, batch_id: str) -> BatchRecord:
        if self.remote:
            return BatchRecord.from_dict(await self._rest("POST", f"/{batch_id}/refresh"))
        return await self.service().refresh(batch_id)

    async def cancel(self, batch_id: str) -> BatchRecord:
        if self.remote:
            return BatchRecord.from_dict(await self._rest("POST", f"/{batch_id}/cancel"))
        return await self.service().cancel(batch_id)

    async def list(self, active: bool = False, limit: int = 50) -> list[BatchRecord]:
        if self.remote:
            data = await self._rest("GET", f"?active={int(active)}&limit={limit}")
            return [BatchRecord.from_dict(b) for b in data["batches"]]
        return await self.service().list(active=active, limit=limit)
