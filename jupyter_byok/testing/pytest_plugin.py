"""Pytest plugin: a ``fake_providers`` fixture (one server per session, reset per test)
and a ``fake_hub`` fixture (a loopback Hugging Face Hub serving the embedded model).

Register it with ``pytest_plugins = ["jupyter_byok.testing.pytest_plugin"]``. The fixture
points every ``JUPYTER_BYOK_<PROVIDER>_BASE_URL`` at the fake for the test's duration;
``fake_hub`` points ``HF_ENDPOINT`` at a new fake Hub for the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake import FakeProviders
from .hub import FakeHub, serve_embedded


@pytest.fixture(scope="session")
def fake_providers_server() -> Iterator[FakeProviders]:
    with FakeProviders() as fake:
        yield fake


@pytest.fixture
def fake_providers(
    fake_providers_server: FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeProviders]:
    fake = fake_providers_server
    fake.reset()
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    yield fake
    fake.reset()


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A fake Hub for this test, serving the embedded SmolLM2 file as
    ``hub.EMBEDDED_REPO/hub.EMBEDDED_FILENAME``; ``HF_ENDPOINT`` points at it, and
    ``HF_HOME`` at an empty folder (no Hugging Face cache or token of the user's)."""
    with serve_embedded(FakeHub()) as hub:
        for name, value in hub.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        yield hub
