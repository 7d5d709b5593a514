"""Test helpers shipped with jupyter_byok: loopback fake providers for offline tests.

``with FakeProviders() as fake:`` starts one HTTP server on 127.0.0.1 that speaks the
OpenAI, xAI, Anthropic, Gemini and Tavily wire formats; ``fake.env()`` gives the
``JUPYTER_BYOK_<PROVIDER>_BASE_URL`` variables that point jupyter_byok at it. Pytest users
get the ``fake_providers`` fixture from ``jupyter_byok.testing.pytest_plugin``.
"""

from __future__ import annotations

from .fake import FakeProviders, Fault, RecordedRequest
from .process import fake_providers_process
from .wire import tokens

__all__ = ["FakeProviders", "Fault", "RecordedRequest", "fake_providers_process", "tokens"]
