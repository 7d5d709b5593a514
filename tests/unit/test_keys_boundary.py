"""Issue 14: the key rule is written once, and kernel-side code does not open the keystore.

* Only ``client.py``, ``commands/``, ``server/`` and ``keys/`` construct a ``Keystore``;
  the few other places are listed below, each with its reason, and the list only shrinks.
* :func:`jupyter_byok.keys.key_source` decides where a key comes from (stored, else the
  default key's environment variable for a built-in provider), from metadata only.
* :func:`jupyter_byok.keys.label` is the one ``provider@name`` label.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jupyter_byok.client import Client
from jupyter_byok.errors import UnknownProviderError
from jupyter_byok.keys import KeyInfo, Keystore, key_source, key_sources, label

PACKAGE = Path(__file__).resolve().parents[2] / "jupyter_byok"

#: where a Keystore may be built: the client's in-process side, commands, the server, keys
ALLOWED = ("client.py", "commands/", "server/", "keys/")
#: other places that still build one, each with its reason (do not add without one)
KNOWN: dict[str, str] = {
    "engine/resources.py": "the engine resolves the key of each call it makes (in a kernel "
    "only when no server is there: the in-process transport)",
    "cli/": "a terminal process, never a kernel; moving onto commands/ with the CLI",
    "backup/": "`jupyter byok backup|restore` in a terminal and /byok/backup in the server",
}
CONSTRUCTS = re.compile(r"\bKeystore\(")


def _constructing() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if CONSTRUCTS.search(path.read_text(encoding="utf-8")):
            found.add(rel)
    return found


def _place(rel: str, places: tuple[str, ...]) -> str | None:
    return next((p for p in places if rel == p or rel.startswith(p)), None)


def test_only_the_client_commands_server_and_keys_build_a_keystore() -> None:
    found = _constructing()
    outside = {r for r in found if _place(r, ALLOWED) is None and _place(r, tuple(KNOWN)) is None}
    assert not outside, (
        f"{sorted(outside)} build a Keystore: ask Client (keys_overview, key_source, "
        "delete_key) or a commands/ function instead"
    )
    stale = {k for k in KNOWN if not any(_place(r, (k,)) for r in found)}
    assert not stale, f"{sorted(stale)} no longer build a Keystore: remove them from KNOWN"


def test_kernel_front_ends_do_not_build_a_keystore() -> None:
    found = _constructing()
    for front in ("magics.py", "models.py", "widgets/", "pipeline/"):
        assert not [r for r in found if r.startswith(front)], front


def test_label_is_provider_for_the_default_key_else_provider_at_name() -> None:
    assert label("openai") == "openai"
    assert label("openai", "default") == "openai"
    assert label("openai", "work") == "openai@work"
    info = KeyInfo("openai", "work", "provider", "", "", "", "")
    assert info.label == "openai@work"


def _info(provider: str, name: str = "default", base_url: str | None = None) -> KeyInfo:
    kind = "secret" if provider == "secret" else "provider"
    return KeyInfo(provider, name, kind, "abcd", "f" * 12, "", "", base_url=base_url)


def test_key_source_stored_wins_then_the_default_keys_variable() -> None:
    env = {"OPENAI_API_KEY": "sk-anything"}
    stored = [_info("openai", base_url="https://proxy.example/v1")]
    src = key_source("openai", stored=stored, environ=env)
    assert (src.source, src.base_url, src.label) == (
        "keystore",
        "https://proxy.example/v1",
        "openai",
    )
    assert src.info is stored[0]
    src = key_source("openai", stored=[], environ=env)
    assert (src.source, src.env_var) == ("environment", "OPENAI_API_KEY")
    # a named key never comes from the environment; a blank variable is no key
    assert not key_source("openai", "work", stored=[], environ=env).available
    assert not key_source("openai", stored=[], environ={"OPENAI_API_KEY": "  "}).available
    assert key_source("local", stored=[], environ={}).source == "not-needed"
    with pytest.raises(UnknownProviderError):
        key_source("nosuchprovider", stored=[], environ={})
    # metadata only: nothing in a KeySource holds a value
    assert "sk-anything" not in repr(key_source("openai", stored=[], environ=env).to_dict())


def test_key_sources_lists_stored_keys_then_environment_defaults() -> None:
    stored = [_info("anthropic", "work"), _info("secret", "mcp")]
    env = {"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "y"}
    got = {(s.provider, s.name, s.source) for s in key_sources(stored, env)}
    assert got == {
        ("anthropic", "work", "keystore"),
        ("secret", "mcp", "keystore"),
        ("openai", "default", "environment"),
        ("anthropic", "default", "environment"),
    }


def test_the_client_answers_the_key_rule_in_process(
    byok_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-test-" + "g" * 30)
    Keystore().set("openai", "sk-test-boundary-" + "b" * 30, "work")
    client = Client("inprocess")
    assert client.key_source("openai", "work").source == "keystore"
    assert not client.key_source("openai").available
    assert client.key_source("gemini").env_var == "GEMINI_API_KEY"
    overview = client.keys_overview()
    assert [k["label"] for k in overview["keys"]] == ["openai@work"]
    assert KeyInfo.from_dict(overview["keys"][0]).label == "openai@work"
    assert client.delete_key("openai", "work") is True
    assert client.delete_key("openai", "work") is False
