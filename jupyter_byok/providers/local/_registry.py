"""The local model registry: models pulled by jupyter_byok, the default local model, and
per-model facts and options.

Invariants:

- One JSON file, ``local-models.json`` under ``JUPYTER_BYOK_HOME``, written atomically under
  a lock: a model is registered by exactly one write, after its file is complete and
  verified, so a failed or interrupted pull leaves no entry.
- Names added by hand (``jupyter byok local add``) stay in the settings file; this file
  holds pulled models (``models``), facts read from GGUF headers (``facts``, keyed by path
  and checked against size and mtime), per-file options (``options``: ``n_gpu_layers``),
  when each file was last loaded (``used``) and the default local model (``default``).
- It holds paths, names, checksums and numbers, never a token: the Hub token is read from
  the keystore for each pull and passed to huggingface_hub only.
- Reads are on a model load's path, so the parsed file is reused while its stat signature
  is unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import ConfigError

__all__ = [
    "REGISTRY_FILE",
    "gpu_layers_option",
    "load_registry",
    "record_use",
    "update_registry",
]

log = logging.getLogger("jupyter_byok")

REGISTRY_FILE = "local-models.json"
_EMPTY: dict[str, Any] = {
    "version": 1,
    "default": None,
    "models": {},
    "facts": {},
    "options": {},
    "used": {},
}
_CACHE: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}


def _path() -> Path:
    from ...config import home_file

    return home_file(REGISTRY_FILE)


def _fresh() -> dict[str, Any]:
    return json.loads(json.dumps(_EMPTY))


def _parse(raw: str, path: Path) -> dict[str, Any]:
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise ConfigError(
            f"the local model registry {path} is not valid JSON ({exc}): fix it or move it "
            "away (pulled model files stay where they are)"
        ) from exc
    registry = _fresh()
    for key in ("models", "facts", "options", "used"):
        value = data.get(key)
        if isinstance(value, dict):
            registry[key] = value
    default = data.get("default")
    registry["default"] = default if isinstance(default, str) else None
    return registry


def load_registry() -> dict[str, Any]:
    """The registry (shared and read-only: change it with :func:`update_registry`)."""
    path = _path()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _fresh()
    sig = (st.st_ino, st.st_mtime_ns, st.st_size)
    cached = _CACHE.get(path)
    if cached is not None and cached[0] == sig:
        return cached[1]
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _fresh()
    registry = _parse(raw, path)
    _CACHE[path] = (sig, registry)
    return registry


def update_registry(change: Callable[[dict[str, Any]], Any]) -> Any:
    """Read-modify-write under a lock; ``change(registry)`` mutates in place and its
    return value is returned. Nothing is written if it raises."""
    from ..._files import atomic_write, file_lock
    from ...config import home_file

    path = _path()
    with file_lock(home_file("local-models.lock")):
        try:
            registry = _parse(path.read_text(encoding="utf-8"), path)
        except FileNotFoundError:
            registry = _fresh()
        result = change(registry)
        registry["version"] = 1
        body = json.dumps(registry, indent=2, sort_keys=True).encode() + b"\n"
        atomic_write(path, body)
        _CACHE.pop(path, None)
    return result


def record_use(path: Path) -> None:
    """Remember when ``path`` was last loaded (for ``local list``); never fails a load."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def change(registry: dict[str, Any]) -> None:
        registry["used"][str(path)] = stamp

    try:
        update_registry(change)
    except Exception as exc:  # a read-only home must not stop a model from loading
        log.debug("could not record the use of %s (%s)", path.name, exc)


def gpu_layers_option(path: Path) -> int | str | None:
    """The ``n_gpu_layers`` stored for this model file (``auto`` or a number), if any."""
    try:
        options = load_registry()["options"].get(str(path))
    except ConfigError:
        return None
    if not isinstance(options, dict):
        return None
    value = options.get("n_gpu_layers")
    return value if isinstance(value, int | str) and not isinstance(value, bool) else None
