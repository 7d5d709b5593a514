"""Where jupyter_byok keeps its state, and the user's settings.

All state lives under one folder, ``JUPYTER_BYOK_HOME`` (default: ``byok`` in the Jupyter
data dir, never inside a notebook workspace), created 0700. Settings are a small JSON
file written atomically; they hold names, model ids and URLs, never key values.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._files import atomic_write, ensure_private_dir, file_lock
from .errors import ConfigError

__all__ = [
    "ENDPOINT_WIRES",
    "Endpoint",
    "Settings",
    "byok_home",
    "home_file",
    "load_settings",
    "save_settings",
    "set_home",
    "update_settings",
]


def byok_home(create: bool = True) -> Path:
    """The state folder: the one given to :func:`set_home`, else ``JUPYTER_BYOK_HOME`` as
    it was when this process first asked, else ``byok`` in the Jupyter data dir.

    On every call's path: one attribute read once resolved; created (0700) and checked
    once per folder and process.
    """
    home = _home.current
    if home is None:
        home = _home.current = _home.from_env()
    if create and home not in _ENSURED:
        ensure_private_dir(home)
        _ENSURED.add(home)
    return home


def set_home(path: str | os.PathLike[str] | None) -> Path | None:
    """Keep all state in ``path`` from now on in this process (``None``: back to
    ``JUPYTER_BYOK_HOME`` or the default, read again). Returns the folder used until now.

    Everything that has a folder (keystore, ledger, caches, settings) follows at its next
    use. Child processes (kernels, servers, workers) learn the folder from
    ``JUPYTER_BYOK_HOME`` in their environment: set it there for them.
    """
    before = _home.current
    _home.current = None if path is None else Path(path).expanduser()
    return before


class _Home:
    """Which folder this process keeps its state in (see :func:`byok_home`)."""

    current: Path | None = None

    @staticmethod
    def from_env() -> Path:
        env = os.environ.get("JUPYTER_BYOK_HOME")
        if env:
            return Path(env).expanduser()
        from jupyter_core.paths import jupyter_data_dir

        return Path(jupyter_data_dir()) / "byok"


_home = _Home()
_ENSURED: set[Path] = set()


#: the wire formats an endpoint may speak (chat providers; local models have their own list)
ENDPOINT_WIRES = ("openai", "anthropic", "gemini")
#: endpoint names: as key names, and never ``:`` or ``@`` (they delimit model ids)
ENDPOINT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Endpoint:
    """A user-registered provider endpoint, e.g. ``ollama`` at ``http://127.0.0.1:11434/v1``.

    ``key_name`` is the stored key its calls use when a model id names none (``@NAME``);
    ``allow_http`` explicitly allows plain ``http`` to a host other than this machine.
    Keys stored for an endpoint are bound to its origin: they do not follow a new URL.
    """

    base_url: str
    wire: str = "openai"  # openai | anthropic | gemini
    needs_key: bool = False
    key_name: str = "default"
    allow_http: bool = False

    @classmethod
    def parse(cls, name: str, value: Any) -> Endpoint:
        """A checked endpoint from JSON-like input, or a one-line :class:`ConfigError`
        (its name is checked by :func:`jupyter_byok.providers.parse_endpoint`)."""
        if not isinstance(value, dict):
            raise ConfigError(
                f"endpoint {name!r} must be an object with base_url, wire, needs_key, "
                "key_name and allow_http"
            )
        fields = {"base_url", "wire", "needs_key", "key_name", "allow_http"}
        unknown = sorted(str(k) for k in set(value) - fields)
        if unknown:
            raise ConfigError(
                f"endpoint {name!r} has unknown field(s) {', '.join(unknown)}: "
                f"use {', '.join(sorted(fields))}"
            )
        for flag in ("needs_key", "allow_http"):
            if not isinstance(value.get(flag, False), bool):
                raise ConfigError(f"endpoint {name!r}: {flag!r} must be true or false")
        for text in ("base_url", "wire", "key_name"):
            if text in value and not isinstance(value[text], str):
                raise ConfigError(f"endpoint {name!r}: {text!r} must be a string")
        if "base_url" not in value:
            raise ConfigError(f"endpoint {name!r} needs a base_url")
        return cls(**value).checked(name)

    def checked(self, name: str) -> Endpoint:
        """This endpoint with its base URL cleaned, after checking wire, URL and key name."""
        from .origin import check_base_url

        if self.wire not in ENDPOINT_WIRES:
            raise ConfigError(
                f"endpoint {name!r}: unknown wire {self.wire!r}; use one of "
                f"{', '.join(ENDPOINT_WIRES)} (local models: `jupyter byok local add`)"
            )
        if not isinstance(self.key_name, str) or not ENDPOINT_NAME_RE.match(self.key_name):
            raise ConfigError(
                f"endpoint {name!r}: invalid key_name {self.key_name!r}; use 1-64 letters, "
                "digits, '.', '_' or '-'"
            )
        url = check_base_url(
            self.base_url, allow_http=self.allow_http is True, what=f"endpoint {name!r} base_url"
        )
        return Endpoint(url, self.wire, bool(self.needs_key), self.key_name, self.allow_http)


@dataclass
class Settings:
    default_model: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    local_models: dict[str, str] = field(default_factory=dict)
    local_prices: dict[str, dict[str, str]] = field(default_factory=dict)
    #: refuse in-process cloud calls in kernels without a jupyter_byok server
    require_server: bool = False
    #: llama.cpp's extra CPU buffer types (weight repacking, AMX): auto | on | off
    local_extra_buffers: str = "auto"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = 1
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        try:
            endpoints = {
                str(name): Endpoint(**value)
                for name, value in dict(data.get("endpoints", {})).items()
            }
            return cls(
                default_model=data.get("default_model"),
                aliases={str(k): str(v) for k, v in dict(data.get("aliases", {})).items()},
                endpoints=endpoints,
                local_models={
                    str(k): str(v) for k, v in dict(data.get("local_models", {})).items()
                },
                local_prices=dict(data.get("local_prices", {})),
                require_server=bool(data.get("require_server", False)),
                local_extra_buffers=str(data.get("local_extra_buffers", "auto")),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"settings file has an invalid entry ({exc}); fix or remove it"
            ) from exc


def home_file(name: str, home: Path | None = None) -> Path:
    """``home / name``, remembered: these paths are on every call's path."""
    home = home or byok_home()
    path = _FILES.get((home, name))
    if path is None:
        path = _FILES[(home, name)] = home / name
    return path


_FILES: dict[tuple[Path, str], Path] = {}


def _settings_path(home: Path | None = None) -> Path:
    return home_file("config.json", home)


def load_settings(home: Path | None = None, *, fresh: bool = False) -> Settings:
    """The settings (a shared, read-only object: use :func:`update_settings` to change them).

    On every call's path: the parsed file is reused while its stat signature is unchanged.
    """
    path = _settings_path(home)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Settings() if fresh else _NO_FILE
    sig = (st.st_ino, st.st_mtime_ns, st.st_size)
    cached = _SETTINGS.get(path)
    if not fresh and cached is not None and cached[0] == sig:
        return cached[1]
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise ConfigError(
            f"settings file {path} is not valid JSON ({exc}); fix it or move it away to start fresh"
        ) from exc
    settings = Settings.from_json(data)
    if not fresh:
        _SETTINGS[path] = (sig, settings)
    return settings


_SETTINGS: dict[Path, tuple[tuple[int, int, int], Settings]] = {}
#: the (shared, read-only) settings when there is no settings file
_NO_FILE = Settings()


def save_settings(settings: Settings, home: Path | None = None) -> None:
    path = _settings_path(home)
    atomic_write(path, json.dumps(settings.to_json(), indent=2, sort_keys=True).encode() + b"\n")
    _SETTINGS.pop(path, None)


def update_settings(change: Any, home: Path | None = None) -> Settings:
    """Read-modify-write the settings under a lock: ``change(settings)`` mutates in place."""
    home = home or byok_home()
    with file_lock(home / "config.lock"):
        settings = load_settings(home, fresh=True)
        change(settings)
        save_settings(settings, home)
    return settings
