"""Keys: the encrypted keystore, its key-encryption tiers and file format, the key rule
(where a key comes from and where it may go), and the one key check.

Modules, one job each:

* :mod:`.store`: :class:`Keystore` (entries sealed with AES-256-GCM, atomic locked writes)
  and :class:`KeyInfo` (what may be shown about a stored key);
* :mod:`.kek`: the key-encryption key tiers (machine-file, file, passphrase, keyring);
* :mod:`.fileformat`: the file layout, checksums and associated-data encoding;
* :mod:`.naming`: key names and the one ``provider@name`` :func:`label`;
* :mod:`.binding`: the origin a stored key is bound to, and whether it may go to a
  provider (the URL checks and ``BoundSecret`` are in :mod:`jupyter_byok.origin`);
* :mod:`.resolve`: the key rule: :func:`key_source` (metadata) and :func:`resolve_key`;
* :mod:`.verify`: the key check shared by ``jupyter byok keys verify`` and the server.

Only ``client.py``, ``commands/``, ``server/`` and this package construct a
:class:`Keystore` (``tests/test_keys_boundary.py``); kernel-side code asks ``Client``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .binding import bind_key, binding_for
    from .fileformat import encode_aad
    from .kek import TIERS, machine_app_id
    from .naming import label, validate_name
    from .resolve import (
        KeySource,
        key_source,
        key_sources,
        keys_overview,
        missing_key_message,
        named_secret,
        resolve_key,
        stored_keys,
    )
    from .store import MAX_SECRET_LENGTH, KeyInfo, Keystore, validate_secret
    from .verify import check_key, verify_key

#: public name -> the module that defines it (loaded on first use: the store needs
#: ``cryptography``, and ``import jupyter_byok`` stays cheap)
_WHERE = {
    "encode_aad": "fileformat",
    "TIERS": "kek",
    "machine_app_id": "kek",
    "label": "naming",
    "validate_name": "naming",
    "bind_key": "binding",
    "binding_for": "binding",
    "KeySource": "resolve",
    "key_source": "resolve",
    "key_sources": "resolve",
    "keys_overview": "resolve",
    "missing_key_message": "resolve",
    "named_secret": "resolve",
    "resolve_key": "resolve",
    "stored_keys": "resolve",
    "MAX_SECRET_LENGTH": "store",
    "KeyInfo": "store",
    "Keystore": "store",
    "validate_secret": "store",
    "check_key": "verify",
    "verify_key": "verify",
}

__all__ = [
    "MAX_SECRET_LENGTH",
    "TIERS",
    "KeyInfo",
    "KeySource",
    "Keystore",
    "bind_key",
    "binding_for",
    "check_key",
    "encode_aad",
    "key_source",
    "key_sources",
    "keys_overview",
    "label",
    "machine_app_id",
    "missing_key_message",
    "named_secret",
    "resolve_key",
    "stored_keys",
    "validate_name",
    "validate_secret",
    "verify_key",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
