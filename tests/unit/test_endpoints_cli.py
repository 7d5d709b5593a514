"""``jupyter byok endpoints add|list|remove``, ``keys set --base-url`` and ``keys rebind``
from a terminal (issue 14's missing command; issue 15 items 1-2), in process through
``main(argv)``, against loopback catch servers with canary keys."""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Iterator

import pytest
from catch_server import Catch, serve

from jupyter_byok.cli import main
from jupyter_byok.config import load_settings
from jupyter_byok.errors import UnknownProviderError
from jupyter_byok.keys import Keystore
from jupyter_byok.providers import get_spec
from jupyter_byok.testing import FakeProviders

CORP = "corp-CLI-ORIGIN-CANARY-" + "k" * 30
AZURE = "sk-proj-CLIORIGINAZURE" + "m" * 38 + "T3BlbkFJ" + "n" * 20


@pytest.fixture
def catch() -> Iterator[Catch]:
    yield from serve()


@pytest.fixture
def other_catch() -> Iterator[Catch]:
    yield from serve()


class Terminal(io.StringIO):
    """Standard input that is a terminal (the confirmation of ``keys rebind``)."""

    def isatty(self) -> bool:
        return True


def run(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stdin: io.StringIO | str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr(
        sys, "stdin", stdin if isinstance(stdin, io.StringIO) else io.StringIO(stdin)
    )
    code = main(argv)
    out, err = capsys.readouterr()
    for canary in (CORP, AZURE):
        assert canary not in out and canary not in err
    return code, out, err


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


# ---------------------------------------------------------------- endpoints add|list|remove
def test_add_list_remove(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(
        ["endpoints", "add", "ollama", "http://127.0.0.1:11434/v1/"], capsys, monkeypatch
    )
    assert code == 0 and "added endpoint ollama -> http://127.0.0.1:11434/v1" in out
    code, out, _ = run(
        [
            "endpoints",
            "add",
            "corp",
            "https://llm.example.com/v1",
            "--wire",
            "anthropic",
            "--key-name",
            "prod",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0 and "jupyter byok keys set corp --name prod" in out
    corp = load_settings(fresh=True).endpoints["corp"]
    assert (corp.wire, corp.needs_key, corp.key_name) == ("anthropic", True, "prod")

    code, out, _ = run(["endpoints", "list"], capsys, monkeypatch)
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "BASE", "URL", "WIRE", "KEY"]
    assert lines[1].split() == ["corp", "https://llm.example.com/v1", "anthropic", "prod"]
    assert lines[2].split() == ["ollama", "http://127.0.0.1:11434/v1", "openai", "none"]
    code, out, _ = run(["endpoints", "list", "--json"], capsys, monkeypatch)
    assert json.loads(out)["ollama"]["base_url"] == "http://127.0.0.1:11434/v1"

    code, out, _ = run(["endpoints", "remove", "ollama"], capsys, monkeypatch)
    assert code == 0 and "removed endpoint ollama" in out
    assert set(load_settings(fresh=True).endpoints) == {"corp"}
    code, _, err = run(["endpoints", "remove", "ollama"], capsys, monkeypatch)
    one_line_error(code, err, "no endpoint 'ollama'")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["corp", "gopher://127.0.0.1:70/"], "https://"),
        (["corp", "ftp://example.com/"], "https://"),
        (["corp", "http://10.0.0.5/v1"], "--allow-http"),
        (["corp", "https://u:p@example.com/v1"], "credentials"),
        (["corp", "https://example.com/v1", "--wire", "local"], "unknown wire"),
        (["corp", "https://example.com/v1", "--wire", "evil"], "unknown wire"),
        (["corp", "https://example.com/v1", "--key-name", "a b"], "key_name"),
        (["secret", "https://example.com/v1"], "reserved"),
        (["Secret", "https://example.com/v1"], "reserved"),
        (["OpenAI", "https://example.com/v1"], "reserved"),
        (["google", "https://example.com/v1"], "reserved"),
        (["XAI", "https://example.com/v1"], "reserved"),
        (["a:b", "https://example.com/v1"], "invalid endpoint name"),
        (["a@b", "https://example.com/v1"], "invalid endpoint name"),
    ],
)
def test_add_refuses(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    needle: str,
) -> None:
    code, out, err = run(["endpoints", "add", *argv], capsys, monkeypatch)
    one_line_error(code, err, needle)
    assert out == "" and load_settings(fresh=True).endpoints == {}


def test_http_to_another_machine_when_explicitly_allowed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["endpoints", "add", "lan", "http://10.0.0.5/v1", "--allow-http"]
    code, _, _ = run(argv, capsys, monkeypatch)
    assert code == 0 and load_settings(fresh=True).endpoints["lan"].allow_http is True


def test_names_differing_only_by_case_are_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(["endpoints", "add", "corp", "https://a.example/v1"], capsys, monkeypatch)[0] == 0
    code, _, err = run(["endpoints", "add", "Corp", "https://b.example/v1"], capsys, monkeypatch)
    one_line_error(code, err, "only by case")


def test_the_fix_it_message_names_a_command_that_works(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UnknownProviderError) as err:
        get_spec("ollama")
    command = re.search(r"`jupyter byok (endpoints add [^`]+)`", str(err.value))
    assert command is not None, str(err.value)
    argv = command.group(1).replace("BASE_URL", "http://127.0.0.1:11434/v1").split()
    code, _, _ = run(argv, capsys, monkeypatch)
    assert code == 0 and get_spec("ollama").base_url == "http://127.0.0.1:11434/v1"


# ------------------------------------------------------- keys set --base-url (item 2)
def test_keys_set_base_url_routes_the_key_and_verify_follows(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_providers: FakeProviders,
    catch: Catch,
) -> None:
    argv = ["keys", "set", "openai", "--name", "azure", "--base-url", catch.url + "/openai/v1"]
    code, out, _ = run(argv, capsys, monkeypatch, AZURE)
    assert code == 0 and "stored openai@azure" in out
    code, out, _ = run(["keys", "verify", "openai", "--name", "azure"], capsys, monkeypatch)
    assert code == 0 and "works" in out
    assert catch.received(AZURE) and catch.paths == ["/openai/v1/models"]
    assert not fake_providers.requests_for("openai")


@pytest.mark.parametrize(
    ("url", "needle"),
    [("gopher://127.0.0.1/", "https://"), ("http://203.0.113.7/v1", "--allow-http")],
)
def test_keys_set_refuses_a_bad_base_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str, needle: str
) -> None:
    argv = ["keys", "set", "openai", "--name", "azure", "--base-url", url]
    code, _, err = run(argv, capsys, monkeypatch, AZURE)
    one_line_error(code, err, needle)
    assert Keystore().list() == []


# ------------------------------------------------------------ moved endpoints and rebind
def test_a_moved_endpoint_keeps_its_key_home_until_rebound(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    catch: Catch,
    other_catch: Catch,
) -> None:
    add = ["endpoints", "add", "corp", other_catch.url + "/v1", "--needs-key"]
    assert run(add, capsys, monkeypatch)[0] == 0
    assert run(["keys", "set", "corp"], capsys, monkeypatch, CORP)[0] == 0
    assert run(["keys", "verify", "corp"], capsys, monkeypatch)[0] == 0
    assert other_catch.received(CORP)

    code, out, _ = run(
        ["endpoints", "add", "corp", catch.url + "/v1", "--needs-key"], capsys, monkeypatch
    )
    assert code == 0 and "keys rebind corp" in out and "stay bound to" in out
    code, _, err = run(["keys", "verify", "corp"], capsys, monkeypatch)
    one_line_error(code, err, "keys rebind corp", "keys set corp")
    assert catch.raw == []

    # not at a terminal: refused, nothing changes
    code, _, err = run(["keys", "rebind", "corp"], capsys, monkeypatch, "yes\n")
    one_line_error(code, err, "terminal")
    # at a terminal, not confirmed: nothing changes
    code, out, err = run(["keys", "rebind", "corp"], capsys, monkeypatch, Terminal("no\n"))
    one_line_error(code, err, "not confirmed")
    assert str(catch.port) in out  # the question names the new origin
    assert run(["keys", "verify", "corp"], capsys, monkeypatch)[0] == 1
    assert catch.raw == []
    # confirmed: the key goes to the endpoint's new origin, and only there
    code, out, _ = run(["keys", "rebind", "corp"], capsys, monkeypatch, Terminal("yes\n"))
    assert code == 0 and f"rebound corp to http://127.0.0.1:{catch.port}" in out
    assert run(["keys", "verify", "corp"], capsys, monkeypatch)[0] == 0
    assert catch.received(CORP) and catch.paths == ["/v1/models"]
    assert len(other_catch.paths) == 1


def test_rebind_a_provider_key_to_a_new_base_url(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_providers: FakeProviders,
    catch: Catch,
    other_catch: Catch,
) -> None:
    argv = ["keys", "set", "openai@azure", "--base-url", other_catch.url + "/v1"]
    assert run(argv, capsys, monkeypatch, AZURE)[0] == 0
    argv = ["keys", "rebind", "openai@azure", "--base-url", catch.url + "/v1"]
    code, out, _ = run(argv, capsys, monkeypatch, Terminal("yes\n"))
    assert code == 0, out
    [info] = Keystore().list()
    assert info.base_url == catch.url + "/v1" and info.last_verified is None
    assert run(["keys", "verify", "openai@azure"], capsys, monkeypatch)[0] == 0
    assert catch.received(AZURE) and not other_catch.received(AZURE)
    # back to the provider's own URL (the fake, here)
    code, _, _ = run(["keys", "rebind", "openai@azure"], capsys, monkeypatch, Terminal("yes\n"))
    assert code == 0 and Keystore().list()[0].base_url is None
    assert run(["keys", "verify", "openai@azure"], capsys, monkeypatch)[0] == 0
    assert fake_providers.requests_for("openai")[-1].auth == AZURE


def test_rebind_refuses_secrets_and_missing_keys(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(["keys", "set", "secret", "--name", "mcp"], capsys, monkeypatch, CORP)[0] == 0
    code, _, err = run(["keys", "rebind", "secret@mcp"], capsys, monkeypatch, Terminal("yes\n"))
    one_line_error(code, err, "named secrets")
    code, _, err = run(["keys", "rebind", "openai"], capsys, monkeypatch, Terminal("yes\n"))
    one_line_error(code, err, "no stored key openai")
    code, _, err = run(["keys", "verify", "secret", "--name", "mcp"], capsys, monkeypatch)
    one_line_error(code, err, "named secrets")
