"""The request bodies of ``/byok/*``, as TypedDicts, and their checkers.

Each body is checked against its shape before the service sees it (see
:mod:`jupyter_byok.validate`): unknown fields, wrong JSON types, numbers out of range
and nesting deeper than ``MAX_DEPTH`` are a 400 that names the field. The service then
reads fields of known types only. Query strings (``GET /byok/usage``) are checked in
:func:`usage_query`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

from ..validate import (
    CallParams,
    Checker,
    InvalidInputError,
    Range,
    SearchOptions,
    check_params,
    compile_shape,
)

__all__ = [
    "BUDGETS",
    "COMPLETE",
    "CONFIG",
    "KEY",
    "SEARCH",
    "AddKeyBody",
    "BackupBody",
    "BudgetsBody",
    "CompleteBody",
    "ConfigBody",
    "LocalDefaultBody",
    "MessageBody",
    "PullBody",
    "RestoreBody",
    "SearchBody",
    "UsageQuery",
    "usage_query",
]

Role = Literal["system", "user", "assistant"]


class _MessageContent(TypedDict):
    content: str


class MessageBody(_MessageContent, total=False):
    """One message; ``role`` defaults to ``user``."""

    role: Role


class CompleteBody(TypedDict, total=False):
    """``POST /byok/complete``: ``messages`` (or ``prompt``) is required."""

    model: str
    messages: list[MessageBody]
    prompt: str
    system: str | None
    params: Annotated[CallParams, check_params]
    stream: bool
    feature: str
    origin: dict[str, str]
    cache: bool


class _SearchQuery(TypedDict):
    query: str


class SearchBody(_SearchQuery, SearchOptions, total=False):
    """``POST /byok/search``: the query, and Tavily's options (see SearchOptions)."""

    depth: Literal["basic", "advanced"]
    feature: str
    origin: dict[str, str]


class _KeyValue(TypedDict):
    provider: str
    key: str


class AddKeyBody(_KeyValue, total=False):
    """``POST /byok/keys``: the key is accepted here only, and never echoed back."""

    name: str | None
    tier: str | None
    base_url: str | None
    allow_http: bool


class BudgetsBody(TypedDict):
    """``PUT /byok/budgets``: every budget at once (each item is read by Budget.from_json)."""

    budgets: list[dict[str, Any]]


class ConfigBody(TypedDict, total=False):
    """``PUT /byok/config``: the types here; the values (a model id, an endpoint's wire and
    URL) are checked by the settings themselves."""

    default_model: str | None
    aliases: dict[str, str]
    endpoints: dict[str, Any]
    require_server: bool


class LocalDefaultBody(TypedDict):
    """``PUT /byok/local/default`` (checked in local_handlers)."""

    name: str


class _PullSpec(TypedDict):
    spec: str


class PullBody(_PullSpec, total=False):
    """``POST /byok/local/pulls`` (checked in local_handlers): what to pull, and how."""

    name: str | None
    quant: str | None
    sha256: str | None
    n_gpu_layers: str | int | None


class _Passphrase(TypedDict):
    passphrase: str


class BackupBody(_Passphrase, total=False):
    """``POST /byok/backup`` (checked in backup_handlers); the reply is the file."""

    with_models: bool


class _Upload(_Passphrase):
    upload: str


class RestoreBody(_Upload, total=False):
    """``POST /byok/restore`` (checked in backup_handlers): an upload's id, from
    ``POST /byok/restore/upload``."""

    replace: bool


COMPLETE: Checker = compile_shape(CompleteBody)
SEARCH: Checker = compile_shape(SearchBody)
KEY: Checker = compile_shape(AddKeyBody)
BUDGETS: Checker = compile_shape(BudgetsBody)
CONFIG: Checker = compile_shape(ConfigBody)


# ---------------------------------------------------------------- GET /byok/usage
USAGE_FILTERS = (
    "provider", "model", "feature", "notebook", "status", "pipeline", "node",
    "user_name", "team", "server",
)  # fmt: skip
#: the most ledger rows one ``GET /byok/usage`` lists in ``recent`` (the panel's CSV
#: export asks for 100,000)
MAX_LIMIT = 1_000_000


class UsageQuery(TypedDict, total=False):
    """``GET /byok/usage``'s query, as strings: ``since``/``until`` are times (``7d``,
    ``today``, an ISO date), ``by`` a comma-separated list of USAGE_FILTERS, ``limit``
    the number of recent rows (1 to MAX_LIMIT), the others filters."""

    since: str
    until: str
    by: str
    bucket: str
    limit: Annotated[int, Range(0, MAX_LIMIT)]
    provider: str
    model: str
    feature: str
    notebook: str
    status: str
    pipeline: str
    node: str
    user_name: str
    team: str
    server: str
    #: a shared ledger: ``me`` (default), ``team`` or ``all`` (these two need the
    #: ``jupyter_byok:team`` permission)
    scope: str


def usage_query(args: dict[str, str]) -> UsageQuery:
    """The query of ``GET /byok/usage`` checked: known names only, ``limit`` a whole number
    from 0 to MAX_LIMIT (a bare cache-buster such as ``?1795786161459`` is ignored)."""
    out: dict[str, Any] = {}
    for name, value in args.items():
        if name.isdigit() and not value:  # JupyterLab's request helper adds one
            continue
        if name not in UsageQuery.__annotations__:
            fields = ", ".join(sorted(UsageQuery.__annotations__))
            shown = repr(name) if len(name) <= 40 else "a field"
            raise InvalidInputError(f"unknown usage field {shown}: use {fields}")
        out[name] = value
    text = out.pop("limit", "").strip()
    if text:  # empty: the default
        digits = text.lstrip("0") or "0"
        if not (digits.isascii() and digits.isdigit() and int(digits[:8]) <= MAX_LIMIT):
            raise InvalidInputError(f"'limit' must be a whole number from 0 to {MAX_LIMIT:,}")
        out["limit"] = int(digits)
    return out  # type: ignore[return-value]
