"""``jupyter byok keys ...``: in process through ``main(argv)`` and, for the paths that
matter most, as a real subprocess of the installed ``jupyter-byok`` entry point."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_byok.cli import main
from jupyter_byok.keys import Keystore

ENTRY_POINT = Path(sys.executable).with_name("jupyter-byok")
OPENAI = "sk-proj-CLITESTKEYAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAT3BlbkFJCLITESTKEYAAAAAAAAAAAAAA9f3Q"
GEMINI = "AIzaSyCLITESTKEYBBBBBBBBBBBBBBBBBBBB1234"


def run(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in home.rglob("*") if p.is_file()}


def assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


# ---------------------------------------------------------------------- happy paths
def test_set_list_status_delete(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, byok_home: Path
) -> None:
    code, out, err = run(["keys", "set", "openai"], capsys, monkeypatch, OPENAI + "\n")
    assert code == 0 and err == ""
    assert out.startswith("stored openai (…9f3Q, fingerprint ")
    assert "does not look like" not in out
    code, out, _ = run(["keys", "set", "openai@work"], capsys, monkeypatch, OPENAI[:-1] + "Z")
    assert code == 0 and "stored openai@work (…9f3Z" in out
    code, out, _ = run(["keys", "set", "gemini", "--tier", "free"], capsys, monkeypatch, GEMINI)
    assert code == 0 and "warning: Gemini free tier" in out
    code, out, _ = run(
        ["keys", "set", "secret", "--name", "mcp-github"], capsys, monkeypatch, "ghp_0123456789"
    )
    assert code == 0 and "stored secret@mcp-github" in out
    code, out, _ = run(["keys", "set", "anthropic"], capsys, monkeypatch, "not-an-anthropic-key")
    assert code == 0 and "does not look like a usual anthropic key; stored anyway" in out

    code, out, _ = run(["keys", "list"], capsys, monkeypatch)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "KEY",
        "LAST",
        "4",
        "FINGERPRINT",
        "TIER",
        "CREATED",
        "LAST",
        "VERIFIED",
    ]
    rows = {line.split()[0]: line for line in lines[1:] if not line.startswith("warning")}
    assert set(rows) == {"openai", "openai@work", "gemini", "secret@mcp-github", "anthropic"}
    assert "…9f3Q" in rows["openai"] and "never" in rows["openai"]
    assert " free " in rows["gemini"]
    assert any(line.startswith("warning (gemini): Gemini free tier") for line in lines)

    code, out, _ = run(["keys", "list", "--json"], capsys, monkeypatch)
    infos = {i["label"]: i for i in json.loads(out)}
    assert infos["openai@work"]["last4"] == "9f3Z"
    assert infos["gemini"]["warning"] and infos["gemini"]["tier"] == "free"

    code, out, _ = run(["keys", "status"], capsys, monkeypatch)
    assert code == 0
    assert out.splitlines()[0].startswith("protection tier: machine-file")
    assert f"keystore:        {byok_home / 'keystore.json'}" in out
    assert "key file:        " + str(byok_home / "kek") in out
    assert "entries:         5 (providers: anthropic, gemini, openai, secret)" in out
    code, out, _ = run(["keys", "status", "--json"], capsys, monkeypatch)
    status = json.loads(out)
    assert status["entries"] == 5 and status["tier"] == "machine-file"

    code, out, _ = run(["keys", "delete", "openai", "--name", "work"], capsys, monkeypatch)
    assert code == 0 and out == "deleted openai@work\n"
    code, out, err = run(["keys", "delete", "openai@work"], capsys, monkeypatch)
    assert_one_line_error(code, out, err, "no stored key openai@work", "keys list")
    assert not Keystore(byok_home).has("openai", "work")
    assert Keystore(byok_home).get("openai").reveal() == OPENAI
    for text in (out, err):
        assert OPENAI not in text and GEMINI not in text


def test_rotate_reset_init(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, byok_home: Path
) -> None:
    code, out, err = run(["keys", "rotate-master"], capsys, monkeypatch)
    assert_one_line_error(code, out, err, "nothing to rotate")
    run(["keys", "set", "openai"], capsys, monkeypatch, OPENAI)
    code, out, _ = run(["keys", "rotate-master"], capsys, monkeypatch)
    assert code == 0 and "1 entries re-encrypted" in out
    assert Keystore(byok_home).get("openai").reveal() == OPENAI

    code, out, _ = run(["keys", "reset"], capsys, monkeypatch)
    assert code == 0
    moved = [Path(line.removeprefix("set aside: ")) for line in out.splitlines()]
    assert len(moved) == 2 and all(p.exists() for p in moved)
    code, out, _ = run(["keys", "reset"], capsys, monkeypatch)
    assert out == "nothing to reset: no keystore here\n"
    code, out, _ = run(["keys", "list"], capsys, monkeypatch)
    assert "no keys stored; add one with `jupyter byok keys set PROVIDER`" in out

    code, out, _ = run(
        ["keys", "init", "--tier", "passphrase"], capsys, monkeypatch, "open sesame\n"
    )
    assert code == 0 and "passphrase tier" in out
    code, out, _ = run(["keys", "status"], capsys, monkeypatch)
    assert "protection tier: passphrase" in out
    assert "problem:" in out and "JUPYTER_BYOK_PASSPHRASE" in out
    code, out, err = run(["keys", "list"], capsys, monkeypatch)
    assert_one_line_error(code, out, err, "protected by a passphrase")
    monkeypatch.setenv("JUPYTER_BYOK_PASSPHRASE", "open sesame")
    code, out, _ = run(["keys", "set", "openai"], capsys, monkeypatch, OPENAI)
    assert code == 0
    code, out, err = run(["keys", "init"], capsys, monkeypatch)
    assert_one_line_error(code, out, err, "already exists", "keys reset")


# ------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("argv", "stdin", "needles"),
    [
        (["keys", "set", "openai"], "", ["the key is empty"]),
        (["keys", "set", "openai"], "\n\n", ["the key is empty"]),
        (["keys", "set", "openai"], "sk-proj-abc defghijklmnopqrstuv", ["whitespace inside"]),
        (["keys", "set", "openai"], "sk-proj-abc\x00defghijklmnopqrst", ["non-printable"]),
        (["keys", "set", "openai"], "sk-proj-abc\x1bdefghijklmnopqrst", ["non-printable"]),
        (["keys", "set", "openai"], "x" * 10_000_000, ["characters long", "at most 4096"]),
        (["keys", "set", "nosuch"], OPENAI, ["unknown provider 'nosuch'"]),
        (["keys", "set", "openai", "--name", "bad name"], OPENAI, ["invalid key name"]),
        (["keys", "set", "openai@bad/name"], OPENAI, ["invalid key name"]),
        (["keys", "delete", "nosuch"], "", ["no stored key nosuch"]),
    ],
    ids=[
        "empty",
        "newlines",
        "space",
        "nul",
        "escape",
        "10MB",
        "unknown-provider",
        "bad-name",
        "bad-label",
        "delete-missing",
    ],
)
def test_bad_input_one_line_error_store_unchanged(
    argv: list[str],
    stdin: str,
    needles: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    byok_home: Path,
) -> None:
    Keystore(byok_home).set("openai", OPENAI)
    before = snapshot(byok_home)
    code, out, err = run(argv, capsys, monkeypatch, stdin)
    assert_one_line_error(code, out, err, *needles)
    assert "abc" not in err and "xxxxxxxx" not in err
    assert snapshot(byok_home) == before


def test_secret_on_the_command_line_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, byok_home: Path
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(SystemExit) as exit_info:
        main(["keys", "set", "openai", OPENAI])
    assert exit_info.value.code == 2
    assert not (byok_home / "keystore.json").exists()
    capsys.readouterr()


@pytest.mark.parametrize("garbage", [b"", b"garbage\n", b"\x00" * 64, b'{"format": 1}\n'])
def test_garbage_store(
    garbage: bytes,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    byok_home: Path,
) -> None:
    byok_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = byok_home / "keystore.json"
    path.write_bytes(garbage)
    os.chmod(path, 0o600)
    Keystore(byok_home)  # creates the (empty) lock file, which is not store content
    before = snapshot(byok_home)
    for argv, stdin in (
        (["keys", "list"], ""),
        (["keys", "set", "openai"], OPENAI),
        (["keys", "delete", "openai"], ""),
        (["keys", "rotate-master"], ""),
    ):
        code, out, err = run(argv, capsys, monkeypatch, stdin)
        assert_one_line_error(code, out, err, "damaged or was tampered with", "keys reset")
    code, out, _ = run(["keys", "status"], capsys, monkeypatch)
    assert code == 0 and "unknown (damaged file)" in out and "problem:" in out
    assert snapshot(byok_home) == before


# ---------------------------------------------------------------------- subprocess
def cli(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["JUPYTER_BYOK_HOME"] = str(home)
    return subprocess.run(
        [str(ENTRY_POINT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_entry_point_round_trip(byok_home: Path) -> None:
    assert ENTRY_POINT.exists()
    done = cli(byok_home, "keys", "set", "openai", stdin=OPENAI + "\n")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "stored openai (…9f3Q" in done.stdout
    assert Keystore(byok_home).get("openai").reveal() == OPENAI
    done = cli(byok_home, "keys", "list")
    assert done.returncode == 0 and "…9f3Q" in done.stdout and OPENAI not in done.stdout


def test_entry_point_errors_have_no_traceback(byok_home: Path) -> None:
    Keystore(byok_home).set("openai", OPENAI)
    before = snapshot(byok_home)
    done = cli(byok_home, "keys", "set", "openai", stdin="y" * 10_000_000)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "characters long" in done.stderr
    done = cli(byok_home, "keys", "set", "nosuch", stdin=OPENAI)
    assert done.returncode == 1 and done.stderr.startswith("error: unknown provider")
    assert done.stderr.count("\n") == 1
    assert snapshot(byok_home) == before
    (byok_home / "keystore.json").write_bytes(b"garbage\n")
    before = snapshot(byok_home)
    done = cli(byok_home, "keys", "list")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "damaged or was tampered with" in done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(byok_home) == before
