"""The one façade that magics, pipelines, widgets and the public API call.

It picks the transport:

* **server**: in a kernel started by a Jupyter server running jupyter_byok, cloud calls go
  to that server's ``/byok/complete`` with the server's token, so the plaintext key never
  enters the kernel. The server is found through ``JPY_PARENT_PID`` and the runtime files.
* **in-process**: with no such server (nbclient, papermill, scripts) the engine runs here
  with the same keystore, unless the user forbids it (``require_server`` in settings or
  ``JUPYTER_BYOK_REQUIRE_SERVER=1``).

Local models always run in this process (the kernel), whichever transport is used.
"""

from __future__ import annotations

import asyncio
import json
import os
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import errors
from ._runner import close_with_loop, iter_sync, run_sync
from .config import Settings, load_settings
from .errors import ByokError, ProviderConnectionError
from .models import ModelRef, parse_model
from .redact import Secret
from .types import Completion, Request, SearchResult
from .validate import check_params, check_search_options

if TYPE_CHECKING:
    from .keys import KeySource

__all__ = ["Client", "ServerInfo", "find_server", "get_client"]


@dataclass(frozen=True)
class ServerInfo:
    url: str
    token: str

    def __repr__(self) -> str:
        return f"ServerInfo(url={self.url!r})"


def find_server() -> ServerInfo | None:
    """The Jupyter server that started this kernel, if it runs jupyter_byok."""
    parent = os.environ.get("JPY_PARENT_PID")
    if not parent:
        return None
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:  # pragma: no cover - jupyter_server is a dependency
        return None
    for info in list_running_servers():
        if str(info.get("pid")) == parent:
            url = str(info.get("url", ""))
            if not url.endswith("/"):
                url += "/"
            return ServerInfo(url=url, token=str(info.get("token", "")))
    return None


def default_origin() -> dict[str, str]:
    origin: dict[str, str] = {}
    notebook = os.environ.get("JPY_SESSION_NAME")
    if notebook:
        origin["notebook"] = notebook
    return origin


def _error_from_json(data: dict[str, Any], status: int) -> ByokError:
    if status == 404 and "error" not in data:
        return ByokError(
            "the Jupyter server running this kernel does not have the jupyter_byok server "
            "extension enabled: run `jupyter server extension enable jupyter_byok` and restart it"
        )
    name = str(data.get("error", "ByokError"))
    message = str(data.get("message") or f"the jupyter_byok server answered {status}")
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, ByokError):
        if issubclass(cls, errors.ProviderError):
            return cls(message, provider=str(data.get("provider", "")), status_code=status)
        return cls(message)
    return ByokError(message)


def request_to_json(request: Request) -> dict[str, Any]:
    """The body of ``POST /byok/complete`` (read back by ``Request.from_dict``)."""
    return dict(request.to_dict())


class Client:
    """Routes calls to the kernel's Jupyter server or to the in-process engine."""

    def __init__(self, transport: str = "auto", *, server: ServerInfo | None = None) -> None:
        """``server``: the Jupyter server to use (default: the one that started this kernel,
        found on first use)."""
        if transport not in ("auto", "server", "inprocess"):
            raise ByokError(f"unknown transport {transport!r}: use auto, server or inprocess")
        self._transport = transport
        self._server: ServerInfo | None = server
        self._looked = server is not None
        self._https: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def server(self) -> ServerInfo | None:
        if self._transport == "inprocess":
            return None
        if not self._looked:
            self._server, self._looked = find_server(), True
        return self._server

    @property
    def transport(self) -> str:
        return "server" if self.server is not None else "inprocess"

    def _engine(self, settings: Settings | None = None) -> Any:
        from .engine import get_engine

        required = (
            self._transport == "server"
            or os.environ.get("JUPYTER_BYOK_REQUIRE_SERVER") == "1"
            or (settings or load_settings()).require_server
        )
        if required:
            raise ByokError(
                "no Jupyter server with jupyter_byok was found for this kernel, and in-process "
                "calls are turned off (require_server); start JupyterLab with jupyter_byok "
                "installed, or turn require_server off with `%byok config require_server false`"
            )
        return get_engine()

    def _route(self, request: Request) -> tuple[str, ModelRef, Settings]:
        """``server``, ``local`` (a local model, always in this process) or ``engine``,
        with the parsed model id and the settings it was parsed with. The parameters are
        checked here, before any route: the same schema as the server's (see validate)."""
        request.params = check_params(request.params, "the call's parameters")
        settings = load_settings()
        ref = parse_model(request.model, settings)
        if ref.is_local:
            return "local", ref, settings
        return ("server" if self.server is not None else "engine"), ref, settings

    # ----------------------------------------------------------------- async
    async def acomplete(self, request: Request, *, key: str | Secret | None = None) -> Completion:
        if not request.origin:
            request.origin = default_origin()
        route, ref, settings = self._route(request)
        if route == "server" and key is None:
            return await self._server_complete(request)
        if route == "local":
            from .engine import get_engine

            return await get_engine().acomplete(request, key=key, ref=ref)
        return await self._engine(settings).acomplete(request, key=key, ref=ref)

    async def astream(
        self, request: Request, *, key: str | Secret | None = None
    ) -> AsyncIterator[str | Completion]:
        if not request.origin:
            request.origin = default_origin()
        route, ref, settings = self._route(request)
        if route == "server" and key is None:
            async for item in self._server_stream(request):
                yield item
            return
        if route == "local":
            from .engine import get_engine

            engine = get_engine()
        else:
            engine = self._engine(settings)
        async for item in engine.astream(request, key=key, ref=ref):
            yield item

    async def asearch(self, query: str, **kwargs: Any) -> SearchResult:
        options = {
            k: v for k, v in kwargs.items() if k not in ("depth", "feature", "origin", "key")
        }
        check_search_options(options, "the search options")
        if self.server is not None and kwargs.get("key") is None:
            kwargs.pop("key", None)
            data = await self._post("search", {"query": query, **kwargs})
            return SearchResult.from_dict(data)
        result: SearchResult = await self._engine().asearch(query, **kwargs)
        return result

    # ------------------------------------------------------------ local models
    async def alocal_pull(
        self, spec: str, *, show_progress: bool = False, **options: Any
    ) -> dict[str, Any]:
        """Pull a GGUF model and register it (``options``: ``name``, ``quant``, ``sha256``,
        ``n_gpu_layers``); the result as :meth:`PullResult.to_dict
        <jupyter_byok.local_models.PullResult.to_dict>`.

        With a server, the server downloads it (``POST /byok/local/pulls``), with the Hub
        token from its keystore: the token never enters this process, which only shows
        the progress. Without one, the pull runs here, as ``jupyter byok local pull`` does.
        """
        options = {k: v for k, v in options.items() if v is not None}
        if self.server is None:
            from .local_models import pull

            result = await asyncio.to_thread(pull, spec, show_progress=show_progress, **options)
            return result.to_dict()
        job = await self._post("local/pulls", {"spec": spec, **options})
        bar: Any = None
        try:
            while job["state"] == "running":
                bar = _show_pull(bar, job.get("progress") or {}, show_progress)
                await asyncio.sleep(0.2)
                job = await self._rest("GET", f"local/pulls/{job['id']}")
            if job["state"] == "done" and bar is not None:
                bar.update(bar.total - bar.n if bar.total else 0)
        except BaseException:  # interrupted or cancelled: stop the download (the part is kept)
            if job.get("state") == "running":
                await asyncio.shield(self._rest("DELETE", f"local/pulls/{job['id']}"))
            raise
        finally:
            if bar is not None:
                bar.close()
        if job["state"] == "done":
            return dict(job["result"])
        if job["state"] == "cancelled":
            raise errors.LocalModelError(
                f"the pull of {spec} was cancelled; the part downloaded is kept: pull again "
                "to resume"
            )
        raise errors.LocalModelError(str(job.get("error") or f"the pull of {spec} failed"))

    def local_pull(
        self, spec: str, *, show_progress: bool = False, **options: Any
    ) -> dict[str, Any]:
        """:meth:`alocal_pull` from synchronous code."""
        return run_sync(self.alocal_pull(spec, show_progress=show_progress, **options))

    # ----------------------------------------------------------------- sync
    def complete(self, request: Request, *, key: str | Secret | None = None) -> Completion:
        return run_sync(self.acomplete(request, key=key))

    def stream(
        self, request: Request, *, key: str | Secret | None = None
    ) -> Iterator[str | Completion]:
        return iter_sync(self.astream(request, key=key))

    def search(self, query: str, **kwargs: Any) -> SearchResult:
        return run_sync(self.asearch(query, **kwargs))

    # ------------------------------------------------------------------- keys
    # What may be known about keys, never a key: the server's keystore and environment
    # when this kernel has a server, this process's otherwise.
    def keys_overview(self) -> dict[str, Any]:
        """What ``GET /byok/keys`` answers: the stored keys' metadata, per built-in provider
        whether a key is configured, the store's protection tier."""
        if self.server is not None:
            return run_sync(self._rest("GET", "keys"))
        from .keys import Keystore, keys_overview

        return keys_overview(Keystore())

    def key_sources(self) -> list[KeySource]:
        """Every provider key that can be used, and where each comes from."""
        from .keys import KeyInfo, key_sources

        overview = self.keys_overview()
        stored = [KeyInfo.from_dict(k) for k in overview["keys"]]
        return key_sources(stored, _env_seen(overview))

    def key_source(self, provider: str, name: str = "default") -> KeySource:
        """Where the key for ``provider@name`` comes from (see :func:`keys.key_source`)."""
        from .keys import KeyInfo, key_source

        overview = self.keys_overview()
        stored = [KeyInfo.from_dict(k) for k in overview["keys"]]
        return key_source(provider, name, stored=stored, environ=_env_seen(overview))

    def delete_key(self, provider: str, name: str = "default") -> bool:
        """Delete a stored key; ``False`` when there is none."""
        if self.server is None:
            from .keys import Keystore

            return Keystore().delete(provider, name)
        for key in self.keys_overview()["keys"]:
            if key["provider"] == provider and key["name"] == name:
                run_sync(self._rest("DELETE", f"keys/{key['id']}"))
                return True
        return False

    # ------------------------------------------------------- server transport
    def _http(self) -> Any:
        """The client to this kernel's server for the running loop, kept between calls
        (keep-alive; building a client costs ~20 ms of TLS setup alone) and closed with
        its loop."""
        import httpx

        assert self.server is not None
        loop = asyncio.get_running_loop()
        http = self._https.get(loop)
        if http is None or http.is_closed:
            http = httpx.AsyncClient(
                base_url=self.server.url,
                headers={"Authorization": f"token {self.server.token}"},
                timeout=httpx.Timeout(600.0, connect=5.0),
                trust_env=False,  # the server is on this machine: never through a proxy
            )
            self._https[loop] = http
            close_with_loop(loop, http.aclose)
        return http

    async def _post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._rest("POST", endpoint, body)

    async def _rest(
        self, method: str, endpoint: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        import httpx

        try:
            response = await self._http().request(method, f"byok/{endpoint}", json=body)
        except httpx.HTTPError as exc:
            raise ProviderConnectionError(
                f"could not reach the Jupyter server for jupyter_byok ({type(exc).__name__}); "
                "is JupyterLab still running?"
            ) from None
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            raise _error_from_json(data, response.status_code)
        return dict(data)

    async def _server_complete(self, request: Request) -> Completion:
        body = request_to_json(request)
        body["stream"] = False
        return Completion.from_dict(await self._post("complete", body))

    async def _server_stream(self, request: Request) -> AsyncIterator[str | Completion]:
        import httpx

        body = request_to_json(request)
        body["stream"] = True
        http = self._http()
        try:
            async with http.stream("POST", "byok/complete", json=body) as response:
                if response.status_code >= 400:
                    raw = await response.aread()
                    try:
                        data = json.loads(raw)
                    except ValueError:
                        data = {}
                    raise _error_from_json(data, response.status_code)
                event = "message"
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data = json.loads(line[5:].strip())
                        if event == "delta":
                            yield str(data.get("text", ""))
                        elif event == "done":
                            yield Completion.from_dict(data)
                        elif event == "error":
                            raise _error_from_json(data, int(data.get("status", 500)))
                    elif not line:
                        event = "message"
        except httpx.HTTPError as exc:
            raise ProviderConnectionError(
                f"the stream from the Jupyter server broke off ({type(exc).__name__})"
            ) from None


def _show_pull(bar: Any, progress: dict[str, Any], show: bool) -> Any:
    """A ``tqdm.auto`` bar (terminal or notebook) following a server-side pull."""
    total = progress.get("total_bytes")
    if not show or not total:
        return bar
    if bar is None:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total,
            initial=progress.get("resumed_from") or 0,
            desc=str(progress.get("filename") or "pull"),
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
        )
    bar.update(max(0, int(progress.get("done_bytes") or 0) - bar.n))
    return bar


_client: Client | None = None


def _env_seen(overview: dict[str, Any]) -> dict[str, str]:
    """The environment variables a keys overview says are set (names only: no values)."""
    return {p["env_var"]: "set" for p in overview.get("providers", []) if p.get("env_var")}


def get_client() -> Client:
    global _client
    if _client is None:
        _client = Client()
    return _client
