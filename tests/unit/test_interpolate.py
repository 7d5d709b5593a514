"""Brace-safe interpolation: only existing referenced names are replaced."""

from __future__ import annotations

import pytest

from jupyter_byok.interpolate import find_references, interpolate


class Obj:
    name = "widget"
    items = ("a", "b")


NS = {
    "x": 5,
    "text": "hello",
    "d": {"k": [10, 20], "key with space": 1},
    "lst": ["zero", "one"],
    "obj": Obj(),
    "secret_holder": {"token": "must-not-be-read"},
}

CORPUS = [
    # simple references
    ("value {x}", "value 5"),
    ("{text}!", "hello!"),
    ("{obj.name}", "widget"),
    ("{obj.items[1]}", "b"),
    ("{lst[0]} {lst[-1]}", "zero one"),
    ('{d["k"][1]}', "20"),
    ("{d['k'][0]}", "10"),
    # unknown names, bad accesses stay verbatim
    ("{missing}", "{missing}"),
    ("{x.nope}", "{x.nope}"),
    ("{lst[5]}", "{lst[5]}"),
    ('{d["absent"]}', '{d["absent"]}'),
    # JSON bodies stay verbatim (including nested closing braces)
    ('{"a": 1, "b": {"c": [1, 2]}}', '{"a": 1, "b": {"c": [1, 2]}}'),
    ('{"x": {x}}', '{"x": 5}'),
    ("[{}, {}]", "[{}, {}]"),
    # code with braces and f-strings
    ("def f():\n    return {'a': 1}", "def f():\n    return {'a': 1}"),
    ('f"{x!r:>10}"', 'f"{x!r:>10}"'),
    ("f'{x + 1}'", "f'{x + 1}'"),
    ("{x:>4}", "{x:>4}"),
    ("for (i = 0; i < n; i++) { x++; }", "for (i = 0; i < n; i++) { x++; }"),
    ("$\\frac{x}{2}$", "$\\frac5{2}$"),
    # escapes
    ("{{x}}", "{x}"),
    ("{{missing}}", "{missing}"),
    ("{{ x }}", "{{ x }}"),
    ("}}", "}}"),
    # dunders are never followed
    ("{obj.__class__}", "{obj.__class__}"),
    ("{x.__class__.__name__}", "{x.__class__.__name__}"),
]


@pytest.mark.parametrize(("template", "expected"), CORPUS)
def test_corpus(template: str, expected: str) -> None:
    assert interpolate(template, NS) == expected


def test_only_referenced_names_are_read() -> None:
    looked_up: list[str] = []

    def lookup(name: str) -> object:
        looked_up.append(name)
        return NS.get(name, interpolate.__globals__["_MISSING"])

    out = interpolate('{x} and {"json": true} and {text}', lookup)
    assert out == '5 and {"json": true} and hello'
    assert looked_up == ["x", "text"]
    assert "secret_holder" not in looked_up


def test_find_references() -> None:
    assert find_references('{a} {b.c} {{d}} {e[0]} {"k": 1}') == ["a", "b", "e"]
