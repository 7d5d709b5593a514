"""The key-origin rule for stored keys: which base URL a key is bound to when it is stored,
and whether a stored key may go to a provider at all.

The URL checks and :class:`~jupyter_byok.origin.BoundSecret` (a key that may be sent to its
origin only, checked by dispatch before any byte is sent) live in :mod:`jupyter_byok.origin`,
below both this package and the providers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, KeyOriginError, KeystoreError
from ..origin import BoundSecret, check_base_url, origin_of
from ..redact import Secret

if TYPE_CHECKING:
    from .store import KeyInfo

__all__ = ["bind_key", "binding_for"]


def binding_for(provider: str, base_url: str | None, allow_http: bool = False) -> str | None:
    """The base URL a key stored now for ``provider`` is bound to; ``None`` for a built-in
    provider's own URL (or, on replacing a key, the one it had)."""
    from ..providers import SECRET_NAMESPACE, get_spec

    if provider == SECRET_NAMESPACE:
        if base_url is not None:
            raise KeystoreError("named secrets are never sent anywhere: they take no base URL")
        return None
    if base_url is not None:
        base_url = check_base_url(base_url, allow_http=allow_http)
    spec = get_spec(provider)
    if spec.builtin:
        return base_url
    own = spec.resolved_base_url()
    if base_url is not None and origin_of(base_url) != origin_of(own):
        raise ConfigError(
            f"a key for endpoint {provider} goes to the endpoint's origin {origin_of(own)}, "
            f"not {origin_of(base_url)}: change the endpoint with `jupyter byok endpoints add`"
        )
    return own


def bind_key(spec: Any, info: KeyInfo, secret: Secret, *, env: Any = None) -> Secret:
    """A stored key as a :class:`BoundSecret` with the base URL its
    calls go to, or :class:`~jupyter_byok.errors.KeyOriginError` when it may not go to
    ``spec``'s provider at all.

    * generic secrets (``secret@NAME``) are never provider keys;
    * a key stored with a base URL (``keys set --base-url``) goes there;
    * a built-in provider's key stored without one goes to the provider's own URL;
    * an endpoint's key goes to the endpoint's URL only while it has the origin the key was
      stored for: keys do not follow an endpoint to a new origin.
    """
    label = info.label
    if info.kind != "provider" or info.provider != spec.name:
        raise KeyOriginError(
            f"{label} is a named secret, never sent as a provider key: store the provider's "
            f"key with `jupyter byok keys set {spec.name}`"
        )
    how = f"`jupyter byok keys rebind {spec.name}"
    how += f" --name {info.name}`" if info.name != "default" else "`"
    if spec.builtin:
        return BoundSecret(secret, info.base_url or spec.resolved_base_url(env))
    own = spec.resolved_base_url()
    if not info.base_url:
        raise KeyOriginError(
            f"the key {label} was stored before keys were bound to an origin: run {how} in a "
            f"terminal to bind it to {origin_of(own)}, or enter it again with "
            f"`jupyter byok keys set {spec.name}`"
        )
    if origin_of(info.base_url) != origin_of(own):
        raise KeyOriginError(
            f"the key {label} is bound to {origin_of(info.base_url)}, and endpoint {spec.name} "
            f"now points to {origin_of(own)}: keys do not follow an endpoint to a new origin; "
            f"enter the key again with `jupyter byok keys set {spec.name}` or run {how} in a "
            "terminal"
        )
    return BoundSecret(secret, own)
