"""Every test gets its own JUPYTER_BYOK_HOME and no provider keys from the environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["jupyter_byok.testing.pytest_plugin", "pytest_jupyter.jupyter_server"]

PROVIDER_ENV = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "XAI_API_KEY",
    "TAVILY_API_KEY",
    "JUPYTER_BYOK_PASSPHRASE",
)


@pytest.fixture(autouse=True)
def byok_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from jupyter_byok.config import set_home

    home = tmp_path / "byok-home"
    monkeypatch.setenv("JUPYTER_BYOK_HOME", str(home))  # for child processes
    set_home(home)  # for this one
    for var in PROVIDER_ENV:
        monkeypatch.delenv(var, raising=False)
    for var in list(os.environ):
        if var.startswith("JUPYTER_BYOK_") and var.endswith("_BASE_URL"):
            monkeypatch.delenv(var, raising=False)
    yield home
    set_home(None)


@pytest.fixture(autouse=True)
def redaction_registry() -> Iterator[None]:
    """Secrets a test registers are forgotten after it: short ones are masked as words of
    their own, and Hypothesis registers random one-character values."""
    from jupyter_byok.redact import isolated_registry

    with isolated_registry():
        yield
