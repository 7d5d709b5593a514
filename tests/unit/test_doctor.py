"""``jupyter byok doctor`` and ``%byok doctor``: every section, and never a key value."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import jupyter_byok
from jupyter_byok.cli import main
from jupyter_byok.commands.doctor import doctor, render_text
from jupyter_byok.keys import Keystore

CANARY = "sk-proj-CANARYdoctor0123456789abcdefDOCTOR42"
ENV_CANARY = "sk-ant-api03-ENVCANARYdoctor9876543210zyxw"


@pytest.fixture(autouse=True)
def _fresh_models() -> None:
    """Loaded models outlive a test; unload them so this test's first call loads (and checks)."""
    from jupyter_byok.providers import local

    local.unload_all()


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> None:
    Keystore().set("openai", CANARY, "work")
    monkeypatch.setenv("ANTHROPIC_API_KEY", ENV_CANARY)


def _no_canary(text: str) -> None:
    for secret in (CANARY, ENV_CANARY):
        assert secret not in text
        assert secret[8:-4] not in text  # not even the middle of it


def test_cli_doctor_reports_every_section_without_key_values(
    planted: None, capsys: pytest.CaptureFixture[str], byok_home: Path
) -> None:
    jupyter_byok.complete("local:smollm2", "Say hi", max_tokens=4, n_threads=1)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    _no_canary(out)
    for heading in ("versions", "local models (llama.cpp)", "keystore", "usage ledger", "jupyter"):
        assert f"\n{heading}\n" in out
    assert f"jupyter_byok           {jupyter_byok.__version__}" in out
    assert "llama-cpp-python" in out and "extra buffer types" in out
    assert "GPU offload" in out
    assert "SmolLM2-135M-Instruct.Q4_1.gguf: ok (extra buffers" in out
    assert f"openai@work (…{CANARY[-4:]}" in out
    assert "keys from environment  ANTHROPIC_API_KEY" in out
    assert "integrity check        ok" in out
    assert "takes new rows         yes (" in out
    assert "; rows: 1\n" in out
    assert "server extension" in out and "labextension" in out
    assert str(byok_home) in out


def test_doctor_json_is_plain_data_and_checks_the_ledger(
    planted: None, capsys: pytest.CaptureFixture[str]
) -> None:
    jupyter_byok.complete("local:smollm2", "Say hi", max_tokens=4, n_threads=1)
    assert main(["doctor", "--json"]) == 0
    raw = capsys.readouterr().out
    _no_canary(raw)
    report = json.loads(raw)
    assert report["ledger"]["integrity"] == "ok"
    assert report["ledger"]["rows"] == 1  # the one call above
    assert report["ledger"]["writable"] is True and report["ledger"]["pending_rows"] == 0
    assert report["keystore"]["modes"]["keystore"] == "0o600"
    assert report["keystore"]["modes"]["home"] == "0o700"
    assert [k["label"] for k in report["keystore"]["keys"]] == ["openai@work"]
    llama = report["llama_cpp"]
    assert llama["installed"] is True
    assert llama["extra_buffers_decision"] in ("on", "off")
    assert llama["amx"] is ("AMX_INT8" in llama["cpu_features"])
    assert [v["verdict"] for v in llama["verdicts"]] == ["ok"]
    assert isinstance(llama["gpu_offload"], bool)


def test_doctor_reports_a_damaged_ledger(capsys: pytest.CaptureFixture[str]) -> None:
    jupyter_byok.complete("local:smollm2", "Say hi", max_tokens=4, n_threads=1)
    from jupyter_byok.ledger import ledger_path

    path = ledger_path()
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the schema page
    path.write_bytes(bytes(data))
    report = doctor()
    assert report["ledger"]["integrity"] != "ok"
    text = render_text(report)
    assert "integrity check" in text and "integrity check        ok" not in text


def test_line_magic_doctor_displays_the_report(planted: None) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "jupyter_byok")
        with capture_output() as captured:
            shell.run_line_magic("byok", "doctor")
        shown = "".join(
            str(output.data.get("text/plain", "")) + str(output.data.get("text/markdown", ""))
            for output in captured.outputs
        )
        shown += captured.stdout + captured.stderr
        _no_canary(shown)
        assert "jupyter_byok doctor" in shown and "usage ledger" in shown
        assert f"openai@work (…{CANARY[-4:]}" in shown
    finally:
        InteractiveShell.clear_instance()
