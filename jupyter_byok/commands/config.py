"""Changing one setting from its text form, for ``jupyter byok config`` and ``%byok config``."""

from __future__ import annotations

from typing import Any

__all__ = ["CONFIG_KEYS", "set_config"]

#: Settings that ``jupyter byok config KEY VALUE`` and ``%byok config KEY VALUE`` change.
CONFIG_KEYS = ("require_server", "local_extra_buffers")


def set_config(key: str, value: str) -> Any:
    """Change one setting from its text form; returns the value stored."""
    from ..config import update_settings
    from ..errors import ConfigError

    stored: Any
    if key == "require_server":
        stored = value.strip().lower() in ("1", "true", "yes", "on")
    elif key == "local_extra_buffers":
        from ..providers.local._guard import EXTRA_BUFFER_SETTINGS

        stored = value.strip().lower()
        if stored not in EXTRA_BUFFER_SETTINGS:
            raise ConfigError(f"local_extra_buffers must be auto, on or off, not {value!r}")
    else:
        raise ConfigError(f"unknown setting {key!r}: use one of {', '.join(CONFIG_KEYS)}")

    def change(settings: Any) -> None:
        setattr(settings, key, stored)

    update_settings(change)
    return stored
