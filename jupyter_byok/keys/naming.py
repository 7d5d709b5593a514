"""How keys are named: entry names, and the one ``provider@name`` label users see."""

from __future__ import annotations

import re

from ..errors import KeystoreError

__all__ = ["NAME_RE", "label", "validate_name"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def label(provider: object, name: object = "default") -> str:
    """``provider`` for the default key, ``provider@name`` for any other: the one way a
    key is named in messages, listings and commands."""
    return f"{provider}" if name == "default" else f"{provider}@{name}"


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise KeystoreError(f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return name
