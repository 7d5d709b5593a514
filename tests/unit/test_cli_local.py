"""``jupyter byok local add|list|remove`` through a real argparse parser and settings file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_byok.cli import build_parser
from jupyter_byok.config import load_settings
from jupyter_byok.errors import ByokError, ConfigError, LocalModelError
from jupyter_byok.providers import local


def run(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    result: int = args.func(args)
    return result


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    """A small file with a valid GGUF header (add only checks the header)."""
    path = tmp_path / "models" / "tiny.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\0" * 64)
    return path


def test_add_list_remove_round_trip(
    gguf: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(gguf.parent)
    assert run("local", "add", "tiny", "tiny.gguf") == 0  # relative path, stored absolute
    assert load_settings().local_models == {"tiny": str(gguf)}
    assert local.resolve_local_model("tiny") == gguf

    capsys.readouterr()
    assert run("local", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("NAME ")
    assert lines[1].startswith("local:smollm2 *") and "Q4_1" in lines[1]  # * the default
    assert lines[2].startswith("local:tiny") and str(gguf) in lines[2] and "72 B" in lines[2]
    assert "MISSING" not in lines[2] and "smollm2 embedded, tiny registered" in lines[-1]

    gguf.unlink()
    assert run("local", "list", "--json") == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["smollm2"]["exists"] and rows["smollm2"]["size_bytes"] > 50_000_000
    assert {k: rows["tiny"][k] for k in ("name", "path", "source", "exists", "size_bytes")} == {
        "name": "tiny",
        "path": str(gguf),
        "source": "registered",
        "exists": False,
        "size_bytes": None,
    }
    assert rows["tiny"]["downloaded"] is False and rows["tiny"]["default"] is False
    with pytest.raises(LocalModelError, match="not found"):
        local.resolve_local_model("tiny")

    assert run("local", "remove", "tiny") == 0
    assert load_settings().local_models == {}
    with pytest.raises(ConfigError, match="no local model named"):
        run("local", "remove", "tiny")


def test_add_refuses_bad_files_and_names(gguf: Path, tmp_path: Path) -> None:
    text = tmp_path / "readme.gguf"
    text.write_text("hello")
    with pytest.raises(LocalModelError, match="not a GGUF"):
        run("local", "add", "readme", str(text))
    with pytest.raises(LocalModelError, match="not found"):
        run("local", "add", "ghost", str(tmp_path / "ghost.gguf"))
    for bad in ("smollm2", "a/b", "x.gguf", "-dash", "has space"):
        with pytest.raises(ConfigError):
            run("local", "add", "--", bad, str(gguf))
    with pytest.raises(ConfigError, match="embedded"):
        run("local", "remove", "smollm2")
    assert load_settings().local_models == {}


def test_add_keeps_an_existing_name_unless_forced(gguf: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.gguf"
    other.write_bytes(gguf.read_bytes())
    run("local", "add", "tiny", str(gguf))
    run("local", "add", "tiny", str(gguf))  # same path again: fine
    with pytest.raises(ConfigError, match="--force"):
        run("local", "add", "tiny", str(other))
    assert load_settings().local_models["tiny"] == str(gguf)
    run("local", "add", "--force", "tiny", str(other))
    assert load_settings().local_models["tiny"] == str(other)


def test_errors_are_one_line_byok_errors(tmp_path: Path) -> None:
    with pytest.raises(ByokError) as info:
        run("local", "add", "ghost", str(tmp_path / "ghost.gguf"))
    assert "\n" not in str(info.value)
