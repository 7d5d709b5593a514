"""Issue 15 §7: a read-only ``JUPYTER_BYOK_HOME`` and a ``keystore.json`` that is a symbolic
link each give one clear line, never an OSError traceback, and change nothing.

The folder is made read-only for real: as root, a read-only bind mount of it onto itself
(``mount --bind -o ro``), undone afterwards; where mounting is not allowed, the folder and
its files carry the immutable attribute (``chattr +i``, binding root too), undone after;
when the suite itself is not root, the folder is made 0500 for this user.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_byok.errors import KeystoreError
from jupyter_byok.keys import Keystore
from jupyter_byok.testing import FakeProviders

KEY = "sk-proj-READONLYHOME" + "r" * 40 + "T3BlbkFJ" + "h" * 20


class ReadOnly:
    """How the folder was made read-only, and how to run a command against it."""

    def __init__(self, home: Path, how: str) -> None:
        self.home, self.how = home, how

    def run(self, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> Any:
        return subprocess.run(
            [sys.executable, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "JUPYTER_BYOK_HOME": str(self.home), **(env or {})},
            cwd="/",
            check=False,
        )

    def cli(self, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> Any:
        return self.run("-m", "jupyter_byok.cli", *args, stdin=stdin, env=env)


def _set_modes(root: Path, dirs: int, files: int) -> None:
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(dirs)
        elif path.is_file():
            path.chmod(files)


@pytest.fixture
def readonly_home(byok_home: Path) -> Iterator[ReadOnly]:
    Keystore(byok_home).set("openai", KEY)  # this machine's binding: the CLI reads it
    if os.geteuid() == 0:
        mounted = subprocess.run(
            ["mount", "--bind", "-o", "ro", str(byok_home), str(byok_home)],
            capture_output=True,
            check=False,
        )
        if mounted.returncode == 0:
            try:
                probe = byok_home / "probe"
                with pytest.raises(OSError):
                    probe.write_text("x")  # it is read-only, even for root
                yield ReadOnly(byok_home, "mount")
            finally:
                subprocess.run(["umount", str(byok_home)], check=True)
            return
        # no mount rights: the immutable attribute, which binds root too (ext4, xfs, ...)
        frozen = subprocess.run(
            ["chattr", "-R", "+i", str(byok_home)], capture_output=True, check=False
        )
        if frozen.returncode == 0:
            try:
                yield ReadOnly(byok_home, "immutable")
            finally:
                subprocess.run(["chattr", "-R", "-i", str(byok_home)], check=True)
            return
        pytest.fail(
            "cannot make a folder read-only for root here: neither `mount --bind -o ro` "
            f"({mounted.stderr.decode().strip()}) nor `chattr +i` "
            f"({frozen.stderr.decode().strip()}) is allowed; run the suite as a non-root user"
        )
    _set_modes(byok_home, 0o500, 0o400)
    try:
        yield ReadOnly(byok_home, "chmod")
    finally:
        _set_modes(byok_home, 0o700, 0o600)


def one_line_error(result: Any) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert KEY not in result.stderr + result.stdout
    return lines[0]


def says_unwritable(line: str, ro: ReadOnly) -> None:
    reason = "read-only file system" if ro.how == "mount" else "not writable"
    assert reason in line, line


def test_keys_list_still_works(readonly_home: ReadOnly) -> None:
    result = readonly_home.cli("keys", "list")
    assert result.returncode == 0, result.stderr
    assert "openai" in result.stdout and KEY[-4:] in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (("keys", "set", "anthropic"), "sk-ant-api03-" + "a" * 40),
        (("keys", "set", "openai", "--name", "work"), KEY),
        (("keys", "delete", "openai"), ""),
    ],
)
def test_key_changes_are_one_line(
    readonly_home: ReadOnly, args: tuple[str, ...], stdin: str
) -> None:
    before = sorted(p.name for p in readonly_home.home.iterdir())
    line = one_line_error(readonly_home.cli(*args, stdin=stdin))
    assert "cannot change the keystore" in line and str(readonly_home.home) in line
    says_unwritable(line, readonly_home)
    assert sorted(p.name for p in readonly_home.home.iterdir()) == before
    listed = readonly_home.cli("keys", "list")
    assert listed.returncode == 0 and "openai" in listed.stdout and "work" not in listed.stdout


def test_complete_is_one_line_and_sends_nothing(
    readonly_home: ReadOnly, fake_providers: FakeProviders
) -> None:
    script = (
        "import jupyter_byok as b\n"
        "try:\n"
        "    b.complete('openai:gpt-4o-mini', 'hello')\n"
        "except b.ByokError as exc:\n"
        "    print(type(exc).__name__, '|', exc)\n"
        "else:\n"
        "    print('sent')\n"
    )
    result = readonly_home.run("-c", script, env={"JUPYTER_BYOK_REQUIRE_SERVER": "0"})
    assert "Traceback" not in result.stderr, result.stderr
    name, _, message = result.stdout.strip().partition(" | ")
    assert name.endswith("Error") and "\n" not in message, result.stdout
    assert str(readonly_home.home) in message, message
    assert fake_providers.requests == []


def test_a_home_that_cannot_be_created_is_one_line(readonly_home: ReadOnly) -> None:
    sub = readonly_home.home / "sub"
    for args in (("keys", "list"), ("keys", "status"), ("usage",)):
        line = one_line_error(readonly_home.cli(*args, env={"JUPYTER_BYOK_HOME": str(sub)}))
        assert f"cannot create the folder {sub}" in line, line
    assert not sub.exists()


# ----------------------------------------------------------------- symbolic links
MACHINE = b"symlink-machine-" + b"s" * 16


@pytest.fixture
def linked(tmp_path: Path, byok_home: Path) -> tuple[Path, Path]:
    """A real store elsewhere, and ``keystore.json`` in the home as a link to it."""
    elsewhere = tmp_path / "elsewhere"
    Keystore(elsewhere, machine_id=MACHINE).set("openai", KEY)
    Keystore(byok_home, machine_id=MACHINE)  # creates the home
    shutil.copytree(elsewhere / "kek", byok_home / "kek", dirs_exist_ok=True)
    (byok_home / "keystore.json").symlink_to(elsewhere / "keystore.json")
    return byok_home / "keystore.json", elsewhere / "keystore.json"


def test_a_linked_keystore_is_refused_not_replaced(linked: tuple[Path, Path]) -> None:
    link, target = linked
    before = target.read_bytes()
    store = Keystore(link.parent, machine_id=MACHINE)
    for action in (
        store.list,
        lambda: store.get("openai"),
        lambda: store.set("anthropic", "sk-ant-api03-" + "b" * 40),
        lambda: store.delete("openai"),
    ):
        with pytest.raises(KeystoreError) as err:
            action()
        assert "symbolic link" in str(err.value) and str(target) in str(err.value)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == before


def test_a_dangling_link_is_refused(byok_home: Path, tmp_path: Path) -> None:
    Keystore(byok_home, machine_id=MACHINE)
    nowhere = tmp_path / "nowhere" / "keystore.json"
    (byok_home / "keystore.json").symlink_to(nowhere)
    with pytest.raises(KeystoreError, match="symbolic link"):
        Keystore(byok_home, machine_id=MACHINE).set("openai", KEY)
    assert not nowhere.exists() and (byok_home / "keystore.json").is_symlink()


def test_cli_on_a_linked_keystore_is_one_line(linked: tuple[Path, Path]) -> None:
    link, target = linked
    before = target.read_bytes()
    for args, stdin in ((("keys", "list"), ""), (("keys", "set", "xai"), "xai-" + "x" * 50)):
        result = subprocess.run(
            [sys.executable, "-m", "jupyter_byok.cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        line = one_line_error(result)
        assert "symbolic link" in line, line
    assert link.is_symlink() and stat.S_ISREG(os.lstat(target).st_mode)
    assert target.read_bytes() == before
