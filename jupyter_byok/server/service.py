"""The one service object the REST handlers call (kept in ``web_app.settings``).

It owns the keystore and the engine of the server process. Blocking work (keystore,
ledger, settings files) runs in worker threads so that the Tornado loop never waits on
disk; provider calls are async all the way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .._version import __version__
from ..config import Endpoint, load_settings, update_settings
from ..engine import Engine, build_messages
from ..errors import ByokError, ConfigError
from ..keystore import Keystore
from ..providers import BUILTIN, SECRET_NAMESPACE, get_spec
from ..types import Completion, Request

__all__ = ["BadInput", "ByokService", "NotFound", "TooLarge"]


class BadInput(ByokError):
    """A malformed request (400)."""


class NotFound(ByokError):
    """No such key id (404)."""


class TooLarge(BadInput):
    """A request body over the size limit (413)."""


def _str(body: dict[str, Any], name: str, default: str | None = None) -> str | None:
    value = body.get(name, default)
    if value is not None and not isinstance(value, str):
        raise BadInput(f"'{name}' must be a string")
    return value


class ByokService:
    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine if engine is not None else Engine(allow_local=False, offload=True)
        self._status_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="byok-status")

    @property
    def keystore(self) -> Keystore:
        return self.engine.keystore

    # ------------------------------------------------------------------ status
    async def status(self) -> dict[str, Any]:
        """Polled by every open JupyterLab (status bar). Collected on a thread of its own,
        so that it never queues behind the key lookups of calls in flight."""

        def collect() -> dict[str, Any]:
            settings = load_settings()
            from ..models import default_model

            data: dict[str, Any] = {
                "version": __version__,
                "keystore": self.keystore.status(),
                "default_model": default_model(settings),
            }
            try:
                data["spend_today_usd"] = str(self.engine.ledger.spend(since="today"))
            except ByokError as exc:
                data["spend_today_usd"] = None
                data["ledger_error"] = str(exc)
            try:
                from .. import budgets

                data["budgets"] = budgets.status(self.engine.ledger)
            except ByokError as exc:
                data["budgets"] = []
                data["budgets_error"] = str(exc)
            return data

        return await asyncio.get_running_loop().run_in_executor(self._status_pool, collect)

    # -------------------------------------------------------------------- keys
    async def list_keys(self) -> dict[str, Any]:
        def collect() -> dict[str, Any]:
            import os

            stored = [info.to_dict() for info in self.keystore.list()]
            providers = []
            for name, spec in BUILTIN.items():
                if not spec.needs_key:
                    continue
                env = next((v for v in spec.env_vars if os.environ.get(v)), None)
                providers.append(
                    {
                        "provider": name,
                        "configured": any(k["provider"] == name for k in stored) or bool(env),
                        "stored": [k for k in stored if k["provider"] == name],
                        "env_var": env,
                        "key_url": spec.key_url,
                    }
                )
            status = self.keystore.status()
            return {
                "keys": stored,
                "providers": providers,
                "tier": status["tier"],
                "tier_description": status["tier_description"],
            }

        return await asyncio.to_thread(collect)

    async def add_key(self, body: dict[str, Any]) -> dict[str, Any]:
        provider = _str(body, "provider")
        secret = body.get("key")
        if not provider:
            raise BadInput("'provider' is required (openai, anthropic, gemini, xai, tavily, ...)")
        if not isinstance(secret, str):
            raise BadInput("'key' is required and must be a string")
        name = _str(body, "name", "default") or "default"
        tier = _str(body, "tier")
        base_url = _str(body, "base_url")
        if provider != SECRET_NAMESPACE:
            get_spec(provider)
        info = await asyncio.to_thread(
            self.keystore.set, provider, secret, name, tier=tier, base_url=base_url
        )
        return info.to_dict()

    def _find(self, key_id: str) -> Any:
        for info in self.keystore.list():
            if info.id == key_id:
                return info
        raise NotFound(f"no stored key with id {key_id}; GET /byok/keys lists them")

    async def delete_key(self, key_id: str) -> None:
        def run() -> None:
            info = self._find(key_id)
            self.keystore.delete(info.provider, info.name)

        await asyncio.to_thread(run)

    async def verify_key(self, key_id: str) -> dict[str, Any]:
        from ..providers import dispatch

        info = await asyncio.to_thread(self._find, key_id)
        if info.provider == SECRET_NAMESPACE:
            raise BadInput("named secrets have no provider to verify against")
        secret = await asyncio.to_thread(self.keystore.get, info.provider, info.name)
        result = await dispatch.check_key(
            get_spec(info.provider), secret, client=self.engine.client()
        )
        if result.get("ok"):
            await asyncio.to_thread(self.keystore.mark_verified, info.provider, info.name)
        return {"id": key_id, "label": info.label, **result}

    # ------------------------------------------------------------------- calls
    def parse_request(self, body: dict[str, Any]) -> Request:
        model = _str(body, "model", "") or ""
        messages = body.get("messages")
        prompt = body.get("prompt")
        if messages is None and isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        if not isinstance(messages, list) or not messages:
            raise BadInput("'messages' must be a non-empty list of {role, content} objects")
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise BadInput("each message must be an object with 'role' and 'content' strings")
        params = body.get("params") or {}
        origin = body.get("origin") or {}
        if not isinstance(params, dict) or not isinstance(origin, dict):
            raise BadInput("'params' and 'origin' must be objects")
        request = Request(
            model=model,
            messages=build_messages(messages, _str(body, "system")),
            params=params,
            stream=bool(body.get("stream", False)),
            feature=_str(body, "feature", "api") or "api",
            origin={str(k): str(v) for k, v in origin.items()},
            cache=bool(body.get("cache", False)),
        )
        self.engine.resolve(request.model)  # unknown provider or local model: 400 now
        return request

    async def complete(self, request: Request) -> dict[str, Any]:
        completion = await self.engine.acomplete(request)
        return completion.to_dict()

    async def stream(self, request: Request) -> AsyncIterator[str | dict[str, Any]]:
        async for item in self.engine.astream(request):
            yield item.to_dict() if isinstance(item, Completion) else item

    async def search(self, body: dict[str, Any]) -> dict[str, Any]:
        query = _str(body, "query")
        if not query:
            raise BadInput("'query' is required")
        depth = _str(body, "depth", "basic") or "basic"
        if depth not in ("basic", "advanced"):
            raise BadInput("'depth' must be 'basic' or 'advanced'")
        extra = {k: v for k, v in body.items() if k not in ("query", "depth", "origin", "feature")}
        result = await self.engine.asearch(
            query,
            depth=depth,
            feature=_str(body, "feature", "search") or "search",
            origin=body.get("origin") or {},
            **extra,
        )
        return {
            "query": result.query,
            "results": result.results,
            "answer": result.answer,
            "search_credits": result.usage.search_credits,
            "cost_usd": None if result.cost_usd is None else str(result.cost_usd),
            "cost_source": result.cost_source,
            "request_id": result.request_id,
            "latency_s": result.latency_s,
        }

    # ------------------------------------------------------------------- usage
    async def usage(self, args: dict[str, str]) -> dict[str, Any]:
        # JupyterLab's request helper may append a bare cache-buster (``?1795786161459``).
        args = {k: v for k, v in args.items() if not (k.isdigit() and not v)}
        since = args.pop("since", None) or "30d"
        until = args.pop("until", None)
        by = [b for b in (args.pop("by", None) or "provider").split(",") if b]
        bucket = args.pop("bucket", None)
        limit = int(args.pop("limit", "50") or 50)
        allowed = {"provider", "model", "feature", "notebook", "status", "pipeline", "node"}
        bad = [b for b in by if b not in allowed] + [k for k in args if k not in allowed]
        if bad:
            fields = ", ".join(sorted(allowed))
            raise BadInput(f"unknown usage field(s) {', '.join(bad)}: use {fields}")

        def collect() -> dict[str, Any]:
            ledger = self.engine.ledger
            return {
                "since": since,
                "until": until,
                "by": by,
                "bucket": bucket,
                "groups": ledger.summary(by, since=since, until=until, bucket=bucket, **args),
                "total_usd": str(ledger.spend(since=since, until=until, **args)),
                "recent": ledger.recent(limit=limit, since=since, until=until, **args),
            }

        return await asyncio.to_thread(collect)

    async def models(self) -> dict[str, Any]:
        def collect() -> dict[str, Any]:
            from .. import pricing

            settings = load_settings()
            return {
                "providers": sorted(set(BUILTIN) | set(settings.endpoints)),
                "models": pricing.list_models(),
                "aliases": settings.aliases,
            }

        return await asyncio.to_thread(collect)

    async def prices(self, model: str | None) -> dict[str, Any]:
        def collect() -> dict[str, Any]:
            from .. import pricing

            if model:
                from ..models import parse_model

                ref = parse_model(model)
                price = pricing.price_for(ref.provider, ref.model)
                if price is None:
                    raise NotFound(f"no price for {model}: its calls are recorded as cost unknown")
                return {"model": ref.id, "price": price}
            return {"version": pricing.price_version(), "models": pricing.list_models()}

        return await asyncio.to_thread(collect)

    async def budgets(self) -> dict[str, Any]:
        from .. import budgets

        def collect() -> dict[str, Any]:
            return {"budgets": budgets.status(self.engine.ledger)}

        return await asyncio.to_thread(collect)

    async def set_budgets(self, body: dict[str, Any]) -> dict[str, Any]:
        from .. import budgets

        items = body.get("budgets")
        if not isinstance(items, list):
            raise BadInput("'budgets' must be a list of budget objects")
        await asyncio.to_thread(budgets.replace_budgets, items)
        return await self.budgets()

    # ------------------------------------------------------------------ config
    async def get_config(self) -> dict[str, Any]:
        def collect() -> dict[str, Any]:
            from ..models import default_model

            settings = load_settings()
            data = settings.to_json()
            data["effective_default_model"] = default_model(settings)
            return data

        return await asyncio.to_thread(collect)

    async def set_config(self, body: dict[str, Any]) -> dict[str, Any]:
        allowed = {"default_model", "aliases", "endpoints", "require_server"}
        unknown = set(body) - allowed
        if unknown:
            names = ", ".join(sorted(unknown))
            raise BadInput(f"unknown setting(s) {names}: use {', '.join(sorted(allowed))}")

        def change(settings: Any) -> None:
            if "default_model" in body:
                value = body["default_model"]
                if value is not None and not isinstance(value, str):
                    raise BadInput("'default_model' must be a string or null")
                settings.default_model = value or None
            if "aliases" in body:
                aliases = body["aliases"]
                if not isinstance(aliases, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
                ):
                    raise BadInput("'aliases' must map names to model ids")
                settings.aliases = dict(aliases)
            if "endpoints" in body:
                endpoints = body["endpoints"]
                if not isinstance(endpoints, dict):
                    raise BadInput("'endpoints' must map names to {base_url, wire, needs_key}")
                try:
                    settings.endpoints = {
                        str(name): Endpoint(**value) for name, value in endpoints.items()
                    }
                except TypeError as exc:
                    raise ConfigError(f"invalid endpoint: {exc}") from None
                clash = set(settings.endpoints) & set(BUILTIN)
                if clash:
                    raise BadInput(f"endpoint names clash with built-in providers: {sorted(clash)}")
            if "require_server" in body:
                settings.require_server = bool(body["require_server"])

        await asyncio.to_thread(update_settings, change)
        return await self.get_config()
