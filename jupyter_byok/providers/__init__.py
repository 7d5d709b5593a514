"""The flat provider registry: one :class:`ProviderSpec` per provider name.

Built-in providers and user-registered endpoints (``ollama`` at a custom base URL) are
resolved through :func:`get_spec`. Wire modules (``openai``, ``anthropic``, ``gemini``,
``tavily``, ``local``) are imported lazily by the engine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UnknownProviderError

if TYPE_CHECKING:
    from ..config import Endpoint

__all__ = [
    "BUILTIN",
    "SECRET_NAMESPACE",
    "ProviderSpec",
    "check_endpoint_name",
    "env_base_url_var",
    "env_base_urls",
    "get_spec",
    "known_provider_names",
    "parse_endpoint",
]


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    wire: str  # openai | anthropic | gemini | tavily | local
    base_url: str
    env_vars: tuple[str, ...] = ()
    needs_key: bool = True
    key_url: str = ""
    #: a built-in provider (its base URL may be overridden by the environment); an
    #: endpoint's URL comes from the settings only
    builtin: bool = True
    #: the stored key a model id without ``@NAME`` uses
    key_name: str = "default"

    def resolved_base_url(self, env: Mapping[str, str] | None = None) -> str:
        """The base URL: a built-in provider's own, or ``JUPYTER_BYOK_<NAME>_BASE_URL``
        from ``env`` (default: this process's environment); an endpoint's from settings."""
        if not self.builtin:
            return self.base_url.rstrip("/")
        override = (os.environ if env is None else env).get(env_base_url_var(self.name))
        return (override or self.base_url).rstrip("/")


def env_base_url_var(provider: str) -> str:
    return f"JUPYTER_BYOK_{provider.upper()}_BASE_URL"


def env_base_urls() -> dict[str, str]:
    """The built-in providers' base-URL overrides in the environment now (the server takes
    this once, at start: environment keys are bound to the origins it saw then)."""
    found = {}
    for name in BUILTIN:
        var = env_base_url_var(name)
        if os.environ.get(var):
            found[var] = os.environ[var]
    return found


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


def check_endpoint_name(name: Any, others: Any = ()) -> str:
    """An endpoint name that shadows nothing, or a one-line :class:`ConfigError`.

    Names are compared case-insensitively with the built-in providers, ``secret`` and the
    other endpoints: ``OpenAI`` or ``google`` would otherwise share a provider's
    environment variable or key.
    """
    from ..config import ENDPOINT_NAME_RE
    from ..errors import ConfigError

    if not isinstance(name, str) or not ENDPOINT_NAME_RE.match(name):
        raise ConfigError(
            f"invalid endpoint name {name!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    reserved = {n.lower() for n in BUILTIN} | {SECRET_NAMESPACE, "google"}
    for spec in BUILTIN.values():
        reserved |= {v.lower().removesuffix("_api_key") for v in spec.env_vars}
    if name.lower() in reserved:
        raise ConfigError(
            f"endpoint name {name!r} is reserved for a built-in provider or for named "
            "secrets: choose another name"
        )
    clash = [o for o in others if isinstance(o, str) and o != name and o.lower() == name.lower()]
    if clash:
        raise ConfigError(
            f"endpoint name {name!r} differs from endpoint {clash[0]!r} only by case: "
            "choose another name"
        )
    return name


def parse_endpoint(name: Any, value: Any, others: Any = ()) -> Endpoint:
    """A checked endpoint (name, wire, URL, fields) from JSON-like input, or a one-line
    :class:`~jupyter_byok.errors.ConfigError`; ``others``: the other endpoints' names."""
    from ..config import Endpoint

    return Endpoint.parse(check_endpoint_name(name, others), value)


def get_spec(name: str) -> ProviderSpec:
    """The spec for a built-in provider or a user-registered endpoint.

    An endpoint is checked on every use, whoever wrote the settings file: its name must not
    shadow a built-in provider or ``secret`` (in any case), its wire must be a chat wire
    and its URL http(s). Endpoints take keys from the keystore only, never from the
    environment.
    """
    spec = BUILTIN.get(name)
    if spec is not None:
        return spec
    from ..config import load_settings

    settings = load_settings()
    seen = _ENDPOINT_SPECS.get(name)
    if seen is not None and seen[0] is settings:
        return seen[1]
    endpoints = settings.endpoints
    endpoint = endpoints.get(name)
    if endpoint is None:
        known = ", ".join(sorted(known_provider_names()))
        raise UnknownProviderError(
            f"unknown provider {name!r}: use one of {known}, or register an endpoint with "
            f"`jupyter byok endpoints add {name} BASE_URL`"
        )
    check_endpoint_name(name, endpoints)
    endpoint = endpoint.checked(name)
    spec = ProviderSpec(
        name,
        endpoint.wire,
        endpoint.base_url,
        (),
        needs_key=endpoint.needs_key,
        builtin=False,
        key_name=endpoint.key_name,
    )
    if len(_ENDPOINT_SPECS) > 256:
        _ENDPOINT_SPECS.clear()
    _ENDPOINT_SPECS[name] = (settings, spec)
    return spec


#: checked endpoint specs, each with the settings object it was read from (a changed
#: settings file is a new object)
_ENDPOINT_SPECS: dict[str, tuple[object, ProviderSpec]] = {}


def known_provider_names() -> set[str]:
    """Built-in providers and the endpoints whose names shadow nothing."""
    from ..config import load_settings
    from ..errors import ConfigError

    endpoints = load_settings().endpoints
    names = set(BUILTIN)
    for name in endpoints:
        try:
            names.add(check_endpoint_name(name, endpoints))
        except ConfigError:
            continue
    return names
