"""GPU offload: the ``n_gpu_layers`` decision, with llama.cpp's backend report injected,
and the precedence call > model > auto on this (CPU-only) machine."""

from __future__ import annotations

import pytest

from jupyter_byok.commands.doctor import doctor, render_text
from jupyter_byok.errors import LocalModelError
from jupyter_byok.local_models import set_options
from jupyter_byok.providers import local
from jupyter_byok.providers.local._cache import _load_options
from jupyter_byok.providers.local._gpu import (
    decide_gpu_layers,
    gpu_backends,
    gpu_offload_supported,
    parse_gpu_layers,
)
from jupyter_byok.types import Message

CUDA_INFO = (
    "CUDA : ARCHS = 500,610,700,750,800,860,890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | "
    "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | OPENMP = 1 | REPACK = 1 | "
)
METAL_INFO = "Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ARM_FMA = 1 | ACCELERATE = 1 | "
CPU_INFO = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | REPACK = 1 | "


@pytest.mark.parametrize(
    ("requested", "offload", "expected"),
    [
        ("auto", True, -1),  # a GPU build: every layer on the GPU
        ("auto", False, 0),  # CPU only
        (None, True, -1),  # nothing asked means auto
        (None, False, 0),
        ("AUTO", True, -1),
        (0, True, 0),  # a number is used as given
        (12, True, 12),
        (12, False, 12),
        ("20", True, 20),
        (-1, False, -1),
    ],
)
def test_decision_from_the_backend_report(
    requested: int | str | None, offload: bool, expected: int
) -> None:
    assert decide_gpu_layers(requested, offload) == expected


@pytest.mark.parametrize("bad", ["all", -2, 1.5, True, "", "12 layers"])
def test_bad_values_are_one_clear_line(bad: object) -> None:
    with pytest.raises(LocalModelError, match="must be 'auto' or a whole number >= -1"):
        parse_gpu_layers(bad)


def test_backends_named_from_system_info() -> None:
    assert gpu_backends(CUDA_INFO) == ["CUDA"]
    assert gpu_backends(METAL_INFO) == ["Metal"]
    assert gpu_backends(CPU_INFO) == []


def test_precedence_call_then_model_then_auto() -> None:
    path = local.embedded_model_path()
    auto = -1 if gpu_offload_supported() else 0  # what this machine's llama.cpp reports
    assert _load_options({}, path)["n_gpu_layers"] == auto
    set_options("smollm2", n_gpu_layers="7")
    assert _load_options({}, path)["n_gpu_layers"] == 7
    assert _load_options({"n_gpu_layers": 3}, path)["n_gpu_layers"] == 3
    assert _load_options({"n_gpu_layers": "auto"}, path)["n_gpu_layers"] == auto
    set_options("smollm2", n_gpu_layers=None)  # back to auto
    assert _load_options({}, path)["n_gpu_layers"] == auto
    with pytest.raises(LocalModelError):
        _load_options({"n_gpu_layers": "many"}, path)


def test_a_load_uses_the_decision_and_doctor_shows_the_backend() -> None:
    auto = -1 if gpu_offload_supported() else 0
    try:
        local.complete_local("smollm2", [Message("user", "Hi")], {"max_tokens": 2, "n_threads": 1})
        # Other tests in this worker process may have loaded models too: find this load.
        path = str(local.embedded_model_path())
        rows = [r for r in local.loaded_models() if r["path"] == path and r["n_threads"] == 1]
        assert rows and all(r["n_gpu_layers"] == auto for r in rows)
    finally:
        local.unload_all()
    report = doctor()["llama_cpp"]
    assert report["gpu_offload"] is gpu_offload_supported()
    assert report["gpu_layers_auto"] == auto
    assert report["gpu_backends"] == gpu_backends(report["system_info"])
    text = render_text(doctor())
    line = next(x for x in text.splitlines() if x.strip().startswith("GPU offload"))
    if report["gpu_offload"]:
        assert "available (" in line
    else:
        assert line.split(None, 2)[2] == "none (CPU only)"
        assert "n_gpu_layers auto      0 (CPU)" in text
