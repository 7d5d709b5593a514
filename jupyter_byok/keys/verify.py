"""The one key check, shared by ``jupyter byok keys verify`` and ``POST /byok/keys/{id}/verify``.

The key is resolved by the key rule (keystore first, then the environment), bound to its
origin as for a call, and only handed to the provider's wire module, which asks the
provider's cheap key-check endpoint (models list, Tavily usage). A stored key that works
is marked verified.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import ConfigError
from .naming import label
from .resolve import resolve_key
from .store import Keystore

__all__ = ["check_key", "verify_key"]


async def check_key(
    provider: str,
    name: str = "default",
    *,
    store: Keystore,
    client: Any,
    raise_errors: bool = False,
    env_base_urls: Any = None,
) -> dict[str, Any]:
    """Check the key for ``provider@name`` with ``client`` (an ``httpx.AsyncClient``).

    Returns the provider's answer (``ok``, ``detail``, ``latency_s``, ...) with ``source``
    (``keystore`` or ``environment``), ``label`` and ``last4``; never the key. Blocking
    keystore work runs on a worker thread.
    """
    from ..providers import SECRET_NAMESPACE, dispatch, get_spec

    if provider.lower() == SECRET_NAMESPACE:
        raise ConfigError("named secrets are never sent to a provider: there is nothing to verify")
    spec = get_spec(provider)
    if spec.wire == "local":
        raise ConfigError(f"{provider} runs locally and needs no key: there is nothing to verify")
    key = await asyncio.to_thread(
        resolve_key, provider, name, store=store, env_base_urls=env_base_urls
    )
    source = getattr(key, "source", "keystore")
    answer = await dispatch.check_key(spec, key, client=client, raise_errors=raise_errors)
    if answer.get("ok") and source == "keystore":
        await asyncio.to_thread(store.mark_verified, provider, name)
    return {**answer, "source": source, "label": label(provider, name), "last4": key.last4}


def verify_key(provider: str, name: str = "default", *, store: Keystore | None = None) -> str:
    """Check the key for ``provider`` (entry ``name``) and say what the provider answered
    (for a terminal: ``jupyter byok keys verify``)."""
    import httpx

    store = store if store is not None else Keystore()

    async def run() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(20.0, connect=5.0)) as client:
            return await check_key(provider, name, store=store, client=client, raise_errors=True)

    answer = asyncio.run(run())
    ending = f", ending {answer['last4']}" if answer["last4"] else ""
    return (
        f"{answer['label']} key ({answer['source']}{ending}) works: {answer['detail']} "
        f"in {float(str(answer['latency_s'])) * 1000:.0f} ms"
    )
