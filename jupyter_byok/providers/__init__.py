"""The flat provider registry: one :class:`ProviderSpec` per provider name.

Built-in providers and user-registered endpoints (``ollama`` at a custom base URL) are
resolved through :func:`get_spec`. Wire modules (``openai``, ``anthropic``, ``gemini``,
``tavily``, ``local``) are imported lazily by the engine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UnknownProviderError

__all__ = ["BUILTIN", "ProviderSpec", "get_spec", "known_provider_names"]


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    wire: str  # openai | anthropic | gemini | tavily | local
    base_url: str
    env_vars: tuple[str, ...] = ()
    needs_key: bool = True
    key_url: str = ""

    def resolved_base_url(self) -> str:
        override = os.environ.get(f"JUPYTER_BYOK_{self.name.upper()}_BASE_URL")
        return (override or self.base_url).rstrip("/")


BUILTIN: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            "openai",
            "openai",
            "https://api.openai.com/v1",
            ("OPENAI_API_KEY",),
            key_url="https://platform.openai.com/api-keys",
        ),
        ProviderSpec(
            "anthropic",
            "anthropic",
            "https://api.anthropic.com",
            ("ANTHROPIC_API_KEY",),
            key_url="https://console.anthropic.com/settings/keys",
        ),
        ProviderSpec(
            "gemini",
            "gemini",
            "https://generativelanguage.googleapis.com",
            ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
            key_url="https://aistudio.google.com/apikey",
        ),
        ProviderSpec(
            "xai", "openai", "https://api.x.ai/v1", ("XAI_API_KEY",), key_url="https://console.x.ai"
        ),
        ProviderSpec(
            "tavily",
            "tavily",
            "https://api.tavily.com",
            ("TAVILY_API_KEY",),
            key_url="https://app.tavily.com",
        ),
        ProviderSpec("local", "local", "", (), needs_key=False),
    )
}

#: The generic named-secret namespace of the keystore (e.g. tokens for MCP servers).
SECRET_NAMESPACE = "secret"


def get_spec(name: str) -> ProviderSpec:
    """The spec for a built-in provider or a user-registered endpoint."""
    if name in BUILTIN:
        return BUILTIN[name]
    from ..config import load_settings

    endpoint = load_settings().endpoints.get(name)
    if endpoint is None:
        known = ", ".join(sorted(known_provider_names()))
        raise UnknownProviderError(
            f"unknown provider {name!r}: use one of {known}, or register an endpoint with "
            f"`jupyter byok endpoints add {name} BASE_URL`"
        )
    return ProviderSpec(
        name,
        endpoint.wire,
        endpoint.base_url,
        (f"{name.upper()}_API_KEY",),
        needs_key=endpoint.needs_key,
    )


def known_provider_names() -> set[str]:
    from ..config import load_settings

    return set(BUILTIN) | set(load_settings().endpoints)
