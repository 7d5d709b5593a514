"""The registry's operations: list with facts, remove, default, per-model options, test.

Everything returns plain data (JSON-ready dicts); the CLI, ``%byok local`` and the server's
``/byok/local/*`` routes render it. Nothing here loads a model into the calling process:
facts come from GGUF headers, and :func:`test_model` runs its prompt in a child process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, LocalModelError
from ._spec import check_name

__all__ = [
    "default_local_name",
    "list_local_models",
    "remove_model",
    "set_default",
    "set_options",
    "test_model",
]

TEST_PROMPT = "Say hello in five words."
TEST_MAX_TOKENS = 32
TEST_TIMEOUT_S = 300.0


def _facts(path: Path, registry: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(facts for this file, whether they were read now). Reused while the file's size and
    mtime are those it had when read."""
    from ._gguf import inspect_gguf

    try:
        st = path.stat()
    except OSError:
        return {}, False
    known = registry["facts"].get(str(path))
    if (
        isinstance(known, dict)
        and known.get("size_bytes") == st.st_size
        and known.get("mtime_ns") == st.st_mtime_ns
    ):
        return dict(known), False
    try:
        facts = inspect_gguf(path)
    except LocalModelError as exc:
        return {"error": str(exc)}, False
    return {**facts, "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns}, True


def list_local_models() -> list[dict[str, Any]]:
    """The embedded model and every registered one, with the facts ``local list`` shows:
    size on disk, quantization, parameters, context length, chat template, RAM estimate,
    last used, the default, and whether jupyter_byok downloaded the file."""
    from ..providers.local import available_models
    from ..providers.local._registry import load_registry, update_registry

    registry = load_registry()
    default = default_local_name()
    rows: list[dict[str, Any]] = []
    fresh: dict[str, dict[str, Any]] = {}
    for row in available_models():
        path = Path(row["path"]) if row["path"] else None
        facts: dict[str, Any] = {}
        if path is not None and row["exists"]:
            facts, read_now = _facts(path, registry)
            if read_now:
                fresh[str(path)] = facts
        entry = registry["models"].get(row["name"]) if row["source"] == "pulled" else None
        entry = entry if isinstance(entry, dict) else {}
        options = registry["options"].get(str(path)) if path else None
        rows.append(
            {
                **row,
                "id": f"local:{row['name']}",
                "default": row["name"] == default,
                "downloaded": bool(entry.get("downloaded")),
                "repo": entry.get("repo"),
                "filename": entry.get("filename") or (path.name if path else None),
                "sha256": entry.get("sha256"),
                "pulled_at": entry.get("pulled_at"),
                "quantization": facts.get("quantization"),
                "parameters": facts.get("parameters"),
                "size_label": facts.get("size_label"),
                "architecture": facts.get("architecture"),
                "context_length": facts.get("context_length"),
                "chat_template": facts.get("chat_template"),
                "ram_estimate_bytes": facts.get("ram_estimate_bytes"),
                "facts_error": facts.get("error"),
                "n_gpu_layers": (options or {}).get("n_gpu_layers", "auto"),
                "last_used": registry["used"].get(str(path)) if path else None,
            }
        )
    if fresh:

        def remember(reg: dict[str, Any]) -> None:
            reg["facts"].update(fresh)

        try:
            update_registry(remember)
        except OSError:  # a read-only home: the facts are read again next time
            pass
    return rows


def _known_names() -> set[str]:
    from ..providers.local import EMBEDDED_NAME
    from ..providers.local._files import registered_paths

    return {EMBEDDED_NAME, *registered_paths()}


def default_local_name() -> str:
    """The default local model's name: the one set, if still registered, else the embedded."""
    from ..providers.local import EMBEDDED_NAME
    from ..providers.local._registry import load_registry

    try:
        name = load_registry()["default"]
    except ConfigError:
        return EMBEDDED_NAME
    return name if name and name in _known_names() else EMBEDDED_NAME


def set_default(name: str) -> dict[str, Any]:
    """Make ``local:NAME`` the default local model (the offline default model)."""
    from ..providers.local import EMBEDDED_NAME
    from ..providers.local._registry import update_registry

    if name not in _known_names():
        raise ConfigError(
            f"no local model named {name!r}: `jupyter byok local list` shows the names"
        )

    def change(registry: dict[str, Any]) -> None:
        registry["default"] = None if name == EMBEDDED_NAME else name

    update_registry(change)
    return {"default": name, "message": f"default local model: local:{name}"}


def set_options(name: str, *, n_gpu_layers: int | str | None = None) -> dict[str, Any]:
    """Per-model load options (``n_gpu_layers``: ``auto`` or a number)."""
    from ..providers.local import resolve_local_model
    from ..providers.local._gpu import parse_gpu_layers
    from ..providers.local._registry import update_registry

    path = resolve_local_model(name)
    value = parse_gpu_layers(n_gpu_layers, "--gpu-layers") if n_gpu_layers is not None else None

    def change(registry: dict[str, Any]) -> None:
        options = registry["options"].setdefault(str(path), {})
        if value is None:
            options.pop("n_gpu_layers", None)
        else:
            options["n_gpu_layers"] = value

    update_registry(change)
    shown = "auto" if value is None else value
    return {"name": name, "n_gpu_layers": shown, "message": f"local:{name}: n_gpu_layers {shown}"}


def remove_model(name: str) -> dict[str, Any]:
    """Forget ``local:NAME``. Its file is deleted only if jupyter_byok downloaded it (and no
    other name uses it); a file added by hand or found in the Hub cache is kept."""
    from ..config import Settings, update_settings
    from ..providers.local import EMBEDDED_NAME
    from ..providers.local._registry import update_registry
    from ._spec import human_size

    if name == EMBEDDED_NAME:
        raise ConfigError(f"{EMBEDDED_NAME!r} is the embedded model and cannot be removed")
    check_name(name)
    removed: dict[str, Any] = {}

    def change(registry: dict[str, Any]) -> None:
        entry = registry["models"].pop(name, None)
        if not isinstance(entry, dict):
            return
        removed.update(entry)
        path = str(entry.get("path"))
        shared = any(
            isinstance(e, dict) and e.get("path") == path for e in registry["models"].values()
        )
        removed["shared"] = shared
        if not shared:
            registry["facts"].pop(path, None)
            registry["options"].pop(path, None)
            registry["used"].pop(path, None)
        if registry.get("default") == name:
            registry["default"] = None

    update_registry(change)
    if removed:
        path = Path(str(removed["path"]))
        if removed.get("downloaded") and not removed.get("shared"):
            size = path.stat().st_size if path.exists() else 0
            path.unlink(missing_ok=True)
            for extra in (
                path.with_name(path.name + ".part"),
                path.with_name(path.name + ".part.json"),
            ):
                extra.unlink(missing_ok=True)
            try:
                path.parent.rmdir()  # the repo's folder, when it is now empty
            except OSError:
                pass
            message = f"removed local:{name} and deleted {path.name} ({human_size(size)} freed)"
            return {"name": name, "deleted_file": str(path), "message": message}
        why = (
            "another name uses it" if removed.get("shared") else "jupyter_byok did not download it"
        )
        return {
            "name": name,
            "deleted_file": None,
            "message": f"removed local:{name} (the file was kept: {why})",
        }

    found: list[bool] = []

    def forget(settings: Settings) -> None:
        found.append(settings.local_models.pop(name, None) is not None)

    update_settings(forget)
    if not found[0]:
        known = ", ".join(sorted(_known_names() - {EMBEDDED_NAME})) or "none"
        raise ConfigError(f"no local model named {name!r} (registered: {known})")
    return {
        "name": name,
        "deleted_file": None,
        "message": f"removed local:{name} (the model file itself was not touched)",
    }


def test_model(
    name: str,
    prompt: str = TEST_PROMPT,
    *,
    max_tokens: int = TEST_MAX_TOKENS,
    timeout: float = TEST_TIMEOUT_S,
) -> dict[str, Any]:
    """Send a short prompt to ``local:NAME`` in a child process (never in the caller's:
    the Jupyter server must not load models, and a native crash stays in the child).

    Returns the answer, tokens and tokens/s, measured by the child around a real
    ``local:`` call (guard, probe and GPU decision included).
    """
    if name not in _known_names():
        raise ConfigError(
            f"no local model named {name!r}: `jupyter byok local list` shows the names"
        )
    command = [
        sys.executable,
        "-m",
        "jupyter_byok.local_models._trial",
        name,
        prompt,
        str(max_tokens),
    ]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
            env=dict(os.environ),
        )
    except subprocess.TimeoutExpired:
        raise LocalModelError(
            f"local:{name} did not answer within {timeout:.0f} s: the machine may be busy, "
            "or the model too large for it; run `jupyter byok doctor`"
        ) from None
    if done.returncode < 0:
        try:
            died = signal.Signals(-done.returncode).name
        except ValueError:
            died = f"signal {-done.returncode}"
        raise LocalModelError(
            f"local:{name} crashed llama.cpp in the test process ({died}); your kernels are "
            "unaffected: run `jupyter byok doctor`"
        )
    lines = [line for line in done.stdout.decode("utf-8", "replace").splitlines() if line.strip()]
    try:
        report = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise LocalModelError(f"the test of local:{name} failed ({tail[0][:200]})") from None
    if "error" in report:
        raise LocalModelError(str(report["error"]))
    report["name"] = name
    return dict(report)
