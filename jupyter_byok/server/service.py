"""The one service object the REST handlers call (kept in ``web_app.settings``).

It owns the keystore and the engine of the server process. Blocking work (keystore,
ledger, settings files) runs in worker threads so that the Tornado loop never waits on
disk; provider calls are async all the way.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, cast

from .._version import __version__
from ..config import Endpoint, load_settings, update_settings
from ..engine import Engine, build_messages
from ..errors import ByokError, InvalidInputError
from ..keys import Keystore
from ..providers import BUILTIN, SECRET_NAMESPACE, env_base_urls, get_spec
from ..redact import mask_value
from ..types import Completion, Message, Request
from ._replies import (
    BudgetsReply,
    BudgetStatus,
    CompletionDict,
    ConfigReply,
    KeyInfoDict,
    KeysReply,
    KeystoreStatus,
    LedgerHealth,
    ModelsReply,
    PriceReply,
    PriceTableReply,
    SearchReply,
    StatusReply,
    UsageGroup,
    UsageReply,
    UsageRow,
    VerifyReply,
)
from ._wire import (
    USAGE_FILTERS,
    AddKeyBody,
    BudgetsBody,
    CompleteBody,
    ConfigBody,
    SearchBody,
    usage_query,
)

__all__ = ["BadInput", "ByokService", "Forbidden", "NotFound", "TooLarge"]


class BadInput(InvalidInputError):
    """A malformed request (400)."""


class NotFound(ByokError):
    """No such key id (404)."""


class TooLarge(BadInput):
    """A request body over the size limit (413)."""


class Forbidden(ByokError):
    """An authorized user without the permission this change needs (403)."""


#: a status snapshot nothing has changed since is served for this long (the time windows,
#: "today" and budget periods, move on their own)
STATUS_TTL_S = 2.0
#: while calls are in flight, a status snapshot up to this old is served, and one older
#: than STATUS_BUSY_REFRESH_S is replaced in the background (one collection at a time)
STATUS_BUSY_AGE_S = 1.0
STATUS_BUSY_REFRESH_S = 0.25


class _Marks(NamedTuple):
    edits: int
    settled: int
    files: tuple[tuple[int, int, int] | None, ...]


class _Snapshot(NamedTuple):
    body: str  # the JSON reply, masked
    taken: float  # time.monotonic() when its collection was requested
    edits: int
    settled: int
    files: tuple[tuple[int, int, int] | None, ...]


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """A background refresh nobody awaited may fail quietly (the next request retries)."""
    if not future.cancelled():
        future.exception()


def parse_endpoints(value: Any) -> dict[str, Endpoint]:
    """Endpoints from a request body, each checked (see :meth:`Endpoint.parse`)."""
    if not isinstance(value, dict):
        raise BadInput("'endpoints' must map names to {base_url, wire, needs_key, ...} objects")
    from ..providers import parse_endpoint

    return {name: parse_endpoint(name, item, value) for name, item in value.items()}


def _check_default_model(settings: Any) -> None:
    """A default model is PROVIDER:MODEL, or an alias of one, naming a known provider."""
    value = text = settings.default_model
    seen: set[str] = set()
    while text in settings.aliases and text not in seen:
        seen.add(text)
        text = settings.aliases[text]
    provider, colon, model = text.partition(":")
    if not colon or not provider or not model:
        raise BadInput(
            f"'default_model' {value!r} is not PROVIDER:MODEL (for example "
            "openai:gpt-4o-mini) or an alias of one"
        )
    if provider not in BUILTIN and provider not in settings.endpoints:
        known = ", ".join(sorted(set(BUILTIN) | set(settings.endpoints)))
        raise BadInput(f"'default_model' {value!r}: unknown provider {provider!r}; use {known}")


def _str(body: Mapping[str, Any], name: str, default: str | None = None) -> str | None:
    value = body.get(name, default)
    if value is not None and not isinstance(value, str):
        raise BadInput(f"'{name}' must be a string")
    return value


class ByokService:
    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine if engine is not None else Engine(allow_local=False, offload=True)
        # environment keys are bound to the provider base URLs this server saw at start
        self.engine.env_base_urls = env_base_urls()
        self._status_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="byok-status")
        self._snapshot: _Snapshot | None = None
        self._refresh: tuple[_Marks, asyncio.Future[_Snapshot]] | None = None
        #: calls in flight through this service, and change counters: ``_settled`` counts
        #: finished calls (new ledger rows), ``_edits`` key, settings and budget changes
        self._in_flight = 0
        self._settled = 0
        self._edits = 0
        #: the one full garbage collection after the first calls has been run
        self._collected = False

    @property
    def keystore(self) -> Keystore:
        return self.engine.keystore

    # ------------------------------------------------------------------ status
    async def status(self) -> StatusReply:
        """The status as a dict (see :meth:`status_json`)."""
        data: StatusReply = json.loads(await self.status_json())
        return data

    def status_now(self) -> str | None:
        """The status reply (JSON) if a snapshot may be served as it is, else ``None``.

        Polled by every open JupyterLab (status bar), so it is answered from a snapshot,
        on the loop, without a thread hop: a snapshot nothing has changed since (no call
        finished, no key, setting or budget changed through this server, the state files
        unchanged on disk) is served for up to ``STATUS_TTL_S``. While calls are in
        flight, when today's spend moves with every call that ends, a snapshot up to
        ``STATUS_BUSY_AGE_S`` old is served and a fresh one is collected in the background;
        ``as_of`` in the reply says when it was collected. A key, setting or budget changed
        through this server always invalidates it.
        """
        snap = self._snapshot
        if snap is None or snap.edits != self._edits:
            return None
        now = time.monotonic()
        age = now - snap.taken
        if self._in_flight and age < STATUS_BUSY_AGE_S:
            idle = self._refresh is None or self._refresh[1].done()
            if idle and snap.settled != self._settled and age >= STATUS_BUSY_REFRESH_S:
                self._start_refresh()
            return snap.body
        if age < STATUS_TTL_S and snap.settled == self._settled and snap.files == self._files():
            return snap.body
        return None

    async def status_json(self) -> str:
        """The status reply: the snapshot if :meth:`status_now` serves it, else a collection
        that sees every change made before this request (on a thread of its own, so that it
        never queues behind the key lookups of calls in flight)."""
        body = self.status_now()
        if body is not None:
            return body
        return (await self._start_refresh()).body

    def _start_refresh(self) -> asyncio.Future[_Snapshot]:
        """The collection under way if nothing has changed since it started (concurrent
        requests share it), else a new one (the status thread runs them one at a time)."""
        marks = _Marks(self._edits, self._settled, self._files())
        if self._refresh is not None and self._refresh[0] == marks and not self._refresh[1].done():
            return self._refresh[1]
        started = time.monotonic()
        future = asyncio.get_running_loop().run_in_executor(self._status_pool, self._collect)

        snapshot: asyncio.Future[_Snapshot] = asyncio.get_running_loop().create_future()

        def collected(done: asyncio.Future[str]) -> None:
            if done.cancelled():
                snapshot.cancel()
                return
            exc = done.exception()
            if exc is not None:
                snapshot.set_exception(exc)
                return
            snap = _Snapshot(done.result(), started, *marks)
            if self._snapshot is None or snap.taken >= self._snapshot.taken:
                self._snapshot = snap
            snapshot.set_result(snap)

        future.add_done_callback(collected)
        snapshot.add_done_callback(_retrieve)
        self._refresh = (marks, snapshot)
        return snapshot

    def _files(self) -> tuple[tuple[int, int, int] | None, ...]:
        """Stat signatures of the state files the status reads (changes by other processes:
        the CLI, a kernel running a local model)."""
        from ..config import home_file

        ledger = self.engine.ledger.path
        paths = (
            self.keystore.path,
            home_file("config.json"),
            home_file("budgets.json"),
            ledger,
            ledger.with_name(ledger.name + "-wal"),
        )
        return tuple(_signature(p) for p in paths)

    def _collect(self) -> str:
        from ..models import default_model

        settings = load_settings()
        as_of = time.time()
        keystore = cast(KeystoreStatus, self.keystore.status())
        ledger = self.engine.ledger
        # a fresh check (a statvfs; a write only to retry rows kept pending): the status
        # shows a full disk or a broken file before the next call runs into it
        ledger.check_writable()
        health = cast(LedgerHealth, ledger.health())
        ledger_error = health["error"]
        spend: str | None = None
        try:
            spend = str(ledger.spend(since="today"))
        except ByokError as exc:
            ledger_error = ledger_error or str(exc)
        data: StatusReply = {
            "version": __version__,
            "as_of": as_of,
            "keystore": keystore,
            "default_model": default_model(settings),
            "ledger_error": ledger_error,
            "ledger": health,
            "spend_today_usd": spend,
            "budgets": [],
        }
        try:
            from .. import budgets

            data["budgets"] = cast(list[BudgetStatus], budgets.status(self.engine.ledger))
        except ByokError as exc:
            data["budgets_error"] = str(exc)
        return json.dumps(mask_value(data), default=str)

    def _edited(self) -> None:
        self._edits += 1

    def _call_started(self) -> None:
        self._in_flight += 1

    def _call_ended(self) -> None:
        self._in_flight -= 1
        self._settled += 1
        if self._in_flight == 0 and not self._collected:
            # The first calls import the engine's working set (HTTP stack, providers,
            # pricing: ~100,000 objects), which would make Python's next full garbage
            # collection (~150 ms in one loop turn) land in the next busy moment; it runs
            # now instead, once, while nothing is in flight (see server._collect_once_serving).
            import gc

            self._collected = True
            asyncio.get_running_loop().call_soon(gc.collect)

    # -------------------------------------------------------------------- keys
    async def list_keys(self) -> KeysReply:
        from ..keys import keys_overview

        return cast(KeysReply, await asyncio.to_thread(keys_overview, self.keystore))

    async def add_key(self, body: AddKeyBody) -> KeyInfoDict:
        provider = _str(body, "provider")
        secret = body.get("key")
        if not provider:
            raise BadInput("'provider' is required (openai, anthropic, gemini, xai, tavily, ...)")
        if not isinstance(secret, str):
            raise BadInput("'key' is required and must be a string")
        name = _str(body, "name", "default") or "default"
        tier = _str(body, "tier")
        base_url = _str(body, "base_url")
        allow_http = body.get("allow_http", False)
        if not isinstance(allow_http, bool):
            raise BadInput("'allow_http' must be true or false")
        if provider != SECRET_NAMESPACE:
            get_spec(provider)
        try:
            info = await asyncio.to_thread(
                functools.partial(
                    self.keystore.set,
                    provider,
                    secret,
                    name,
                    tier=tier,
                    base_url=base_url,
                    allow_http=allow_http,
                )
            )
        finally:
            self._edited()
        return cast(KeyInfoDict, info.to_dict())

    def _find(self, key_id: str) -> Any:
        for info in self.keystore.list():
            if info.id == key_id:
                return info
        raise NotFound(f"no stored key with id {key_id}; GET /byok/keys lists them")

    async def delete_key(self, key_id: str) -> None:
        def run() -> None:
            info = self._find(key_id)
            self.keystore.delete(info.provider, info.name)

        try:
            await asyncio.to_thread(run)
        finally:
            self._edited()

    async def verify_key(self, key_id: str) -> VerifyReply:
        from ..keys import check_key

        info = await asyncio.to_thread(self._find, key_id)
        if info.provider == SECRET_NAMESPACE:
            raise BadInput("named secrets have no provider to verify against")
        # the same check as `jupyter byok keys verify`, and the same binding as a call: the
        # key goes to the origin it was stored for, or nowhere
        try:
            result = await check_key(
                info.provider,
                info.name,
                store=self.keystore,
                client=self.engine.client(),
                env_base_urls=self.engine.env_base_urls,
            )
        finally:
            self._edited()
        result.pop("source", None)
        result.pop("last4", None)
        return cast(VerifyReply, {"id": key_id, **result, "label": info.label})

    # ------------------------------------------------------------------- calls
    def parse_request(self, body: CompleteBody) -> Request:
        """A request from a body already checked against ``CompleteBody`` (see _wire):
        ``Request.from_dict``, with ``prompt`` as one user message and ``system`` put first."""
        request = Request.from_dict(body)
        if "messages" not in body and "prompt" in body:
            request.messages = [Message("user", body["prompt"])]
        if not request.messages:
            raise BadInput("'messages' must be a non-empty list of {role, content} objects")
        request.messages = build_messages(request.messages, body.get("system"))
        # The model id is resolved by the engine: an unknown provider or a local model is
        # still a 400, as the stream sends nothing before its first piece (see relay).
        return request

    async def complete(self, request: Request) -> CompletionDict:
        self._call_started()
        try:
            completion = await self.engine.acomplete(request)
        finally:
            self._call_ended()
        return completion.to_dict()

    async def stream(self, request: Request) -> AsyncIterator[str | CompletionDict]:
        self._call_started()
        try:
            async for item in self.engine.astream(request):
                yield item.to_dict() if isinstance(item, Completion) else item
        finally:
            self._call_ended()

    async def search(self, body: SearchBody) -> SearchReply:
        """A search from a body already checked against ``SearchBody`` (see _wire)."""
        query = body["query"]
        if not query.strip():
            raise BadInput("'query' must not be empty")
        extra: dict[str, Any] = {
            k: v for k, v in body.items() if k not in ("query", "depth", "origin", "feature")
        }
        self._call_started()
        try:
            result = await self.engine.asearch(
                query,
                depth=body.get("depth", "basic"),
                feature=body.get("feature") or "search",
                origin=body.get("origin") or {},
                **extra,
            )
        finally:
            self._call_ended()
        return result.to_dict()

    # ------------------------------------------------------------------- usage
    async def usage(self, args: dict[str, str]) -> UsageReply:
        query: dict[str, Any] = dict(usage_query(args))
        since = query.pop("since", None) or "30d"
        until = query.pop("until", None) or None
        by = [b for b in (query.pop("by", None) or "provider").split(",") if b]
        bucket = query.pop("bucket", None) or None
        limit = query.pop("limit", None) or 50
        scope = query.pop("scope", None) or None
        allowed = set(USAGE_FILTERS)
        bad = [b for b in by if b not in allowed]
        if bad:
            fields = ", ".join(sorted(allowed))
            shown = ", ".join(repr(b[:40]) for b in bad[:3])
            raise BadInput(f"cannot group usage by {shown}: use {fields}")
        args = query  # the filters

        def collect() -> UsageReply:
            from ..ledger import scope_args

            ledger = self.engine.ledger
            filters = {**args, **scope_args(ledger, scope)}  # a ConfigError is a 400
            groups = ledger.summary(by, since=since, until=until, bucket=bucket, **filters)
            recent = ledger.recent(limit=limit, since=since, until=until, **filters)
            return {
                "since": since,
                "until": until,
                "by": by,
                "bucket": bucket,
                "groups": cast(list[UsageGroup], groups),
                "total_usd": str(ledger.spend(since=since, until=until, **filters)),
                "recent": cast(list[UsageRow], recent),
            }

        return await asyncio.to_thread(collect)

    async def models(self) -> ModelsReply:
        def collect() -> ModelsReply:
            from .. import pricing
            from ..completion import model_ids

            settings = load_settings()
            return {
                "providers": sorted(set(BUILTIN) | set(settings.endpoints)),
                "models": pricing.list_models(),
                "aliases": settings.aliases,
                "choices": model_ids(),
            }

        return await asyncio.to_thread(collect)

    async def prices(self, model: str | None) -> PriceReply | PriceTableReply:
        def collect() -> PriceReply | PriceTableReply:
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

    async def budgets(self) -> BudgetsReply:
        from .. import budgets

        def collect() -> BudgetsReply:
            return {"budgets": cast(list[BudgetStatus], budgets.status(self.engine.ledger))}

        return await asyncio.to_thread(collect)

    async def set_budgets(self, body: BudgetsBody) -> BudgetsReply:
        from .. import budgets

        items = body.get("budgets")
        if not isinstance(items, list):
            raise BadInput("'budgets' must be a list of budget objects")
        try:
            await asyncio.to_thread(budgets.replace_budgets, items)
        finally:
            self._edited()
        return await self.budgets()

    # ------------------------------------------------------------------ config
    async def get_config(self) -> ConfigReply:
        def collect() -> ConfigReply:
            from ..models import default_model

            settings = load_settings()
            data = cast(ConfigReply, settings.to_json())
            data["effective_default_model"] = default_model(settings)
            return data

        return await asyncio.to_thread(collect)

    async def changes_endpoints(self, body: ConfigBody) -> bool:
        """Whether this ``PUT /byok/config`` body adds, changes or removes an endpoint
        (which needs the ``jupyter_byok:endpoints`` permission, see ConfigHandler)."""
        if "endpoints" not in body:
            return False
        current = await asyncio.to_thread(load_settings)
        try:
            proposed = parse_endpoints(body["endpoints"])
        except ByokError:
            return True
        return proposed != current.endpoints

    async def set_config(self, body: ConfigBody) -> ConfigReply:
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
                settings.default_model = value.strip() if value else None
            if "aliases" in body:
                aliases = body["aliases"]
                if not isinstance(aliases, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
                ):
                    raise BadInput("'aliases' must map names to model ids")
                settings.aliases = dict(aliases)
            if "endpoints" in body:
                settings.endpoints = parse_endpoints(body["endpoints"])
            if "require_server" in body:
                settings.require_server = bool(body["require_server"])
            if "default_model" in body and settings.default_model:
                _check_default_model(settings)

        try:
            await asyncio.to_thread(update_settings, change)
        finally:
            self._edited()
        return await self.get_config()
