"""REST handlers under ``{base_url}/byok/``: parse, call the service, map errors.

Every verb is authenticated (``@web.authenticated``) and authorized against a
``jupyter_byok:*`` resource (``APIHandler`` adds the origin check, and jupyter_server
enforces XSRF on cookie-authenticated requests). Keys are accepted only in POST bodies,
and no reply, log line or error ever carries a key value: replies are metadata, and
errors go through :meth:`ByokHandler.fail`, the one place that maps them to statuses.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Awaitable
from typing import Any, cast

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from .. import errors
from ..redact import mask_value
from ..validate import Checker, loads
from . import _wire
from .service import BadInput, ByokService, Forbidden, NotFound, TooLarge

MAX_BODY = 1_000_000
#: the permission a PUT /byok/config needs, beyond jupyter_byok:config, to add, change or
#: remove an endpoint
ENDPOINTS_RESOURCE = "jupyter_byok:endpoints"
#: other users' usage in a shared ledger (``GET /byok/usage?scope=team|all``): an admin view
TEAM_RESOURCE = "jupyter_byok:team"
FLUSH_INTERVAL_S = 0.02
#: calls (complete, search) that may start in one turn of the event loop; see Turns
STARTS_PER_TURN = 8

#: Domain errors -> HTTP status. Order matters: subclasses first.
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (TooLarge, 413),
    (Forbidden, 403),
    (BadInput, 400),
    (errors.InvalidInputError, 400),
    (NotFound, 404),
    (errors.InvalidSecretError, 400),
    (errors.ModelIdError, 400),
    (errors.UnknownProviderError, 400),
    (errors.ConfigError, 400),
    (errors.MissingKeyError, 400),
    (errors.LocalModelError, 400),
    (errors.KeystoreError, 409),
    (errors.BudgetExceededError, 402),
    (errors.QuotaExceededError, 402),
    (errors.RateLimitError, 429),
    (errors.ProviderTimeoutError, 504),
    (errors.BadRequestError, 400),
    (errors.AuthenticationError, 502),
    (errors.ProviderError, 502),
    (errors.LedgerUnavailableError, 503),
    (errors.LedgerError, 500),
    (errors.ByokError, 500),
)


def status_for(exc: BaseException) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: BaseException, status: int) -> dict[str, Any]:
    body: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc), "status": status}
    if isinstance(exc, errors.ProviderError):
        body["provider"] = exc.provider
        body["provider_status"] = exc.status_code
    return body


class Turns:
    """At most ``per_turn`` calls start their work in one turn of the event loop; the others
    wait for later turns, in arrival order.

    A burst of calls (a notebook's ``asyncio.gather`` of 200 completions) arrives in one
    read of the sockets. Without this, the loop runs the setup of all of them (the server's
    authentication, parsing, the engine up to the provider request) in a single turn of
    hundreds of milliseconds, and every other request (the status bar's poll, a file save)
    waits behind it. Started a few per turn, the calls' work interleaves with everything
    else; the first ones are already waiting on their provider while later ones start.
    Nothing is refused or reordered among the calls themselves.
    """

    def __init__(self, per_turn: int = STARTS_PER_TURN) -> None:
        self.per_turn = per_turn
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._started = 0
        self._armed = False

    def wait(self) -> asyncio.Future[None] | None:
        """``None`` if the caller may start now, else a future to await."""
        if not self._waiting and self._started < self.per_turn:
            self._started += 1
            self._arm()
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._arm()
        return future

    def _arm(self) -> None:
        if not self._armed:
            self._armed = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._armed = False
        self._started = 0
        while self._waiting and self._started < self.per_turn:
            future = self._waiting.popleft()
            if not future.done():  # a caller that went away meanwhile is skipped
                future.set_result(None)
                self._started += 1
        if self._started:
            self._arm()


@web.stream_request_body
class ByokHandler(APIHandler):
    """The base of every route. Request bodies are streamed (``data_received``) so that a
    body over ``MAX_BODY`` is refused from its ``Content-Length`` before any of it is read
    (413 at once, the connection then closed), and a body without one stops being kept
    past the limit; a body within it is in ``self.request.body`` as usual."""

    auth_resource = "jupyter_byok:status"

    async def prepare(self) -> None:  # type: ignore[override]  # as APIHandler.prepare
        if self.body_refused():
            return
        await super().prepare()

    def body_refused(self) -> bool:
        """Answer 413 (once) if the declared body is over ``MAX_BODY``; whether it was."""
        if self._finished:
            return True
        declared = self.request.headers.get("Content-Length")
        if declared is None:
            # chunked: kept up to the limit (data_received), and never read past a hard cap
            self.request.connection.set_max_body_size(4 * MAX_BODY)  # type: ignore[union-attr]
            return False
        size = int(declared) if declared.strip().isdigit() else -1
        if 0 <= size <= MAX_BODY:
            return False
        self.fail(TooLarge(f"request body too large ({size:,} bytes; limit {MAX_BODY:,})"))
        return True

    def data_received(self, chunk: bytes) -> None:
        if len(self.request.body) <= MAX_BODY:  # past it: body() answers 413
            self.request.body += chunk

    @property
    def service(self) -> ByokService:
        return self.settings["jupyter_byok"]

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(mask_value(data), default=str))

    def fail(self, exc: BaseException) -> None:
        status = status_for(exc)
        if status >= 500 and not isinstance(exc, errors.ByokError):
            self.log.error("jupyter_byok: unexpected %s", type(exc).__name__)
            exc = errors.ByokError("unexpected server error; see the server log")
        self.reply(error_body(exc, status), status)

    def body(self, shape: Checker | None = None) -> dict[str, Any]:
        """The JSON body, checked against ``shape`` (see ``_wire``): a body nested too
        deep, with NaN, an unknown field or a wrong type is a 400 naming what is wrong."""
        raw = self.request.body or b""
        if len(raw) > MAX_BODY:
            raise TooLarge(f"request body too large ({len(raw):,} bytes; limit {MAX_BODY:,})")
        if not raw.strip():
            data: Any = {}
        else:
            data = loads(raw)
        if not isinstance(data, dict):
            raise BadInput("request body must be a JSON object")
        if shape is not None:
            data = shape(data, "the request body")
        return dict(data)

    async def run(self, coro: Any, status: int = 200) -> None:
        try:
            result = await coro
        except (errors.ByokError, BadInput, NotFound) as exc:
            self.fail(exc)
            return
        self.reply(result, status)

    async def run_with_body(self, method: Any, shape: Checker, status: int = 200) -> None:
        """Parse the JSON body and check it against ``shape``, then reply with
        ``await method(body)``."""
        try:
            body = self.body(shape)
        except errors.ByokError as exc:
            self.fail(exc)
            return
        await self.run(method(body), status)


class StatusHandler(ByokHandler):
    auth_resource = "jupyter_byok:status"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        # Answered on the loop from the service's snapshot when it may be served (see
        # ByokService.status_now): a status bar poll never waits behind a busy loop twice.
        body = self.service.status_now()
        if body is None:
            try:
                body = await self.service.status_json()
            except errors.ByokError as exc:
                self.fail(exc)
                return
        self.set_header("Content-Type", "application/json")
        self.finish(body)


class KeysHandler(ByokHandler):
    auth_resource = "jupyter_byok:keys"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.run(self.service.list_keys())

    @web.authenticated
    @authorized
    async def post(self) -> None:
        await self.run_with_body(self.service.add_key, _wire.KEY, 201)


class KeyHandler(ByokHandler):
    auth_resource = "jupyter_byok:keys"

    @web.authenticated
    @authorized
    async def delete(self, key_id: str) -> None:
        try:
            await self.service.delete_key(key_id)
        except (errors.ByokError, NotFound) as exc:
            self.fail(exc)
            return
        self.set_status(204)
        self.finish()


class VerifyHandler(ByokHandler):
    auth_resource = "jupyter_byok:keys"

    @web.authenticated
    @authorized
    async def post(self, key_id: str) -> None:
        await self.run(self.service.verify_key(key_id))


class CallHandler(ByokHandler):
    """A handler of provider calls: each request waits for its turn (see :class:`Turns`)
    before any work on it, authentication included, which then runs as for any handler.

    A client that goes away (a kernel interrupted, a browser tab closed) cancels its call:
    the provider request is closed and the attempt recorded as ``cancelled``."""

    _task: asyncio.Task[Any] | None = None

    async def prepare(self) -> None:  # type: ignore[override]  # as APIHandler.prepare
        if self.body_refused():
            return
        turn = self.settings["jupyter_byok_turns"].wait()
        if turn is not None:
            await turn
        await super().prepare()

    _gone = False

    def on_connection_close(self) -> None:
        self._gone = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        super().on_connection_close()

    async def cancellable(self, work: Awaitable[None]) -> None:
        """Run ``work`` so that a client going away cancels it. That cancellation ends the
        request quietly, logged as 499 (client closed request): nobody is left to read a
        reply, and it is not the server's error."""
        self._task = task = asyncio.current_task()
        try:
            await work
        except asyncio.CancelledError:
            if not self._gone:
                raise  # the server is stopping
            if task is not None and hasattr(task, "uncancel"):  # Python 3.11+
                task.uncancel()
            self.set_status(499, "Client Closed Request")


class CompleteHandler(CallHandler):
    auth_resource = "jupyter_byok:complete"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        await self.cancellable(self._post())

    async def _post(self) -> None:
        try:
            body = self.body(_wire.COMPLETE)
            request = self.service.parse_request(cast(_wire.CompleteBody, body))
        except (errors.ByokError, BadInput) as exc:
            self.fail(exc)
            return
        if not request.stream:
            await self.run(self.service.complete(request))
            return
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("X-Accel-Buffering", "no")
        await self.relay(self.service.stream(request))

    async def relay(self, items: Any) -> None:
        """Server-sent events: ``delta`` per text piece, then ``done`` (or ``error``).

        Nothing is sent until there is something to say, so an error before the first
        piece (no key, budget, provider refusal) is still a plain JSON error with its
        status. Pieces that arrive together leave together in one write: a flush is
        scheduled for the end of the loop turn (``call_soon``), at most one per
        ``FLUSH_INTERVAL_S`` (a timer sends what is held back), and the ``done`` event
        cancels a pending flush and finishes the response. An answer that arrives in one
        piece from the provider (typical of short answers) costs one socket write, with a
        ``Content-Length``; a long one streams as chunks no more often than every 20 ms.
        """
        loop = asyncio.get_running_loop()
        pending: asyncio.Handle | None = None
        last_flush = -FLUSH_INTERVAL_S
        started = False

        def flush_now() -> None:
            nonlocal pending, last_flush
            pending, last_flush = None, loop.time()
            if not self._finished:
                self.flush().add_done_callback(_ignore_result)

        try:
            async for item in items:
                if isinstance(item, str):
                    started = True
                    self.write(f"event: delta\ndata: {json.dumps({'text': item})}\n\n")
                    if pending is None:
                        wait = last_flush + FLUSH_INTERVAL_S - loop.time()
                        pending = (
                            loop.call_soon(flush_now)
                            if wait <= 0
                            else loop.call_later(wait, flush_now)
                        )
                else:
                    started = True
                    payload = json.dumps(mask_value(item), default=str)
                    self.write(f"event: done\ndata: {payload}\n\n")
        except StreamClosedError:
            return
        except errors.ByokError as exc:
            status = status_for(exc)
            if not started:
                self.fail(exc)
                return
            payload = json.dumps(error_body(exc, status))
            self.write(f"event: error\ndata: {payload}\n\n")
        finally:
            if pending is not None:
                pending.cancel()
        if not self._finished:
            self.finish(set_content_type="text/event-stream")


def _ignore_result(future: asyncio.Future[Any]) -> None:
    """A flush to a client that has gone is not an error (the task is being cancelled)."""
    if not future.cancelled():
        future.exception()


class SearchHandler(CallHandler):
    auth_resource = "jupyter_byok:complete"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        await self.cancellable(self.run_with_body(self.service.search, _wire.SEARCH))


class UsageHandler(ByokHandler):
    auth_resource = "jupyter_byok:usage"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        args = {k: self.get_argument(k) for k in self.request.arguments}
        if args.get("scope", "me") not in ("", "me"):
            allowed = await ensure_async(
                self.authorizer.is_authorized(self, self.current_user, "read", TEAM_RESOURCE)
            )
            if not allowed:
                self.fail(Forbidden(f"other users' usage needs the {TEAM_RESOURCE} permission"))
                return
        await self.run(self.service.usage(args))


class ModelsHandler(ByokHandler):
    auth_resource = "jupyter_byok:config"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.run(self.service.models())


class PricesHandler(ByokHandler):
    auth_resource = "jupyter_byok:config"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.run(self.service.prices(self.get_argument("model", None)))


class BudgetsHandler(ByokHandler):
    auth_resource = "jupyter_byok:budgets"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.run(self.service.budgets())

    @web.authenticated
    @authorized
    async def put(self) -> None:
        await self.run_with_body(self.service.set_budgets, _wire.BUDGETS)


class ConfigHandler(ByokHandler):
    auth_resource = "jupyter_byok:config"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.run(self.service.get_config())

    @web.authenticated
    @authorized
    async def put(self) -> None:
        """A change to the endpoints (where calls, and so keys, may go) needs a permission
        of its own, ``jupyter_byok:endpoints``, beyond ``jupyter_byok:config``: a deployment
        can grant kernels ``config`` and ``complete`` and still deny them this."""
        try:
            body = cast(_wire.ConfigBody, self.body(_wire.CONFIG))
            if await self.service.changes_endpoints(body):
                allowed = await ensure_async(
                    self.authorizer.is_authorized(
                        self, self.current_user, "write", ENDPOINTS_RESOURCE
                    )
                )
                if not allowed:
                    raise Forbidden(
                        f"changing endpoints needs the {ENDPOINTS_RESOURCE} permission; "
                        "or use `jupyter byok endpoints add` in a terminal"
                    )
        except (errors.ByokError, BadInput) as exc:
            self.fail(exc)
            return
        await self.run(self.service.set_config(body))


# The panel's backup and restore: a module of their own, subclasses of ByokHandler (above).
from .backup_handlers import BackupHandler, RestoreHandler, RestoreUploadHandler  # noqa: E402

# Provider batches for kernels (map in batch mode), likewise.
from .batch_handlers import ROUTES as BATCH_ROUTES  # noqa: E402

# The panel's "Local models" section (the local model manager), likewise.
from .local_handlers import (  # noqa: E402
    JOB,
    NAME,
    LocalDefaultHandler,
    LocalModelHandler,
    LocalModelsHandler,
    LocalPullHandler,
    LocalPullsHandler,
    LocalTestHandler,
)

ROUTES: tuple[tuple[str, type[ByokHandler]], ...] = (
    ("status", StatusHandler),
    ("keys", KeysHandler),
    (r"keys/([A-Za-z0-9]+)", KeyHandler),
    (r"keys/([A-Za-z0-9]+)/verify", VerifyHandler),
    ("complete", CompleteHandler),
    ("search", SearchHandler),
    ("usage", UsageHandler),
    ("models", ModelsHandler),
    ("prices", PricesHandler),
    ("budgets", BudgetsHandler),
    ("config", ConfigHandler),
    ("backup", BackupHandler),
    ("restore/upload", RestoreUploadHandler),
    ("restore", RestoreHandler),
    ("local/models", LocalModelsHandler),
    (rf"local/models/{NAME}", LocalModelHandler),
    (rf"local/models/{NAME}/test", LocalTestHandler),
    ("local/default", LocalDefaultHandler),
    ("local/pulls", LocalPullsHandler),
    (rf"local/pulls/{JOB}", LocalPullHandler),
    *BATCH_ROUTES,
)


def setup_handlers(web_app: Any, service: ByokService) -> None:
    base_url = web_app.settings["base_url"]
    web_app.settings["jupyter_byok"] = service
    web_app.settings["jupyter_byok_turns"] = Turns()
    routes = [(url_path_join(base_url, "byok", path), handler) for path, handler in ROUTES]
    web_app.add_handlers(".*$", routes)
