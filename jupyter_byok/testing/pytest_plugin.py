"""Pytest plugin: a ``fake_providers`` fixture (one server per session, reset per test).

Register it with ``pytest_plugins = ["jupyter_byok.testing.pytest_plugin"]``. The fixture
points every ``JUPYTER_BYOK_<PROVIDER>_BASE_URL`` at the fake for the test's duration.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fake import FakeProviders


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
