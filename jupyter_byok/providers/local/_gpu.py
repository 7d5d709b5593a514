"""GPU offload: how many layers go to the GPU.

``n_gpu_layers`` is ``auto`` (the default) or a whole number (``-1``: all layers). ``auto``
means all layers when llama.cpp reports a GPU offload backend
(``llama_supports_gpu_offload()``: a CUDA, Metal, Vulkan ... build, see ``BYOK_LLAMA_GPU``
in ``scripts/setup.sh``) and 0 otherwise. Precedence: the call's ``n_gpu_layers``, else the
model's (``jupyter byok local set NAME --gpu-layers N``), else ``auto``.

The decision is a pure function of the request and of the backend report, so that it is
tested with the report injected (:func:`decide_gpu_layers`).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from ...errors import LocalModelError

__all__ = [
    "GPU_AUTO",
    "decide_gpu_layers",
    "gpu_backends",
    "gpu_offload_supported",
    "parse_gpu_layers",
]

GPU_AUTO = "auto"
#: llama.cpp's convention for "every layer"
ALL_LAYERS = -1
_BACKEND = re.compile(r"(?:^|\|)\s*([A-Za-z][\w-]*)\s*:")


def parse_gpu_layers(value: Any, what: str = "n_gpu_layers") -> int | str:
    """``auto`` or a whole number >= -1 (a numeric string is accepted, from a CLI or a form)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == GPU_AUTO:
            return GPU_AUTO
        if re.fullmatch(r"-?\d+", text):
            value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or value < ALL_LAYERS:
        raise LocalModelError(
            f"{what} must be 'auto' or a whole number >= -1 (-1: all layers), not {value!r}"
        )
    return value


def decide_gpu_layers(requested: int | str | None, offload_supported: bool) -> int:
    """The ``n_gpu_layers`` to load with. ``auto`` (or nothing asked): all layers when a GPU
    offload backend is present, else 0; a number is used as given."""
    choice = GPU_AUTO if requested is None else parse_gpu_layers(requested)
    if choice == GPU_AUTO:
        return ALL_LAYERS if offload_supported else 0
    assert isinstance(choice, int)
    return choice


@functools.lru_cache(maxsize=1)
def gpu_offload_supported() -> bool:
    """What llama.cpp reports: whether this build can offload layers to a GPU."""
    from ._cache import _import_llama_cpp

    return bool(_import_llama_cpp().llama_supports_gpu_offload())


def gpu_backends(info: str) -> list[str]:
    """The non-CPU backends named in llama.cpp's system info (``CUDA``, ``Metal`` ...)."""
    names = [m.group(1) for m in _BACKEND.finditer(info)]
    return [n for n in dict.fromkeys(names) if n.upper() != "CPU"]
