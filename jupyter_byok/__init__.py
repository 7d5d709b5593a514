"""jupyter_byok: bring-your-own-key AI for Jupyter.

Your provider keys stay encrypted on your machine and go only to the provider you
call; every call lands in a usage ledger. Importing this package is cheap: it never
imports pandas, plotly or llama_cpp, and never touches the network.

    >>> import jupyter_byok as byok
    >>> byok.complete("local:smollm2", "What is the capital of France?").text
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import ByokError, MissingKeyError
from .redact import Secret
from .streaming import Stream
from .types import Completion, Message, SearchResult, Usage

if TYPE_CHECKING:
    import pandas

    from .engine import Estimate
    from .keys import Keystore, resolve_key
    from .pipeline import Pipeline
    from .widgets import PipelineBuilder

__all__ = [
    "ByokError",
    "Completion",
    "Keystore",
    "Message",
    "MissingKeyError",
    "Pipeline",
    "PipelineBuilder",
    "SearchResult",
    "Secret",
    "Stream",
    "Usage",
    "__version__",
    "acomplete",
    "asearch",
    "complete",
    "estimate",
    "load_ipython_extension",
    "resolve_key",
    "search",
    "stream",
    "usage",
    "usage_report",
]


def _request(
    model: str | None,
    prompt: str | list[Message] | list[dict[str, str]],
    *,
    system: str | None,
    stream: bool,
    cache: bool,
    feature: str,
    params: dict[str, Any],
) -> Any:
    from .engine import build_messages
    from .types import Request

    return Request(
        model=model or "",
        messages=build_messages(prompt, system),
        params={k: v for k, v in params.items() if v is not None},
        stream=stream,
        feature=feature,
        cache=cache,
    )


def complete(
    model: str | None,
    prompt: str | list[Message] | list[dict[str, str]],
    *,
    system: str | None = None,
    cache: bool = False,
    feature: str = "api",
    key: str | Secret | None = None,
    **params: Any,
) -> Completion:
    """Ask ``model`` (``provider:model[@key]``, an alias, or None for the default).

    ``params`` are ``temperature``, ``max_tokens``, ``top_p``, ``stop``, ``seed`` and any
    provider-specific option. Returns a :class:`Completion` with text, usage and cost.
    """
    from .client import get_client

    request = _request(
        model, prompt, system=system, stream=False, cache=cache, feature=feature, params=params
    )
    return get_client().complete(request, key=key)


def stream(
    model: str | None,
    prompt: str | list[Message] | list[dict[str, str]],
    *,
    system: str | None = None,
    cache: bool = False,
    feature: str = "api",
    key: str | Secret | None = None,
    **params: Any,
) -> Stream:
    """Like :func:`complete`, as a :class:`Stream`: iterate (sync or async) for the text
    as it arrives; ``.completion`` holds the finished call afterwards."""
    from .client import get_client

    request = _request(
        model, prompt, system=system, stream=True, cache=cache, feature=feature, params=params
    )
    client = get_client()
    return Stream(lambda: client.stream(request, key=key), lambda: client.astream(request, key=key))


async def acomplete(
    model: str | None,
    prompt: str | list[Message] | list[dict[str, str]],
    *,
    system: str | None = None,
    cache: bool = False,
    feature: str = "api",
    key: str | Secret | None = None,
    **params: Any,
) -> Completion:
    """The async twin of :func:`complete`."""
    from .client import get_client

    request = _request(
        model, prompt, system=system, stream=False, cache=cache, feature=feature, params=params
    )
    return await get_client().acomplete(request, key=key)


async def asearch(query: str, *, depth: str = "basic", **params: Any) -> SearchResult:
    """The async twin of :func:`search`."""
    from .client import get_client

    return await get_client().asearch(query, depth=depth, **params)


def search(query: str, *, depth: str = "basic", **params: Any) -> SearchResult:
    """Web search through Tavily (``depth`` is ``basic`` or ``advanced``)."""
    from .client import get_client

    return get_client().search(query, depth=depth, **params)


def estimate(
    model: str | None,
    prompt: str | list[Message] | list[dict[str, str]],
    *,
    system: str | None = None,
    max_tokens: int | None = None,
) -> Estimate:
    """What a call would cost at most, before making it (nothing is sent)."""
    from .engine import build_messages, estimate_call
    from .models import parse_model

    return estimate_call(parse_model(model), build_messages(prompt, system), max_tokens)


def usage_report(since: Any = "30d", until: Any = None, **filters: Any) -> list[Any]:
    """The usage charts (Plotly figures): cost over time by provider, by model, by feature,
    a provider → model → feature treemap, tokens, and what the cache saved."""
    from . import charts

    return charts.report(usage(since=since, until=until, **filters))


def usage(
    since: Any = None, until: Any = None, scope: str | None = None, **filters: Any
) -> pandas.DataFrame:
    """The usage ledger as a pandas DataFrame (one row per provider attempt); with a shared
    ledger, ``scope`` is ``"me"`` (the default), ``"team"`` or ``"all"``."""
    from .ledger import usage as ledger_usage

    return ledger_usage(since=since, until=until, scope=scope, **filters)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_byok``: register ``%%byok`` and ``%byok`` (and their tab
    completion: model ids, subcommands, local model names)."""
    from .completion import register
    from .magics import load_ipython_extension as load

    load(ipython)
    register(ipython)


def __getattr__(name: str) -> Any:
    # The keystore (cryptography), pipelines and widgets load on first use:
    # `import jupyter_byok` stays cheap.
    if name in ("Keystore", "resolve_key"):
        from . import keys

        return getattr(keys, name)
    if name == "Pipeline":
        from .pipeline import Pipeline

        return Pipeline
    if name == "PipelineBuilder":
        from .widgets import PipelineBuilder

        return PipelineBuilder
    raise AttributeError(f"module 'jupyter_byok' has no attribute {name!r}")


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter_byok"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_byok"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    from .server import load_extension

    load_extension(server_app)
