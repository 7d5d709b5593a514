"""Crash safety of local models: the buffer-type decision, the probe child, its verdicts.

No machine here has the AMX CPUs whose llama.cpp backend segfaults, so the crash is
injected: ``JUPYTER_BYOK_PROBE_FAULT`` makes the probe child die from SIGSEGV (only with
extra buffer types on, or always), at the point where the real crash happens.
Each test uses its own link to the embedded model, so each starts without a verdict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_byok.commands.config import set_config
from jupyter_byok.errors import ConfigError, LocalModelError
from jupyter_byok.providers import local
from jupyter_byok.providers.local import _guard
from jupyter_byok.types import Attempt, Message

QUESTION = [Message("user", "What is the capital of France?")]
SMALL = {"n_threads": 1, "max_tokens": 4, "temperature": 0.0}

# System-info lines as llama.cpp prints them (the first as measured on a Sapphire Rapids
# Xeon whose AMX backend crashes, the others from AVX-512 and AVX2 machines).
AMX_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
    "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "
    "AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
AVX512_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "AVX512 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
AVX2_INFO = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | REPACK = 1 |"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """The embedded model under a path of its own: a fresh verdict key for this test."""
    link = tmp_path / "probe-model.gguf"
    link.symlink_to(local.embedded_model_path())
    return link


@pytest.fixture(autouse=True)
def _unload() -> object:
    yield None
    local.unload_all()


# --------------------------------------------------------------------------- decision
@pytest.mark.parametrize(
    ("info", "setting", "expected"),
    [
        (AMX_INFO, "auto", False),
        (AVX512_INFO, "auto", True),
        (AVX2_INFO, "auto", True),
        (AMX_INFO.replace("AMX_INT8 = 1", "AMX_INT8 = 0"), "auto", True),
        (AMX_INFO, "on", True),
        (AVX2_INFO, "off", False),
        ("", "auto", True),
    ],
)
def test_decision_from_system_info(info: str, setting: str, expected: bool) -> None:
    assert local.decide_extra_buffers(setting, info) is expected
    assert local.amx_present(info) is ("AMX_INT8 = 1" in info)


def test_setting_from_environment_and_settings_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_guard.SETTING_ENV, raising=False)
    assert _guard.buffer_setting() == "auto"
    assert set_config("local_extra_buffers", "OFF") == "off"
    assert _guard.buffer_setting() == "off"
    monkeypatch.setenv(_guard.SETTING_ENV, "on")  # the environment wins over the file
    assert _guard.buffer_setting() == "on"
    monkeypatch.setenv(_guard.SETTING_ENV, "sometimes")
    with pytest.raises(ConfigError, match="auto, on or off"):
        _guard.buffer_setting()
    with pytest.raises(ConfigError, match="auto, on or off"):
        set_config("local_extra_buffers", "maybe")


def test_model_params_sets_the_field_only_inside_the_block() -> None:
    import llama_cpp

    assert llama_cpp.llama_model_default_params().use_extra_bufts is True
    with local._guard.model_params(False):
        assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is False
    assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is True


# --------------------------------------------------------------------------- probe
def test_this_machine_probes_ok_with_the_decided_buffers(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(_guard.FAULT_ENV, raising=False)
    result = local.complete_local(str(model), QUESTION, SMALL)
    assert result.usage.output_tokens >= 1
    [verdict] = [v for v in local.probe_verdicts() if v["model"] == str(model)]
    decided = local.decide_extra_buffers(_guard.buffer_setting(), local.system_info())
    assert verdict["verdict"] == "ok"
    assert verdict["extra_buffers"] is decided
    assert verdict["signal"] is None
    assert verdict["amx"] is local.amx_present(local.system_info())
    assert 0 < verdict["probe_s"] < 30
    [row] = [r for r in local.loaded_models() if r["path"] == str(model)]
    assert row["extra_buffers"] is decided


def test_probe_falls_back_to_no_extra_buffers_after_a_crash(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_guard.SETTING_ENV, "on")
    monkeypatch.setenv(_guard.FAULT_ENV, "extra-buffers")
    result = local.complete_local(str(model), QUESTION, SMALL)
    assert result.text.strip() or result.usage.output_tokens >= 1
    [verdict] = [v for v in local.probe_verdicts() if v["model"] == str(model)]
    assert verdict["verdict"] == "fallback"
    assert verdict["extra_buffers"] is False
    assert verdict["signal"] == "SIGSEGV"
    [row] = [r for r in local.loaded_models() if r["path"] == str(model)]
    assert row["extra_buffers"] is False
    # Raw llama-cpp through the same guard loads the same way.
    raw = local.guarded_llama(model, n_ctx=64, n_threads=1, verbose=False)
    try:
        assert raw.model_params.use_extra_bufts is False
    finally:
        raw.close()


def test_probe_that_always_dies_refuses_the_model_in_one_line(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_guard.FAULT_ENV, "always")
    attempts: list[Attempt] = []
    with pytest.raises(LocalModelError) as info:
        local.complete_local(str(model), QUESTION, SMALL, on_attempt=attempts.append)
    message = str(info.value)
    assert "\n" not in message
    assert "SIGSEGV" in message and "jupyter byok doctor" in message
    assert [a.status for a in attempts] == ["error"]
    assert not any(r["path"] == str(model) for r in local.loaded_models())
    # Refused again at once, from the verdict, without another probe.
    with pytest.raises(LocalModelError, match="SIGSEGV"):
        local.complete_local(str(model), QUESTION, SMALL)
    [verdict] = [v for v in local.probe_verdicts() if v["model"] == str(model)]
    assert verdict["verdict"] == "refused" and verdict["extra_buffers"] is None


def _script_call(model: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = (
        "import jupyter_byok, sys\n"
        "try:\n"
        f"    answer = jupyter_byok.complete('local:{model}', 'Say hi', max_tokens=4,"
        " n_threads=1)\n"
        "    print('ANSWER', answer.usage.output_tokens)\n"
        "except jupyter_byok.ByokError as exc:\n"
        "    print('ERROR', exc)\n"
        "print('ALIVE')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )


def test_the_asking_process_survives_and_a_verdict_is_reused(model: Path) -> None:
    # A script whose every probe dies: it gets the clear error and carries on.
    dying = _script_call(model, {_guard.FAULT_ENV: "always"})
    assert dying.returncode == 0, dying.stderr
    assert "ERROR" in dying.stdout and "SIGSEGV" in dying.stdout
    assert dying.stdout.rstrip().endswith("ALIVE")

    # A healthy verdict for another file, recorded by one process ...
    healthy = model.with_name("healthy.gguf")
    healthy.symlink_to(local.embedded_model_path())
    first = _script_call(healthy, {_guard.FAULT_ENV: ""})
    assert "ANSWER" in first.stdout, first.stdout + first.stderr
    verdicts = json.loads((Path(os.environ["JUPYTER_BYOK_HOME"]) / "local-probe.json").read_text())
    before = [v for v in verdicts["verdicts"].values() if v["model"] == str(healthy)]
    assert [v["verdict"] for v in before] == ["ok"]
    # ... is reused by the next: with every probe now fatal, the call still works, so no
    # probe ran; and the recorded verdict is the same one.
    second = _script_call(healthy, {_guard.FAULT_ENV: "always"})
    assert "ANSWER" in second.stdout, second.stdout + second.stderr
    after = json.loads((Path(os.environ["JUPYTER_BYOK_HOME"]) / "local-probe.json").read_text())
    assert [v for v in after["verdicts"].values() if v["model"] == str(healthy)] == before


def test_a_new_setting_probes_again(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_guard.SETTING_ENV, "off")
    local.complete_local(str(model), QUESTION, SMALL)
    local.unload_all()
    monkeypatch.setenv(_guard.SETTING_ENV, "on")
    local.complete_local(str(model), QUESTION, SMALL)
    mine = [v for v in local.probe_verdicts() if v["model"] == str(model)]
    assert sorted((v["setting"], v["extra_buffers"]) for v in mine) == [
        ("off", False),
        ("on", True),
    ]
