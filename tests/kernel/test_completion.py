"""Tab completion of ``%%byok`` / ``%byok``: registered and pulled local models appear."""

from __future__ import annotations

import warnings

import pytest
from IPython.core.interactiveshell import InteractiveShell

from jupyter_byok.local_models import pull
from jupyter_byok.testing.hub import EMBEDDED_FILENAME, EMBEDDED_REPO, FakeHub


def complete(line: str) -> list[str]:
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_byok")
    with warnings.catch_warnings():  # the simple (pending-deprecation) API: plain strings
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        _, matches = ip.Completer.complete(line_buffer=line, cursor_pos=len(line))
    return list(matches)


@pytest.fixture
def pulled(fake_hub: FakeHub) -> str:
    return pull(f"hf:{EMBEDDED_REPO}/{EMBEDDED_FILENAME}", name="pulled-one").name


def test_model_ids_include_local_models(pulled: str) -> None:
    assert "smollm2" in complete("%%byok local:sm")
    assert "pulled-one" in complete("%%byok local:p")
    assert "local:pulled-one" in complete("%%byok ")
    assert "openai:gpt-4o-mini" in complete("%%byok ")
    assert "gpt-4o-mini" in complete("%%byok openai:gpt-4o-m")
    assert "local:pulled-one" in complete("%byok default lo")


def test_subcommands_and_local_names(pulled: str) -> None:
    assert "local" in complete("%byok lo")
    assert set(complete("%byok local ")) >= {"pull", "list", "remove", "default", "test"}
    assert complete("%byok local remove ") == ["smollm2", "pulled-one"]
    assert complete("%byok local test pu") == ["pulled-one"]
