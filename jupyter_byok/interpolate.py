"""Brace-safe prompt interpolation, shared by the magic and pipelines.

Only references to names that exist are replaced: ``{name}``, ``{name.attr}``,
``{name[0]}``, ``{name["k"]}`` and ``{name['k']}`` (chains of these). Everything else —
JSON, code, f-strings, unknown names — stays exactly as written, and nothing outside the
referenced names is read or sent. ``{{name}}`` writes a literal ``{name}``; other
doubled braces (``}}`` closing nested JSON) are left alone.

Dunder attributes (``{x.__class__}``) are never followed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["find_references", "interpolate"]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_ACCESS = rf"""(?:\.{_IDENT}|\[\s*-?\d+\s*\]|\[\s*"[^"\\\]]*"\s*\]|\[\s*'[^'\\\]]*'\s*\])"""
_REF = rf"{_IDENT}{_ACCESS}*"
_PATTERN = re.compile(rf"\{{\{{(?P<escaped>{_REF})\}}\}}|\{{(?P<ref>{_REF})\}}")
_STEP = re.compile(
    rf"""\.(?P<attr>{_IDENT})|\[\s*(?P<index>-?\d+)\s*\]|\[\s*(?P<q>["'])(?P<key>.*?)(?P=q)\s*\]"""
)

_MISSING = object()


def _resolve(ref: str, lookup: Callable[[str], Any]) -> Any:
    head = re.match(_IDENT, ref)
    assert head is not None
    value = lookup(head.group(0))
    if value is _MISSING:
        return _MISSING
    for step in _STEP.finditer(ref, head.end()):
        try:
            if step.group("attr") is not None:
                attr = step.group("attr")
                if attr.startswith("__"):
                    return _MISSING
                value = getattr(value, attr)
            elif step.group("index") is not None:
                value = value[int(step.group("index"))]
            else:
                value = value[step.group("key")]
        except (AttributeError, LookupError, TypeError, ValueError):
            return _MISSING
    return value


def find_references(text: str) -> list[str]:
    """The top-level names a template refers to (escaped references excluded)."""
    names = []
    for match in _PATTERN.finditer(text):
        ref = match.group("ref")
        if ref:
            head = re.match(_IDENT, ref)
            assert head is not None
            names.append(head.group(0))
    return names


def interpolate(
    text: str,
    namespace: Mapping[str, Any] | Callable[[str], Any],
    render: Callable[[Any], str] = str,
) -> str:
    """Replace references to existing names; leave every other brace alone."""
    if callable(namespace):
        lookup = namespace
    else:
        ns = namespace

        def lookup(name: str) -> Any:
            return ns.get(name, _MISSING)

    def replace(match: re.Match[str]) -> str:
        escaped = match.group("escaped")
        if escaped is not None:
            return "{" + escaped + "}"
        value = _resolve(match.group("ref"), lookup)
        return match.group(0) if value is _MISSING else render(value)

    return _PATTERN.sub(replace, text)


MISSING = _MISSING
