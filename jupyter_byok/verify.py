"""Key verification against the provider's cheap key-check endpoint."""

from __future__ import annotations

from .errors import ByokError


def verify_key(provider: str, name: str = "default") -> str:
    raise ByokError(
        f"verifying {provider} keys needs provider dispatch, which is not built yet; "
        "the key is stored and will be used as is"
    )
