"""Key verification against the provider's cheap key-check endpoint (models list, Tavily usage).

The key is resolved here (keystore first, then the environment) and is only handed to the
provider's wire module; a key that works and came from the keystore is marked verified.
"""

from __future__ import annotations

import asyncio

from .errors import ConfigError

__all__ = ["verify_key"]


def verify_key(provider: str, name: str = "default") -> str:
    """Check the key for ``provider`` (entry ``name``) and say what the provider answered."""
    import httpx

    from .keystore import Keystore, resolve_key
    from .providers import SECRET_NAMESPACE, dispatch, get_spec

    if provider.lower() == SECRET_NAMESPACE:
        raise ConfigError("named secrets are never sent to a provider: there is nothing to verify")
    spec = get_spec(provider)
    if spec.wire == "local":
        raise ConfigError(f"{provider} runs locally and needs no key: there is nothing to verify")
    store = Keystore()
    from_store = store.has(provider, name)
    key = resolve_key(provider, name, store=store)

    async def check() -> dict[str, object]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(20.0, connect=5.0)) as client:
            return await dispatch.check_key(spec, key, client=client, raise_errors=True)

    answer = asyncio.run(check())
    if from_store:
        store.mark_verified(provider, name)
    source = "keystore" if from_store else "environment"
    label = provider if name == "default" else f"{provider}@{name}"
    ending = f", ending {key.last4}" if key.last4 else ""
    return (
        f"{label} key ({source}{ending}) works: {answer['detail']} "
        f"in {float(str(answer['latency_s'])) * 1000:.0f} ms"
    )
