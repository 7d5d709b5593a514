"""The key rule, written once: where the key for ``provider@name`` comes from, and where it
may go.

A provider's key is the stored entry ``provider@name`` if there is one; else, for the
default key of a built-in provider, the first of its environment variables that is set
(an endpoint takes keys from the keystore only). :func:`key_source` answers that from
metadata alone (never a value), for listings, checks before a call and default models;
:func:`resolve_key` applies the same rule to hand out the key itself, bound to its origin.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import KeyOriginError, MissingKeyError
from ..origin import BoundSecret
from ..redact import Secret
from .binding import bind_key
from .naming import label
from .store import KeyInfo, Keystore, validate_secret

__all__ = [
    "KeySource",
    "key_source",
    "key_sources",
    "keys_overview",
    "named_secret",
    "resolve_key",
]

Source = Literal["keystore", "environment", "not-needed"]


@dataclass(frozen=True)
class KeySource:
    """Where the key for ``provider@name`` comes from: never the key itself.

    ``source`` is ``keystore``, ``environment``, ``not-needed`` (a local model) or ``None``
    (no key). ``base_url`` is the URL a stored key is bound to (``None``: the provider's
    own); ``env_var`` names the variable an environment key comes from; ``info`` is what
    may be shown about a stored key.
    """

    provider: str
    name: str
    source: Source | None
    env_var: str | None = None
    base_url: str | None = None
    info: KeyInfo | None = None

    @property
    def label(self) -> str:
        return label(self.provider, self.name)

    @property
    def available(self) -> bool:
        return self.source is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "name": self.name,
            "label": self.label,
            "source": self.source,
            "env_var": self.env_var,
            "base_url": self.base_url,
        }


def _env_var(spec: Any, name: str, environ: Mapping[str, str]) -> str | None:
    """The environment variable the default key of a built-in provider comes from."""
    if name != "default" or not spec.builtin:
        return None
    return next((v for v in spec.env_vars if environ.get(v, "").strip()), None)


def _decide(
    spec: Any, provider: str, name: str, info: KeyInfo | None, environ: Mapping[str, str]
) -> KeySource:
    if info is not None:
        return KeySource(provider, name, "keystore", base_url=info.base_url, info=info)
    if not spec.needs_key:
        return KeySource(provider, name, "not-needed")
    var = _env_var(spec, name, environ)
    if var is not None:
        return KeySource(provider, name, "environment", env_var=var)
    return KeySource(provider, name, None)


def stored_keys() -> list[KeyInfo]:
    """What may be shown about every stored key, from this process's keystore."""
    return Keystore().list()


def key_source(
    provider: str,
    name: str = "default",
    *,
    stored: Iterable[KeyInfo] | None = None,
    environ: Mapping[str, str] | None = None,
) -> KeySource:
    """Where the key for ``provider@name`` comes from (metadata only; see the module).

    ``stored``: the stored keys' metadata (default: this process's keystore, listed);
    ``environ``: the environment to look in (default: this process's). Raises
    :class:`~jupyter_byok.errors.UnknownProviderError` for an unknown provider.
    """
    from ..providers import SECRET_NAMESPACE, get_spec

    infos = stored_keys() if stored is None else stored
    info = next((i for i in infos if i.provider == provider and i.name == name), None)
    if provider == SECRET_NAMESPACE:
        return KeySource(provider, name, "keystore" if info else None, info=info)
    spec = get_spec(provider)
    return _decide(spec, provider, name, info, os.environ if environ is None else environ)


def key_sources(
    stored: Iterable[KeyInfo] | None = None, environ: Mapping[str, str] | None = None
) -> list[KeySource]:
    """Every stored key (provider keys and named secrets), then each built-in provider's
    environment key where no default key is stored."""
    from ..providers import BUILTIN

    infos = list(stored_keys() if stored is None else stored)
    environ = os.environ if environ is None else environ
    out = [KeySource(i.provider, i.name, "keystore", base_url=i.base_url, info=i) for i in infos]
    have = {(s.provider, s.name) for s in out}
    for provider, spec in BUILTIN.items():
        if spec.needs_key and (provider, "default") not in have:
            source = _decide(spec, provider, "default", None, environ)
            if source.available:
                out.append(source)
    return out


def keys_overview(store: Keystore, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What ``GET /byok/keys`` answers (and ``Client.keys_overview`` in-process): the stored
    keys' metadata, per built-in provider whether a key is configured and from where, and
    the store's protection tier. Never a value."""
    from ..providers import BUILTIN

    infos = store.list()
    stored = [info.to_dict() for info in infos]
    providers = []
    for name, spec in BUILTIN.items():
        if not spec.needs_key:
            continue
        source = key_source(name, stored=infos, environ=environ)
        env = _env_var(spec, "default", os.environ if environ is None else environ)
        providers.append(
            {
                "provider": name,
                "configured": source.available or any(i.provider == name for i in infos),
                "stored": [k for k in stored if k["provider"] == name],
                "env_var": env,
                "key_url": spec.key_url,
            }
        )
    status = store.status()
    return {
        "keys": stored,
        "providers": providers,
        "tier": status["tier"],
        "tier_description": status["tier_description"],
    }


def missing_key_message(provider: str, name: str, env_vars: Iterable[str] = ()) -> str:
    """The one line that says there is no key for ``provider@name`` and how to add one."""
    how = f"run `jupyter byok keys set {provider}"
    how += f" --name {name}`" if name != "default" else "`"
    how += " (or `%byok keys set " + label(provider, name) + "` in a notebook)"
    env_vars = tuple(env_vars)
    if name == "default" and env_vars:
        how += " or set " + " or ".join(env_vars)
    return f"no key for {label(provider, name)}: {how}"


def resolve_key(
    provider: str,
    name: str = "default",
    *,
    explicit: str | Secret | None = None,
    store: Keystore | None = None,
    env_base_urls: Any = None,
) -> Secret:
    """The key for ``provider``: explicit argument > keystore > environment variable.

    Keys from the keystore or the environment come bound to their origin (see
    :func:`~jupyter_byok.keys.binding.bind_key`); an environment key to the built-in
    provider's URL, or to ``JUPYTER_BYOK_<PROVIDER>_BASE_URL`` as in ``env_base_urls`` (the
    server passes the values it saw at start; default: this process's environment).
    Endpoints take keys from the keystore only. An explicit key is the caller's own: it is
    not bound.
    """
    if explicit is not None:
        return Secret(
            validate_secret(explicit.reveal() if isinstance(explicit, Secret) else explicit)
        )
    from ..providers import SECRET_NAMESPACE, get_spec

    if provider.lower() == SECRET_NAMESPACE:
        raise KeyOriginError(
            "named secrets are never sent as a provider key: use a provider or endpoint name"
        )
    spec = get_spec(provider)
    store = store if store is not None else Keystore()
    try:
        secret, info = store.get_with_info(provider, name)
    except KeyError:
        secret, info = None, None
    source = _decide(spec, provider, name, info, os.environ)
    if source.source == "keystore" and secret is not None and info is not None:
        return bind_key(spec, info, secret, env=None)
    if source.source == "environment" and source.env_var is not None:
        value = os.environ.get(source.env_var, "").strip()
        return BoundSecret(value, spec.resolved_base_url(env_base_urls), "environment")
    raise MissingKeyError(missing_key_message(provider, name, spec.env_vars))


def named_secret(name: str, *, store: Keystore | None = None) -> Secret:
    """The named secret ``secret@NAME`` from the keystore, for jupyter_byok's own use (the
    shared ledger's database password); never a provider key, never sent to a provider.
    A missing one is a :class:`KeyError`."""
    store = store if store is not None else Keystore()
    return store.get("secret", name)
