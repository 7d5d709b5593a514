"""The response bodies of ``/byok/*``, as TypedDicts (the request bodies are in _wire).

One shape per reply, named after what it carries; the values that have a class of their
own (:class:`~jupyter_byok.types.Completion`, :class:`~jupyter_byok.types.SearchResult`,
``KeyInfo``) build them with ``to_dict`` and read them back with ``from_dict``. Replies
that are plain records (the status, usage rows and groups, budgets, settings, local models,
a restore's counts) are built as plain dicts by their owners, because some are long (up to
``MAX_LIMIT`` usage rows) and a class per record would cost on every reply; they are read
back, checked, with :func:`from_dict`.

``labextension/src/api.ts`` (and ``backup.ts``) mirror these shapes by hand;
``tests/server/test_wire_shapes.py`` compares the field names, and which are required, on both
sides. Change both together.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict, TypeVar

from ..types import CompletionDict, SearchResultDict, UsageDict
from ..validate import Checker, check_json, compile_shape

__all__ = [
    "REPLIES",
    "BudgetStatus",
    "BudgetsReply",
    "CompletionDict",
    "ConfigReply",
    "DeltaEvent",
    "EndpointDict",
    "ErrorBody",
    "KeyInfoDict",
    "KeysReply",
    "KeystoreStatus",
    "LedgerHealth",
    "LocalMessage",
    "LocalModel",
    "LocalOverview",
    "LocalTest",
    "MergeCounts",
    "ModelsReply",
    "PriceReply",
    "PriceTableReply",
    "ProviderKeys",
    "PullJob",
    "PullsReply",
    "RestoreReport",
    "SearchReply",
    "SearchResultDict",
    "StatusReply",
    "UploadReply",
    "UsageDict",
    "UsageGroup",
    "UsageReply",
    "UsageRow",
    "VerifyReply",
    "from_dict",
]

Money = str  # an exact decimal amount, as a string ("0.000125")


# ------------------------------------------------------------------ calls
#: ``POST /byok/search``: ``SearchResult.to_dict()``
SearchReply = SearchResultDict


class DeltaEvent(TypedDict):
    """A stream's ``delta`` event: one piece of text."""

    text: str


class _ErrorBody(TypedDict):
    error: str
    message: str
    status: int


class ErrorBody(_ErrorBody, total=False):
    """Every 4xx/5xx reply, and a stream's ``error`` event (see handlers.error_body)."""

    provider: str
    provider_status: int | None


# ------------------------------------------------------------------- keys
class KeyInfoDict(TypedDict):
    """One stored key: metadata only (``KeyInfo.to_dict()``)."""

    id: str
    provider: str
    name: str
    kind: str
    last4: str
    fingerprint: str
    created: str
    updated: str
    last_verified: str | None
    tier: str | None
    base_url: str | None
    label: str
    warning: str | None


class ProviderKeys(TypedDict):
    """Per built-in provider: whether a key is configured, and where from."""

    provider: str
    configured: bool
    stored: list[KeyInfoDict]
    env_var: str | None
    key_url: str | None


class KeysReply(TypedDict):
    """``GET /byok/keys``."""

    keys: list[KeyInfoDict]
    providers: list[ProviderKeys]
    tier: str
    tier_description: str


class _Verified(TypedDict):
    id: str
    label: str
    ok: bool


class VerifyReply(_Verified, total=False):
    """``POST /byok/keys/ID/verify``: the provider's answer to a cheap request."""

    latency_s: float
    message: str
    detail: str
    status: int | None
    models: int | list[str] | None


# ----------------------------------------------------------------- status
class _KeystoreStatus(TypedDict):
    tier: str
    tier_description: str
    entries: int | None
    path: str
    home: str
    exists: bool
    machine_id_available: bool
    providers: list[str]


class KeystoreStatus(_KeystoreStatus, total=False):
    """``Keystore.status()``: protection tier, file locations and counts."""

    key_file: str
    error: str


class _LedgerHealth(TypedDict):
    path: str
    writable: bool
    error: str | None
    pending: int
    pending_cost_usd: Money
    failed_writes: int
    last_error: str | None
    last_error_at: str | None
    free_bytes: int | None
    total_bytes: int | None


class LedgerHealth(_LedgerHealth, total=False):
    """``Ledger.health()``: whether rows can be written, and what is kept pending; the
    ``backend`` (``sqlite`` or ``postgresql``), and for a shared ledger its URL without
    password, whether it answers, and rows waiting in the local spool (-1: unknown while
    it is down)."""

    backend: str
    url: str
    reachable: bool
    spooled: int


class BudgetStatus(TypedDict):
    """One budget (``Budget.to_json()``) with what has been spent against it
    (``budgets.status``); a per-call budget has no spend (``null``)."""

    name: str
    period: str
    scope: str
    target: str | None
    limit_usd: Money
    warn_at: Money
    spent_usd: Money | None
    fraction: float | None
    state: Literal["ok", "warning", "exceeded"]


class BudgetsReply(TypedDict):
    """``GET`` and ``PUT /byok/budgets``."""

    budgets: list[BudgetStatus]


class _StatusReply(TypedDict):
    version: str
    as_of: float
    keystore: KeystoreStatus
    default_model: str
    ledger_error: str | None
    ledger: LedgerHealth
    spend_today_usd: Money | None
    budgets: list[BudgetStatus]


class StatusReply(_StatusReply, total=False):
    """``GET /byok/status``: polled by every open JupyterLab (the status bar)."""

    budgets_error: str


# ------------------------------------------------------------------ usage
class _UsageTotals(TypedDict):
    calls: int
    unknown_cost_calls: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    reasoning_tokens: int
    search_credits: float
    cost_usd: float
    cost_usd_exact: Money
    saved_usd: float


class UsageGroup(_UsageTotals, total=False):
    """One group of ``GET /byok/usage`` (``Ledger.summary``): the ``by`` fields (and
    ``bucket``) that name it, then its totals. ``cost_usd`` is a float for charts,
    ``cost_usd_exact`` the exact amount."""

    bucket: str | None
    provider: str | None
    model: str | None
    key_name: str | None
    feature: str | None
    notebook: str | None
    cell_id: str | None
    pipeline: str | None
    node: str | None
    status: str | None
    error_type: str | None
    cost_source: str | None
    price_version: str | None
    request_id: str | None


class UsageRow(TypedDict):
    """One ledger row of ``GET /byok/usage`` ``recent`` (``Ledger.recent``): one provider
    attempt, cache hit or budget block. No prompt or answer is ever stored."""

    id: str
    request_id: str
    attempt: int
    ts: str
    ts_end: str
    provider: str
    model: str
    key_name: str | None
    feature: str
    notebook: str | None
    cell_id: str | None
    pipeline: str | None
    node: str | None
    status: str
    http_status: int | None
    error_type: str | None
    response_id: str | None
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    reasoning_tokens: int
    search_credits: float
    cost_usd: Money | None
    cost_source: str
    price_version: str
    latency_s: float | None
    ttft_s: float | None
    stream: bool
    cache_hit: bool
    saved_usd: Money | None
    #: who and where (migration m006; set on every row since, null on older ones)
    user_name: str | None
    team: str | None
    server: str | None


class UsageReply(TypedDict):
    """``GET /byok/usage``."""

    since: str
    until: str | None
    by: list[str]
    bucket: str | None
    groups: list[UsageGroup]
    total_usd: Money
    recent: list[UsageRow]


# --------------------------------------------------------- models, prices
class ModelsReply(TypedDict):
    """``GET /byok/models``: providers, priced models (``pricing.list_models``), aliases,
    and ``choices``: every model id for a picker, as ``%%byok`` completes them (the local
    models first, then the priced models and the aliases)."""

    providers: list[str]
    models: list[dict[str, Any]]
    aliases: dict[str, str]
    choices: list[str]


class PriceReply(TypedDict):
    """``GET /byok/prices?model=ID``: one model's price."""

    model: str
    price: dict[str, Any]


class PriceTableReply(TypedDict):
    """``GET /byok/prices``: the whole table and its version."""

    version: str
    models: list[dict[str, Any]]


# ----------------------------------------------------------------- config
class EndpointDict(TypedDict):
    """A user endpoint (``config.Endpoint``)."""

    base_url: str
    wire: str
    needs_key: bool
    key_name: str
    allow_http: bool


class ConfigReply(TypedDict):
    """``GET`` and ``PUT /byok/config``: ``Settings.to_json()`` and the default model
    actually used."""

    version: int
    default_model: str | None
    aliases: dict[str, str]
    endpoints: dict[str, EndpointDict]
    local_models: dict[str, str]
    local_prices: dict[str, dict[str, str]]
    require_server: bool
    local_extra_buffers: str
    effective_default_model: str


# ----------------------------------------------------------- local models
class LocalModel(TypedDict):
    """One row of ``GET /byok/local/models`` (``local_models.list_local_models``)."""

    name: str
    id: str
    path: str | None
    source: Literal["embedded", "registered", "pulled"]
    exists: bool
    size_bytes: int | None
    default: bool
    downloaded: bool
    repo: str | None
    filename: str | None
    sha256: str | None
    pulled_at: str | None
    quantization: str | None
    parameters: int | None
    size_label: str | None
    architecture: str | None
    context_length: int | None
    chat_template: bool | None
    ram_estimate_bytes: int | None
    facts_error: str | None
    n_gpu_layers: int | str
    last_used: str | None


class PullJob(TypedDict):
    """A pull started by ``POST /byok/local/pulls``, as ``GET .../pulls/ID`` reports it."""

    id: str
    spec: str
    state: Literal["running", "done", "error", "cancelled"]
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    started: float


class LocalOverview(TypedDict):
    """``GET /byok/local/models``."""

    models: list[LocalModel]
    default: str
    pulls: list[PullJob]
    gpu_layers_default: int | str


class PullsReply(TypedDict):
    """``GET /byok/local/pulls``."""

    pulls: list[PullJob]


class _LocalMessage(TypedDict):
    message: str


class LocalMessage(_LocalMessage, total=False):
    """``DELETE /byok/local/models/NAME`` and ``PUT /byok/local/default``: one line."""

    name: str
    default: str
    deleted_file: str | None


class LocalTest(TypedDict):
    """``POST /byok/local/models/NAME/test``: a short prompt, answered by a child process."""

    name: str
    text: str
    output_tokens: int
    tokens_per_s: float
    first_token_s: float
    total_s: float


# ----------------------------------------------------------------- backup
class UploadReply(TypedDict):
    """``POST /byok/restore/upload``: the id ``POST /byok/restore`` takes."""

    upload: str
    bytes: int


class MergeCounts(TypedDict):
    """What a restore did with one kind of thing."""

    added: int
    same: int
    conflict: int
    replaced: int
    conflicts: list[str]


class RestoreReport(TypedDict):
    """``POST /byok/restore``: counts per kind (``backup.restore_backup``)."""

    source: dict[str, str | None]
    keys: MergeCounts
    settings: MergeCounts
    budgets: MergeCounts
    prices: str | None
    local_registry: str | None
    model_files: dict[str, int]
    ledger: dict[str, int]


#: every reply shape, by name
REPLIES: dict[str, type] = {
    name: globals()[name] for name in __all__ if name not in ("REPLIES", "from_dict")
}

#: shapes whose producers may add fields (the provider's check answer, a local model's
#: facts): extra fields are kept, checked as JSON only
_OPEN = frozenset({"VerifyReply", "LocalModel", "LocalTest"})

T = TypeVar("T")


_checkers: dict[type, Checker] = {}


def _checker(shape: type) -> Checker:
    check = _checkers.get(shape)
    if check is None:  # compiled on first use, once
        extra = check_json if shape.__name__ in _OPEN else None
        check = _checkers[shape] = compile_shape(shape, extra=extra)
    return check


def from_dict(shape: type[T], data: Any) -> T:
    """``data`` (parsed JSON) checked against the reply ``shape``: every required field
    present, every field of its declared JSON type, no undeclared field. Raises
    InvalidInputError naming the first field that is wrong."""
    checked: T = _checker(shape)(data, f"the {shape.__name__} reply")
    return checked
