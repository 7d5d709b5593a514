"""Model ids users type: ``provider:model[@keyname]``, aliases and the default model.

``local:/path/to/model.gguf`` keeps everything after ``local:`` as the model (paths may
contain ``@``). With no key configured anywhere and no default set, the default model
is the embedded local model, so everything works offline out of the box.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings, load_settings
from .errors import ModelIdError
from .providers import ProviderSpec, get_spec

__all__ = ["DEFAULT_LOCAL_MODEL", "ModelRef", "default_local_model", "default_model", "parse_model"]

DEFAULT_LOCAL_MODEL = "local:smollm2"

#: Tried in order when no default is set: the first provider with a key wins.
CLOUD_DEFAULTS = (
    "openai:gpt-4o-mini",
    "anthropic:claude-haiku-4-5",
    "gemini:gemini-2.5-flash",
    "xai:grok-4-fast-non-reasoning",
)


@dataclass(frozen=True)
class ModelRef:
    provider: str
    model: str
    key_name: str = "default"

    @property
    def id(self) -> str:
        suffix = "" if self.key_name == "default" else f"@{self.key_name}"
        return f"{self.provider}:{self.model}{suffix}"

    @property
    def spec(self) -> ProviderSpec:
        return get_spec(self.provider)

    @property
    def is_local(self) -> bool:
        return self.spec.wire == "local"


def parse_model(model: str | None, settings: Settings | None = None) -> ModelRef:
    """Resolve aliases and the default, then split ``provider:model[@key]``.

    On every call's path: an explicit id is parsed once per settings object (the settings
    hold the aliases and endpoints it depends on; a changed file is a new object).
    """
    settings = settings if settings is not None else load_settings()
    if model:
        seen = _PARSED.get(model)
        if seen is not None and seen[0] is settings:
            return seen[1]
        ref = _parse(model, settings)
        if len(_PARSED) > 512:
            _PARSED.clear()
        _PARSED[model] = (settings, ref)
        return ref
    return _parse(model, settings)


_PARSED: dict[str, tuple[Settings, ModelRef]] = {}


def _parse(model: str | None, settings: Settings) -> ModelRef:
    text = (model or "").strip() or default_model(settings)
    seen: set[str] = set()
    while text in settings.aliases:
        if text in seen:
            raise ModelIdError(f"alias {text!r} refers to itself; fix it with `%byok alias`")
        seen.add(text)
        text = settings.aliases[text]
    provider, sep, rest = text.partition(":")
    if not sep or not provider or not rest:
        raise ModelIdError(
            f"model id {text!r} is not PROVIDER:MODEL (for example openai:gpt-4o-mini or "
            f"{DEFAULT_LOCAL_MODEL}); aliases are set with `%byok alias NAME MODEL`"
        )
    spec = get_spec(provider)
    key_name = spec.key_name  # an endpoint may name the stored key its calls use
    if spec.wire != "local" and "@" in rest:
        rest, _, key_name = rest.rpartition("@")
        if not rest or not key_name:
            raise ModelIdError(f"model id {text!r}: use PROVIDER:MODEL@KEYNAME")
    return ModelRef(provider, rest, key_name)


def default_model(settings: Settings | None = None) -> str:
    """The configured default; else the first cloud provider with a key; else local."""
    settings = settings if settings is not None else load_settings()
    if settings.default_model:
        return settings.default_model
    from .keys import key_source, stored_keys

    try:
        stored = stored_keys()
    except Exception:  # a damaged store must not break the offline default
        stored = []
    for candidate in CLOUD_DEFAULTS:
        provider = candidate.split(":", 1)[0]
        # a stored key of any name counts, as the default one (or its variable) would
        if (
            any(i.provider == provider for i in stored)
            or key_source(provider, stored=stored).available
        ):
            return candidate
    return default_local_model()


def default_local_model() -> str:
    """``local:NAME`` for the default local model (``jupyter byok local default NAME``),
    else the embedded one."""
    from .providers.local._files import registered_paths
    from .providers.local._registry import load_registry

    try:
        name = load_registry()["default"]
        if name and name in registered_paths():
            return f"local:{name}"
    except Exception:  # a damaged registry must not break the offline default
        pass
    return DEFAULT_LOCAL_MODEL
