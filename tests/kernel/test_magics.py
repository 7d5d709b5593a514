"""%%byok and %byok on a real InteractiveShell, against the loopback fake providers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from jupyter_byok.keys import Keystore
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Completion

CANARY = "sk-proj-MAGICCANARY" + "x" * 40 + "T3BlbkFJ" + "y" * 20


@pytest.fixture
def shell(fake_providers: FakeProviders) -> Iterator[InteractiveShell]:
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_byok")
    from jupyter_byok import magics

    for instance in ip.magics_manager.registry.values():
        if isinstance(instance, magics.ByokMagics):
            instance.chats.clear()
    yield ip
    for name in ("answer", "topic", "payload", "data"):
        ip.user_ns.pop(name, None)


@pytest.fixture
def openai_key() -> str:
    Keystore().set("openai", CANARY)
    return CANARY


def run_cell(shell: InteractiveShell, line: str, cell: str) -> Any:
    with capture_output() as cap:
        shell.run_cell_magic("byok", line, cell)
    return cap


def texts(cap: Any) -> list[str]:
    return [o.data.get("text/markdown") or o.data.get("text/plain") or "" for o in cap.outputs]


def ledger_rows() -> Any:
    import jupyter_byok

    return jupyter_byok.usage()


def test_cell_streams_renders_and_footer(
    shell: InteractiveShell, openai_key: str, fake_providers: FakeProviders
) -> None:
    cap = run_cell(shell, "openai:gpt-4o-mini -o answer", "Say hello to the notebook")
    outputs = texts(cap)
    assert any("Echo: Say hello to the notebook" in t for t in outputs)
    # streamed: the display was updated in place before the final render
    updates = [o for o in cap.outputs if o.update]
    assert updates, "expected in-place updates while streaming"
    footer = outputs[-1]
    answer: Completion = shell.user_ns["answer"]
    assert footer.startswith("openai:gpt-4o-mini · ")
    assert f"{answer.usage.input_tokens:,} → {answer.usage.output_tokens:,} tokens" in footer
    assert answer.text == "Echo: Say hello to the notebook"
    assert answer.cost_usd is not None and answer.cost_usd > 0
    # provenance metadata, and the ledger row it points at
    meta = cap.outputs[-1].metadata["jupyter_byok"]
    assert meta["ledger_id"] == answer.ledger_id and meta["model"] == "openai:gpt-4o-mini"
    frame = ledger_rows()
    row = frame[frame["request_id"] == answer.request_id]
    assert list(row["feature"]) == ["magic"] and list(row["status"]) == ["ok"]
    assert Decimal(str(row["cost_usd"].iloc[0])).quantize(
        Decimal("1e-9")
    ) == answer.cost_usd.quantize(Decimal("1e-9"))
    # the key went to the provider and nowhere else
    sent = fake_providers.requests_for("openai")[-1]
    assert sent.auth == CANARY
    everything = json.dumps([o.data for o in cap.outputs] + [o.metadata for o in cap.outputs])
    assert CANARY not in everything and CANARY not in cap.stdout + cap.stderr


def test_parameters_reach_the_provider(
    shell: InteractiveShell, openai_key: str, fake_providers: FakeProviders
) -> None:
    run_cell(
        shell,
        "openai:gpt-4o-mini -s 'Be terse' -t 0.3 --max-tokens 7 -p top_p=0.5 -p seed=4 --no-stream"
        " --feature report",
        "one two three",
    )
    assert list(ledger_rows()["feature"]) == ["report"]
    body = fake_providers.requests_for("openai")[-1].body
    assert body["temperature"] == 0.3
    assert body["top_p"] == 0.5 and body["seed"] == 4
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 7
    assert body["messages"][0] == {"role": "system", "content": "Be terse"}
    assert body.get("stream") in (None, False)


def test_interpolation_sends_only_referenced_names(
    shell: InteractiveShell, openai_key: str, fake_providers: FakeProviders
) -> None:
    shell.user_ns["topic"] = "tides"
    shell.user_ns["unrelated_secret"] = "do-not-send-me"
    run_cell(
        shell,
        "openai:gpt-4o-mini --no-stream",
        'Explain {topic} as JSON like {"a": {"b": 1}} {nope}',
    )
    sent = fake_providers.requests_for("openai")[-1].body["messages"][-1]["content"]
    assert sent == 'Explain tides as JSON like {"a": {"b": 1}} {nope}'
    run_cell(shell, "openai:gpt-4o-mini --no-stream --no-interpolate", "Explain {topic}")
    sent = fake_providers.requests_for("openai")[-1].body["messages"][-1]["content"]
    assert sent == "Explain {topic}"
    assert all("do-not-send-me" not in json.dumps(r.body) for r in fake_providers.requests)


def test_formats(shell: InteractiveShell, openai_key: str) -> None:
    cap = run_cell(
        shell, "openai:gpt-4o-mini -f json --no-stream", '{"city": "Paris", "n": [1, 2]}'
    )
    assert cap.outputs[0].data["application/json"] == {"city": "Paris", "n": [1, 2]}

    cap = run_cell(shell, "openai:gpt-4o-mini -f json --no-stream", "{not json at all")
    assert "not valid JSON" in cap.stderr
    assert "Echo: {not json at all" in cap.outputs[0].data["text/plain"]

    shell.rl_next_input = None
    run_cell(shell, "openai:gpt-4o-mini -f code --no-stream", "print(42)")
    assert shell.rl_next_input == "Echo: print(42)"

    cap = run_cell(shell, "openai:gpt-4o-mini -f html --no-stream", "<b>bold</b>")
    assert cap.outputs[0].data["text/html"] == "Echo: <b>bold</b>"

    cap = run_cell(shell, "openai:gpt-4o-mini -f text --no-stream", "plain words")
    assert cap.outputs[0].data == {"text/plain": "Echo: plain words"}

    cap = run_cell(shell, "openai:gpt-4o-mini -f yaml", "x")
    assert "unknown format 'yaml'" in cap.stderr


def test_chat_keeps_a_conversation(
    shell: InteractiveShell, openai_key: str, fake_providers: FakeProviders
) -> None:
    run_cell(shell, "openai:gpt-4o-mini --chat c1 --no-stream", "first question")
    run_cell(shell, "openai:gpt-4o-mini --chat c1 --no-stream", "second question")
    messages = fake_providers.requests_for("openai")[-1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == "Echo: first question"
    run_cell(shell, "openai:gpt-4o-mini --chat other --no-stream", "fresh")
    assert len(fake_providers.requests_for("openai")[-1].body["messages"]) == 1


def test_cache_and_estimate(
    shell: InteractiveShell, openai_key: str, fake_providers: FakeProviders
) -> None:
    run_cell(shell, "openai:gpt-4o-mini --cache --no-stream -o answer", "cache me")
    first = shell.user_ns["answer"]
    before = len(fake_providers.requests)
    cap = run_cell(shell, "openai:gpt-4o-mini --cache -o answer", "cache me")
    second = shell.user_ns["answer"]
    assert len(fake_providers.requests) == before, "a cache hit must not call the provider"
    assert second.cached and second.text == first.text and second.cost_usd == 0
    assert "from cache" in texts(cap)[-1]

    cap = run_cell(shell, "openai:gpt-4o-mini --estimate --max-tokens 100", "how much?")
    assert len(fake_providers.requests) == before
    assert "openai:gpt-4o-mini" in cap.stdout and "not sent" in cap.stdout and "$" in cap.stdout


def test_errors_are_one_red_line(shell: InteractiveShell, fake_providers: FakeProviders) -> None:
    cap = run_cell(shell, "anthropic:claude-haiku-4-5", "no key yet")
    lines = cap.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and "no key for anthropic" in lines[0] and "ANTHROPIC_API_KEY" in lines[0]
    )
    assert "Traceback" not in cap.stderr + cap.stdout

    cap = run_cell(shell, "nosuch:model", "x")
    assert "unknown provider 'nosuch'" in cap.stderr

    cap = run_cell(shell, "openai:gpt-4o-mini --max-tokens lots", "x")
    assert "bad arguments" in cap.stderr

    Keystore().set("openai", CANARY)
    fake_providers.add_fault("openai", "auth")
    cap = run_cell(shell, "openai:gpt-4o-mini --no-stream", "x")
    assert cap.stderr.count("\n") == 1 and "401" in cap.stderr
    assert CANARY not in cap.stderr
    # the kernel is still usable
    cap = run_cell(shell, "openai:gpt-4o-mini --no-stream", "still alive")
    assert any("Echo: still alive" in t for t in texts(cap))


def test_line_magics(
    shell: InteractiveShell, openai_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with capture_output() as cap:
        shell.run_line_magic("byok", "")
    assert "default model:" in cap.stdout and "protection tier:" in cap.stdout

    with capture_output() as cap:
        shell.run_line_magic("byok", "keys")
    assert "✅ openai" in cap.stdout and "…" + CANARY[-4:] in cap.stdout
    assert "❌ anthropic" in cap.stdout and CANARY not in cap.stdout

    with capture_output() as cap:
        shell.run_line_magic("byok", "alias fast openai:gpt-4o-mini")
        shell.run_line_magic("byok", "default fast")
    assert "alias fast → openai:gpt-4o-mini" in cap.stdout
    with capture_output() as cap:
        shell.run_cell_magic("byok", "--no-stream -o answer", "via the alias")
    assert shell.user_ns["answer"].model == "openai:gpt-4o-mini"
    with capture_output() as cap:
        shell.run_line_magic("byok", "unalias fast")
        shell.run_line_magic("byok", "unalias fast")
    assert "removed alias fast" in cap.stdout and "no alias 'fast'" in cap.stderr

    with capture_output() as cap:
        shell.run_line_magic("byok", "price openai:gpt-4o-mini")
    assert "openai:gpt-4o-mini:" in cap.stdout

    with capture_output() as cap:
        shell.run_line_magic("byok", "models openai")
    assert "openai:gpt-4o-mini" in cap.stdout

    with capture_output() as cap:
        shell.run_line_magic("byok", "usage --since 1d --no-chart")
    assert cap.outputs, "usage shows a table"

    with capture_output() as cap:
        shell.run_line_magic("byok", "nonsense")
    assert "unknown subcommand 'nonsense'" in cap.stderr


def test_keys_set_shows_a_key_form_and_no_key_enters_the_kernel(
    shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``%byok keys set`` displays a form the labextension renders; the browser posts the key
    to the server. In the kernel nothing may read a key, wrap one or open the keystore."""
    import builtins
    import getpass

    from jupyter_byok.magics import KEYFORM_MIME
    from jupyter_byok.redact import Secret

    touched: list[str] = []

    def refuse(what: str) -> Any:
        def spy(*args: Any, **kwargs: Any) -> Any:
            touched.append(what)
            raise AssertionError(f"{what} was called in the kernel")

        return spy

    monkeypatch.setattr(getpass, "getpass", refuse("getpass.getpass"))
    monkeypatch.setattr(builtins, "input", refuse("input"))
    monkeypatch.setattr(Secret, "__init__", refuse("Secret()"))
    monkeypatch.setattr(Keystore, "__init__", refuse("Keystore()"))
    monkeypatch.setattr(shell, "ask_yes_no", refuse("ask_yes_no"), raising=False)

    with capture_output() as cap:
        shell.run_line_magic("byok", "keys set openai --name work")
        shell.run_line_magic("byok", "keys set gemini --tier free")
    assert touched == [], touched
    assert cap.stderr == "" and cap.stdout == ""
    assert len(cap.outputs) == 2
    work, gemini = (o.data for o in cap.outputs)
    assert set(work) == {KEYFORM_MIME, "text/plain"}
    assert work[KEYFORM_MIME] == {
        "provider": "openai",
        "name": "work",
        "tier": None,
        "label": "openai@work",
    }
    assert gemini[KEYFORM_MIME] == {
        "provider": "gemini",
        "name": "default",
        "tier": "free",
        "label": "gemini",
    }
    # where no labextension renders the form (a console, nbclient): what to do instead
    assert "use `jupyter byok keys set openai --name work` in a terminal" in work["text/plain"]
    assert "the BYOK panel in JupyterLab" in work["text/plain"]
    assert "`jupyter byok keys set gemini --tier free`" in gemini["text/plain"]
    # the bundle names the key and holds nothing else: no field could carry a value
    for bundle in (work, gemini):
        assert set(bundle[KEYFORM_MIME]) == {"provider", "name", "tier", "label"}
    assert all(not o.metadata for o in cap.outputs)

    # a typo is caught in the kernel, before any form is shown
    with capture_output() as cap:
        shell.run_line_magic("byok", "keys set opneai")
        shell.run_line_magic("byok", "keys set local")
        shell.run_line_magic("byok", "keys set openai --name 'bad name'")
    assert cap.outputs == []
    assert cap.stderr.count("unknown provider") == 2 and "invalid key name" in cap.stderr
    assert touched == []


def test_search_line_magic(shell: InteractiveShell, fake_providers: FakeProviders) -> None:
    Keystore().set("tavily", "tvly-dev-" + "T" * 32)
    with capture_output() as cap:
        shell.run_line_magic("byok", 'search "jupyter notebooks"')
    assert "credits" in cap.stdout, cap.stderr
    assert fake_providers.requests_for("tavily")[-1].body["query"] == "jupyter notebooks"


def test_budget_config_estimate_and_delete_line_magics(
    shell: InteractiveShell, openai_key: str
) -> None:
    with capture_output() as cap:
        shell.run_line_magic("byok", "budget set day 5 --provider openai")
        shell.run_line_magic("byok", "budget list")
    assert "day:provider:openai" in cap.stdout and "5" in cap.stdout
    from jupyter_byok import budgets

    assert [b.name for b in budgets.get_budgets()] == ["day:provider:openai"]
    with capture_output() as cap:
        shell.run_line_magic("byok", "budget remove day:provider:openai")
        shell.run_line_magic("byok", "budget frobnicate")
    assert budgets.get_budgets() == []
    assert "use %byok budget" in cap.stderr

    with capture_output() as cap:
        shell.run_line_magic("byok", "config require_server true")
    from jupyter_byok.config import load_settings

    assert load_settings().require_server is True
    with capture_output() as cap:
        shell.run_cell_magic("byok", "openai:gpt-4o-mini --no-stream", "refused in-process")
    assert "require_server" in cap.stderr
    with capture_output() as cap:
        shell.run_line_magic("byok", "config require_server false")
        shell.run_line_magic(
            "byok", 'estimate openai:gpt-4o-mini "a prompt to price" --max-tokens 10'
        )
    assert "not sent" in cap.stdout

    with capture_output() as cap:
        shell.run_line_magic("byok", "keys delete openai")
        shell.run_line_magic("byok", "keys delete openai")
    assert "deleted openai" in cap.stdout and "no stored key openai" in cap.stderr


def test_cell_on_the_local_model(shell: InteractiveShell) -> None:
    with capture_output() as cap:
        shell.run_cell_magic(
            "byok", "local:smollm2 --max-tokens 8 -p n_threads=1 -o answer", "Say hi."
        )
    answer: Completion = shell.user_ns["answer"]
    assert answer.provider == "local" and answer.usage.output_tokens > 0
    assert answer.cost_usd == 0
    footer = texts(cap)[-1]
    assert footer.startswith("local:smollm2 · ") and "$0" in footer


def test_keys_and_status_read_the_same_in_the_magic_and_the_terminal(
    shell: InteractiveShell, openai_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`%byok keys list` and `%byok status` are `jupyter byok keys list` and `jupyter byok
    status`: one commands layer renders both, from the same Client data."""
    from jupyter_byok.cli import main

    Keystore().set("secret", "ghp_0123456789abcdef", "github")
    for magic, argv in (("keys list", ["keys", "list"]), ("status", ["status"])):
        with capture_output() as cap:
            shell.run_line_magic("byok", magic)
        capsys.readouterr()
        assert main(argv) == 0
        terminal = capsys.readouterr().out.strip()
        assert cap.stdout.strip() == terminal, magic
    assert "openai" in terminal and "secret@github" not in terminal  # (status: providers)
    with capture_output() as cap:
        shell.run_line_magic("byok", "keys list")
    assert "secret@github" in cap.stdout and "…" + openai_key[-4:] in cap.stdout
    assert openai_key not in cap.stdout and "ghp_0123456789abcdef" not in cap.stdout
    assert main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["keys_configured"] == ["openai"] and report["transport"] == "inprocess"
