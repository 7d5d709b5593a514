"""Schema checks for what callers send: REST bodies, call parameters, JSON values.

One small layer. A shape is a ``TypedDict`` (the request bodies of
:mod:`jupyter_byok.server._wire`, :class:`CallParams` here), compiled once into a
checking function: field names (an unknown field is refused, naming it), JSON types
(a boolean is ``true`` or ``false``, never ``"false"`` or ``[1]``; a number is never a
boolean, NaN or infinite), ranges (``Annotated[int, Range(1, 10)]``), literals and
nesting depth. A check costs microseconds; a failure is one :class:`InvalidInputError`
line that names the field, which the server answers with 400.

Call parameters are checked the same way whether the call comes through the server or
runs in this process (:func:`check_params`): ``max_tokens`` of NaN, ``inf``, ``-5`` or
``1e30`` is refused before anything is sent, and ``params`` cannot set the model, the
messages or ``stream``, which belong to the call itself.
"""

from __future__ import annotations

import json
import math
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Annotated, Any, Literal, TypedDict, Union, get_args, get_origin, get_type_hints

from .errors import InvalidInputError

__all__ = [
    "MAX_DEPTH",
    "MAX_OUTPUT_TOKENS",
    "CallParams",
    "Checker",
    "InvalidInputError",
    "Range",
    "SearchOptions",
    "check_params",
    "check_search_options",
    "compile_shape",
    "loads",
]

#: the deepest nesting of arrays and objects a request body or a parameter may have
MAX_DEPTH = 64
#: the largest ``max_tokens`` a call may ask for (far above any model's output limit)
MAX_OUTPUT_TOKENS = 1_000_000

#: ``check(value, where) -> value``: the value (integral floats of integer fields become
#: ints), or :class:`InvalidInputError` naming ``where``
Checker = Callable[[Any, str], Any]


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of a number (``Annotated[float, Range(0, 2)]``)."""

    lo: float | None = None
    hi: float | None = None


def _kind(value: Any) -> str:
    """The JSON kind of ``value``, for messages (never the value: it may be a secret)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number" if math.isfinite(value) else f"{value!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a Python {type(value).__name__}"


def _fail(where: str, expected: str, value: Any) -> InvalidInputError:
    return InvalidInputError(f"{where} must be {expected}, not {_kind(value)}")


def _sub(where: str, key: str) -> str:
    """``'params'`` + ``top_p`` -> ``'params.top_p'``; ``the request body`` + ``stream``
    -> ``'stream'`` (a quoted path names a field, anything else is the whole value)."""
    key = key if len(key) <= 40 else key[:37] + "..."
    return f"{where[:-1]}.{key}'" if where.endswith("'") else f"'{key}'"


def _item(where: str, index: int) -> str:
    return f"{where[:-1]}[{index}]'" if where.endswith("'") else f"'[{index}]'"


# ------------------------------------------------------------------- JSON values
def check_json(value: Any, where: str, depth: int = 0) -> Any:
    """Any JSON value whose numbers are finite and whose nesting is at most MAX_DEPTH."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{where} must be a finite number, not {value!r}")
        return value
    if depth >= MAX_DEPTH:
        raise InvalidInputError(f"{where} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"{where} has a key that is not a string")
            check_json(item, _sub(where, key), depth + 1)
        return value
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_json(item, _item(where, index), depth + 1)
        return value
    raise InvalidInputError(f"{where} must be a JSON value, not {_kind(value)}")


# ---------------------------------------------------------------------- shapes
def _describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        base, *meta = args
        text = _describe(base)
        for m in meta:
            if isinstance(m, Range):
                if m.lo is not None and m.hi is not None:
                    text += f" from {_num(m.lo)} to {_num(m.hi)}"
                elif m.lo is not None:
                    text += f" of at least {_num(m.lo)}"
                elif m.hi is not None:
                    text += f" of at most {_num(m.hi)}"
        return text
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list of {_plural(_describe(args[0]))}" if args else "a list"
    if origin is dict:
        return "an object"
    if _is_typeddict(tp):
        return "an object"
    return {
        str: "a string",
        bool: "true or false",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(tp, "a JSON value")


def _num(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def _plural(text: str) -> str:
    for one, many in (
        ("a string", "strings"),
        ("an object", "objects"),
        ("an integer", "integers"),
    ):
        if text == one:
            return many
    return text


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def _number(integer: bool, lo: float | None, hi: float | None, expected: str) -> Checker:
    def check(value: Any, where: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(where, expected, value)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            shown = (
                repr(value) if isinstance(value, float) or abs(value) < 10**18 else "a huge integer"
            )
            raise InvalidInputError(f"{where} must be {expected}, not {shown}")
        if isinstance(value, float):
            if not math.isfinite(value) or (integer and not value.is_integer()):
                raise _fail(where, expected, value)
            if integer:
                value = int(value)
        return value

    return check


def _simple(cls: type, expected: str) -> Checker:
    def check(value: Any, where: str) -> Any:
        if not isinstance(value, cls):  # bool is no subclass of str, nor str of bool
            raise _fail(where, expected, value)
        return value

    return check


def _none(value: Any, where: str) -> Any:
    if value is not None:
        raise _fail(where, "null", value)
    return None


def _compile(tp: Any, extra: Checker | None = None, reserved: Mapping[str, str] = {}) -> Checker:
    if tp is Any:
        return check_json
    origin, args = get_origin(tp), get_args(tp)
    expected = _describe(tp)
    if origin is Annotated:
        base, *meta = args
        custom = [m for m in meta if callable(m) and not isinstance(m, type)]
        if custom:  # Annotated[dict[str, Any], check_params]: a checker of its own
            return custom[0]
        ranges = [m for m in meta if isinstance(m, Range)]
        if base in (int, float) and ranges:
            r = ranges[0]
            return _number(base is int, r.lo, r.hi, expected)
        return _compile(base)
    if tp is int or tp is float:
        return _number(tp is int, None, None, expected)
    if tp is str or tp is bool:
        return _simple(tp, expected)
    if tp is type(None):
        return _none
    if origin is Literal:
        allowed = frozenset(args)

        def literal(value: Any, where: str) -> Any:
            if not isinstance(value, str) or value not in allowed:
                kind = repr(value) if isinstance(value, str) and len(value) <= 40 else _kind(value)
                raise InvalidInputError(f"{where} must be {expected}, not {kind}")
            return value

        return literal
    if origin in (Union, types.UnionType):
        options = [_compile(a) for a in args]
        nullable = type(None) in args
        if nullable and len(options) == 2:
            inner = options[0] if args[1] is type(None) else options[1]

            def optional(value: Any, where: str) -> Any:
                return None if value is None else inner(value, where)

            return optional

        def union(value: Any, where: str) -> Any:
            for option in options:
                try:
                    return option(value, where)
                except InvalidInputError:
                    continue
            raise _fail(where, expected, value)

        return union
    if origin is list:
        item = _compile(args[0]) if args else check_json

        def listing(value: Any, where: str) -> Any:
            if not isinstance(value, list):
                raise _fail(where, expected, value)
            return [item(v, _item(where, i)) for i, v in enumerate(value)]

        return listing
    if origin is dict:
        member = _compile(args[1]) if args else check_json

        def mapping(value: Any, where: str) -> Any:
            if not isinstance(value, dict):
                raise _fail(where, expected, value)
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise InvalidInputError(f"{where} has a key that is not a string")
                out[k] = member(v, _sub(where, k))
            return out

        return mapping
    if _is_typeddict(tp):
        return _compile_typeddict(tp, extra, reserved)
    raise TypeError(f"no checker for {tp!r}")  # a programming error, found at import


def _compile_typeddict(tp: Any, extra: Checker | None, reserved: Mapping[str, str]) -> Checker:
    hints = get_type_hints(tp, include_extras=True)
    fields = {name: _compile(hint) for name, hint in hints.items()}
    required = frozenset(tp.__required_keys__)
    names = ", ".join(sorted(fields))

    def shape(value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise _fail(where, "an object", value)
        for name in required:
            if name not in value:
                raise InvalidInputError(f"{_sub(where, name)} is required")
        out = {}
        for key, item in value.items():
            check = fields.get(key)
            if check is not None:
                out[key] = check(item, _sub(where, key))
            elif key in reserved:
                raise InvalidInputError(f"{where} cannot set {key!r}: {reserved[key]}")
            elif extra is not None:
                if not isinstance(key, str):
                    raise InvalidInputError(f"{where} has a key that is not a string")
                out[key] = extra(item, _sub(where, key))
            else:
                shown = repr(key) if isinstance(key, str) and len(key) <= 40 else "a field"
                raise InvalidInputError(f"unknown field {shown} in {where}: use {names}")
        return out

    return shape


def compile_shape(
    tp: Any, *, extra: Checker | None = None, reserved: Mapping[str, str] = {}
) -> Checker:
    """A checker for the type ``tp`` (a TypedDict, ``list[...]``, ``Literal``, ...).

    For a TypedDict, ``extra`` checks fields it does not declare (by default they are
    refused, naming the field) and ``reserved`` maps names it never accepts to the reason.
    """
    if _is_typeddict(tp):
        return _compile_typeddict(tp, extra, reserved)
    return _compile(tp)


# ------------------------------------------------------------------ call params
Tokens = Annotated[int, Range(1, MAX_OUTPUT_TOKENS)]
Unit = Annotated[float, Range(0, 1)]
Penalty = Annotated[float, Range(-2, 2)]


class CallParams(TypedDict, total=False):
    """The parameters every provider shares, typed; any other provider option is
    accepted as a JSON value with finite numbers (see :func:`check_params`)."""

    max_tokens: Tokens | None
    max_completion_tokens: Tokens | None
    max_output_tokens: Tokens | None
    temperature: Annotated[float, Range(0, 2)] | None
    top_p: Unit | None
    top_k: Annotated[int, Range(0, 1_000_000)] | None
    frequency_penalty: Penalty | None
    presence_penalty: Penalty | None
    seed: Annotated[int, Range(-(2**63), 2**63 - 1)] | None
    n: Annotated[int, Range(1, 128)] | None
    stop: str | list[str] | None
    logprobs: bool | None
    top_logprobs: Annotated[int, Range(0, 20)] | None
    timeout: Annotated[float, Range(0)] | None


#: names ``params`` never sets: they are the call itself
RESERVED_PARAMS: dict[str, str] = {
    name: "it is part of the call itself (give the model, prompt or messages, system and "
    "stream as the call's own arguments)"
    for name in ("model", "messages", "prompt", "stream", "system", "contents", "systemInstruction")
}

_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")


def _provider_option(value: Any, where: str) -> Any:
    return check_json(value, where, 1)


_check_params = compile_shape(CallParams, extra=_provider_option, reserved=RESERVED_PARAMS)


def check_params(params: Any, where: str = "'params'") -> dict[str, Any]:
    """``params`` checked and normalised (``max_tokens=300.0`` -> ``300``), or
    :class:`InvalidInputError`. ``None`` values mean "not set" and are kept as they are."""
    if not params:
        if params is None or isinstance(params, dict):
            return {}
        raise _fail(where, "an object", params)
    if not isinstance(params, dict):
        raise _fail(where, "an object", params)
    for name in params:
        if not isinstance(name, str) or not _PARAM_NAME.match(name):
            shown = repr(name) if isinstance(name, str) and len(name) <= 40 else "a name"
            raise InvalidInputError(
                f"{where} has {shown}, which is not a parameter name (letters, digits, _ . -)"
            )
    checked: dict[str, Any] = _check_params(params, where)
    return checked


class SearchOptions(TypedDict, total=False):
    """Tavily's search options (``byok.search(query, max_results=3, ...)``); any other
    name is refused, naming it. ``depth`` and ``query`` are the call's own arguments."""

    topic: str
    max_results: Annotated[int, Range(0, 100)]
    chunks_per_source: Annotated[int, Range(1, 10)]
    include_answer: bool | str
    include_raw_content: bool | str
    include_images: bool
    include_image_descriptions: bool
    include_favicon: bool
    include_domains: list[str]
    exclude_domains: list[str]
    time_range: str | None
    days: Annotated[int, Range(1, 36_500)]
    start_date: str
    end_date: str
    country: str | None
    auto_parameters: bool
    timeout: Annotated[float, Range(0)] | None


_check_search = compile_shape(SearchOptions)


def check_search_options(options: dict[str, Any], where: str = "the search options") -> None:
    """Tavily options checked (names and types), or :class:`InvalidInputError`."""
    if options:
        _check_search(options, where)


# ------------------------------------------------------------------------- JSON
_OPENERS = b"[{"
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def _depth(raw: bytes) -> int:
    """The deepest nesting of ``raw`` (strings skipped), without parsing it."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _refuse_constant(name: str) -> Any:
    raise InvalidInputError(f"{name} is not valid JSON (numbers must be finite)")


def loads(raw: bytes | str, what: str = "the request body") -> Any:
    """Parse JSON as a request body: nesting at most MAX_DEPTH (checked before parsing,
    so a body nested 100,000 deep costs a scan, not a recursion), no NaN or Infinity."""
    data = raw.encode() if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and _depth(data) > MAX_DEPTH:
        raise InvalidInputError(f"{what} is nested more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except InvalidInputError:
        raise
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise InvalidInputError(f"{what} is nested too deeply") from None
    except ValueError:  # includes UnicodeDecodeError and integers of over 4,300 digits
        raise InvalidInputError(f"{what} is not valid JSON") from None
