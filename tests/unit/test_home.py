"""Which folder a process keeps its state in: ``set_home`` says so explicitly; otherwise
``JUPYTER_BYOK_HOME`` as the process first read it (child processes get it from there)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import jupyter_byok
from jupyter_byok import config
from jupyter_byok.config import set_home
from jupyter_byok.keys import Keystore
from jupyter_byok.ledger import LedgerRow, default_ledger


def test_set_home_moves_every_store_at_its_next_use(byok_home: Path, tmp_path: Path) -> None:
    assert config.byok_home() == byok_home
    Keystore().set("openai", "sk-home-a-" + "a" * 30)
    default_ledger().record(
        LedgerRow(provider="openai", model="gpt-4o-mini", feature="t", status="ok")
    )
    other = tmp_path / "other-home"
    assert set_home(other) == byok_home
    assert config.byok_home() == other and other.stat().st_mode & 0o077 == 0
    assert Keystore().list() == [] and len(jupyter_byok.usage()) == 0
    Keystore().set("anthropic", "sk-ant-home-b-" + "b" * 30)
    assert (other / "keystore.json").is_file() and (other / "ledger.sqlite3").is_file()
    set_home(byok_home)
    assert [k.provider for k in Keystore().list()] == ["openai"]
    assert len(jupyter_byok.usage()) == 1


def test_the_variable_is_read_once_and_again_after_set_home_none(
    byok_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_home(None)
    assert config.byok_home() == byok_home  # JUPYTER_BYOK_HOME, read now
    monkeypatch.setenv("JUPYTER_BYOK_HOME", str(tmp_path / "changed"))
    assert config.byok_home() == byok_home  # not on every use
    set_home(None)
    assert config.byok_home() == tmp_path / "changed"


def test_a_child_process_learns_the_folder_from_the_variable(tmp_path: Path) -> None:
    child = tmp_path / "child-home"
    out = subprocess.run(
        [sys.executable, "-c", "from jupyter_byok.config import byok_home; print(byok_home())"],
        env={**os.environ, "JUPYTER_BYOK_HOME": str(child)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == str(child)
