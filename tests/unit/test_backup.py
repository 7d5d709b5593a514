"""Backup and restore (issue 20): a round trip to a machine with another identity, merge
rules, every failure as one line with nothing written, and the CLI.

Machine identities go through the keystore's ``machine_id`` seam; the KDF's cost through
``create_backup(kdf=...)`` (cheap parameters, explicitly, per test).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import stat
import struct
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from jupyter_byok import budgets
from jupyter_byok.backup import (
    BackupCorruptError,
    BackupError,
    BackupPassphraseError,
    BackupSpaceError,
    BackupVersionError,
    KdfParams,
    create_backup,
    passphrase_warning,
    restore_backup,
)
from jupyter_byok.backup._format import MAGIC, TRAILER_TAG, derive, open_reader
from jupyter_byok.cli import main
from jupyter_byok.config import Endpoint, Settings, load_settings, set_home, update_settings
from jupyter_byok.engine import Engine
from jupyter_byok.errors import MachineBindingError
from jupyter_byok.keys import Keystore
from jupyter_byok.ledger import Ledger, LedgerRow, ledger_path
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Message, Request

MACHINE_A = hashlib.sha256(b"backup-machine-a").digest()
MACHINE_B = hashlib.sha256(b"backup-machine-b").digest()
CHEAP = KdfParams(t=1, m_kib=64, p=1)
PASS = "tangerine otter bicycle lantern 42"
KEYS = {
    "openai": "sk-proj-BACKUPCANARYOPENAI" + "o" * 40 + "T3BlbkFJ" + "1" * 20,
    "anthropic": "sk-ant-api03-BACKUPCANARYANTHROPIC" + "a" * 60 + "AA",
    "gemini": "AIzaSyBACKUPCANARYGEMINI" + "g" * 15,
    "xai": "xai-BACKUPCANARYXAI" + "x" * 60,
    "tavily": "tvly-BACKUPCANARYTAVILY" + "t" * 20,
}
PROXY_KEY = "sk-proj-BACKUPCANARYPROXY" + "p" * 40 + "T3BlbkFJ" + "2" * 20
CORP_KEY = "corp-BACKUPCANARYENDPOINT" + "c" * 30
SECRET = "ghp_BACKUPCANARYSECRET" + "s" * 30
ALL_VALUES = [*KEYS.values(), PROXY_KEY, CORP_KEY, SECRET]


def state(home: Path) -> dict[str, bytes]:
    """Every file under ``home`` and its bytes (lock files aside: locking may create them)."""
    return {
        str(p.relative_to(home)): p.read_bytes()
        for p in sorted(home.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def run(engine: Engine, coro: Any) -> Any:
    async def go() -> Any:
        try:
            return await coro
        finally:
            await engine.aclose()

    return asyncio.run(go())


def call_each(store: Keystore, fake: FakeProviders) -> dict[str, str]:
    """One call with every stored key; the key each provider received."""
    seen: dict[str, str] = {}
    models = {
        "openai": "openai:gpt-4o-mini",
        "anthropic": "anthropic:claude-haiku-4-5",
        "gemini": "gemini:gemini-2.5-flash",
        "xai": "xai:grok-4.3",
        "proxy": "openai:gpt-4o-mini@proxy",
        "corp": "corp:some-model",
    }
    for label, model in models.items():
        engine = Engine(keystore=store)
        req = Request(model=model, messages=[Message("user", f"hi {label}")])
        answer = run(engine, engine.acomplete(req))
        assert answer.text.startswith("Echo:"), (label, answer.text)
        provider = "openai" if label in ("proxy", "corp") else label
        seen[label] = fake.requests_for(provider)[-1].auth
    engine = Engine(keystore=store)
    run(engine, engine.asearch("backup test"))
    seen["tavily"] = fake.requests_for("tavily")[-1].auth
    return seen


def ledger_totals(home: Path) -> tuple[int, Decimal, list[str]]:
    led = Ledger(ledger_path(home))
    try:
        frame = led.frame()
        return led.count(), led.spend(), sorted(frame["id"])
    finally:
        led.close()


@pytest.fixture
def machine_a(byok_home: Path, fake_providers: FakeProviders) -> Keystore:
    """Home A on machine A: every kind of key, calls in the ledger, budgets, an endpoint."""
    store = Keystore(machine_id=MACHINE_A)
    for provider, value in KEYS.items():
        store.set(provider, value)
    store.set("openai", PROXY_KEY, "proxy", base_url=fake_providers.base_url("openai"))
    store.set("secret", SECRET, "github")

    def change(settings: Settings) -> None:
        settings.endpoints["corp"] = Endpoint(
            fake_providers.base_url("openai"), "openai", needs_key=True
        )
        settings.aliases["fast"] = "openai:gpt-4o-mini"
        settings.default_model = "anthropic:claude-haiku-4-5"

    update_settings(change)
    store.set("corp", CORP_KEY)
    budgets.set_budget("day", "5")
    budgets.set_budget("month", "50", provider="openai")
    call_each(store, fake_providers)
    led = Ledger(ledger_path(byok_home))
    led.record_many(
        LedgerRow("openai", "gpt-4o", "ok", cost_usd=Decimal("0.000123"), input_tokens=n)
        for n in range(200)
    )
    led.close()
    return store


def to_machine_b(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Keystore]:
    home_b = tmp_path / "home-b"
    monkeypatch.setenv("JUPYTER_BYOK_HOME", str(home_b))
    set_home(home_b)
    return home_b, Keystore(machine_id=MACHINE_B)


# ------------------------------------------------------------------------ round trip
def test_round_trip_to_another_machine(
    machine_a: Keystore,
    byok_home: Path,
    fake_providers: FakeProviders,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home_a = byok_home
    infos_a = {i.label: i for i in machine_a.list()}
    settings_a = load_settings(home_a, fresh=True)
    budgets_a = budgets.get_budgets()
    totals_a = ledger_totals(home_a)
    assert totals_a[0] > 200

    out = tmp_path / "move.byokbak"
    manifest = create_backup(out, PASS, keystore=machine_a, kdf=CHEAP, label="laptop-a")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert manifest["counts"]["keys"] == 8 and manifest["counts"]["ledger_rows"] == totals_a[0]
    assert manifest["machine"] == "laptop-a"

    home_b, store_b = to_machine_b(monkeypatch, tmp_path)
    # the store itself does not travel: a copy of home A does not open on machine B
    with pytest.raises(MachineBindingError):
        Keystore(home_a, machine_id=MACHINE_B).list()

    report = restore_backup(out, PASS, keystore=store_b)
    assert report["keys"]["added"] == 8 and report["keys"]["conflict"] == 0
    assert report["ledger"] == {"added": totals_a[0], "present": 0}
    assert report["budgets"]["added"] == 2
    assert report["source"]["machine"] == "laptop-a"

    # re-sealed under machine B: B opens it, machine A's identity does not
    assert store_b.status()["tier"] == "machine-file"
    with pytest.raises(MachineBindingError):
        Keystore(home_b, machine_id=MACHINE_A).list()
    infos_b = {i.label: i for i in store_b.list()}
    assert set(infos_b) == set(infos_a)
    for label, info in infos_a.items():  # the origin binding travels with each key
        assert infos_b[label].base_url == info.base_url, label
        assert infos_b[label].tier == info.tier and infos_b[label].created == info.created
    assert store_b.get("secret", "github").reveal() == SECRET

    # ledger totals, budgets, endpoints, aliases and the default model are the same
    assert ledger_totals(home_b) == totals_a
    assert budgets.get_budgets() == budgets_a
    settings_b = load_settings(home_b, fresh=True)
    assert settings_b.endpoints == settings_a.endpoints
    assert settings_b.aliases == settings_a.aliases
    assert settings_b.default_model == settings_a.default_model

    # restoring twice adds nothing
    before = state(home_b)
    again = restore_backup(out, PASS, keystore=store_b)
    assert again["keys"]["same"] == 8 and again["keys"]["added"] == 0
    assert again["ledger"] == {"added": 0, "present": totals_a[0]}
    assert again["budgets"]["same"] == 2 and again["budgets"]["added"] == 0
    assert again["settings"]["added"] == 0 and again["settings"]["same"] > 0
    assert state(home_b).keys() == before.keys()
    assert ledger_totals(home_b) == totals_a

    # every key works on machine B, and goes where it went on machine A
    seen = call_each(store_b, fake_providers)
    assert seen == {**KEYS, "proxy": PROXY_KEY, "corp": CORP_KEY}


def test_merge_keeps_conflicts_unless_replace(
    machine_a: Keystore, byok_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "b.byokbak"
    create_backup(out, PASS, keystore=machine_a, kdf=CHEAP)
    _, store_b = to_machine_b(monkeypatch, tmp_path)
    local_openai = "sk-proj-LOCALONMACHINEB" + "b" * 40 + "T3BlbkFJ" + "3" * 20
    store_b.set("openai", local_openai)
    store_b.set("gemini", KEYS["gemini"])
    budgets.set_budget("day", "9")
    update_settings(lambda s: s.aliases.__setitem__("fast", "xai:grok-4.3"))

    report = restore_backup(out, PASS, keystore=store_b)
    assert report["keys"]["conflict"] == 1 and report["keys"]["conflicts"] == ["openai"]
    assert report["keys"]["same"] == 1 and report["keys"]["added"] == 6
    assert report["budgets"]["conflicts"] == ["day:total"]
    assert "aliases.fast" in report["settings"]["conflicts"]
    assert store_b.get("openai").reveal() == local_openai
    assert {b.name: b.limit_usd for b in budgets.get_budgets()}["day:total"] == Decimal(9)
    assert load_settings(fresh=True).aliases["fast"] == "xai:grok-4.3"

    report = restore_backup(out, PASS, keystore=store_b, replace=True)
    assert report["keys"]["replaced"] == 1 and report["keys"]["conflict"] == 0
    assert store_b.get("openai").reveal() == KEYS["openai"]
    assert {b.name: b.limit_usd for b in budgets.get_budgets()}["day:total"] == Decimal(5)
    assert load_settings(fresh=True).aliases["fast"] == "openai:gpt-4o-mini"


# ------------------------------------------------------------------- failure cases
@pytest.fixture
def small_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Keystore]:
    """A small backup (2 keys, 3 ledger rows, a budget) and an empty machine B with one
    key of its own, so that 'nothing written' means something."""
    store = Keystore(machine_id=MACHINE_A)
    store.set("openai", KEYS["openai"])
    store.set("xai", KEYS["xai"])
    budgets.set_budget("day", "5")
    led = Ledger(ledger_path())
    led.record_many(LedgerRow("xai", "grok-4.3", "ok", cost_usd=Decimal(1)) for _ in range(3))
    led.close()
    out = tmp_path / "small.byokbak"
    create_backup(out, PASS, keystore=store, kdf=CHEAP)
    home_b, store_b = to_machine_b(monkeypatch, tmp_path)
    store_b.set("gemini", KEYS["gemini"])
    return out, home_b, store_b


def stats(home: Path) -> dict[str, tuple[int, ...]]:
    """What changes when a file is written or replaced (cheaper than :func:`state`)."""
    return {
        str(p.relative_to(home)): (st.st_ino, st.st_size, st.st_mtime_ns)
        for p in home.rglob("*")
        if not p.name.endswith(".lock") and (st := p.stat())
    }


def _refused(path: Path, home_b: Path, store_b: Keystore, passphrase: str = PASS) -> BackupError:
    before = stats(home_b)
    with pytest.raises(BackupError) as err:
        restore_backup(path, passphrase, keystore=store_b)
    message = str(err.value)
    assert "\n" not in message and "nothing was changed" in message, message
    assert stats(home_b) == before, "a refused restore changed files"
    return err.value


def _with_trailer(body: bytes) -> bytes:
    return body + TRAILER_TAG + hashlib.sha256(body).digest()


def test_every_single_byte_flip_is_rejected_and_nothing_written(
    small_backup: tuple[Path, Path, Keystore], tmp_path: Path
) -> None:
    path, home_b, store_b = small_backup
    good = path.read_bytes()
    assert len(good) < 6000
    bad = tmp_path / "bad.byokbak"
    bad.write_bytes(good)
    kinds: set[type] = set()
    before = state(home_b)
    # (the flips are written in place: same length, and truncating files is slow here)
    with open(bad, "r+b", buffering=0) as f:
        for i in range(len(good)):
            f.seek(i)
            f.write(bytes([good[i] ^ (0x01 if i % 2 else 0xFF)]))
            kinds.add(type(_refused(bad, home_b, store_b)))
            f.seek(i)
            f.write(good[i : i + 1])
    assert kinds == {BackupCorruptError}
    # A deliberate change that also recomputes the checksum: the AEAD tags (and the
    # passphrase check) catch every byte of the header and of every record.
    body = good[: -len(TRAILER_TAG) - 32]
    with open(bad, "r+b", buffering=0) as f:
        for i in range(len(MAGIC), len(body)):
            flipped = bytearray(body)
            flipped[i] ^= 0x01 if i % 2 else 0xFF
            f.seek(0)
            f.write(_with_trailer(bytes(flipped)))
            with pytest.raises(BackupError) as err, open_reader(bad) as reader:
                reader.unlock(PASS)
                for section in reader.manifest["sections"]:
                    for _ in reader.chunks(section):
                        pass
            kinds.add(type(err.value))
    assert kinds <= {BackupCorruptError, BackupPassphraseError, BackupVersionError}
    assert state(home_b) == before
    # and the good file still restores
    assert restore_backup(path, PASS, keystore=store_b)["keys"]["added"] == 2


def test_truncated_files_are_rejected(
    small_backup: tuple[Path, Path, Keystore], tmp_path: Path
) -> None:
    path, home_b, store_b = small_backup
    good = path.read_bytes()
    bad = tmp_path / "short.byokbak"
    for n in (0, 5, len(MAGIC), len(MAGIC) + 3, len(good) // 2, len(good) - 33, len(good) - 1):
        bad.write_bytes(good[:n])
        err = _refused(bad, home_b, store_b)
        assert isinstance(err, BackupCorruptError)
        assert "damaged or truncated" in str(err) or "not a jupyter_byok backup" in str(err)


def test_wrong_passphrase_is_rejected_within_the_kdf_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kdf = KdfParams(t=2, m_kib=96 * 1024, p=1)  # ~0.2 s: two would show, still quick
    store = Keystore(machine_id=MACHINE_A)
    store.set("openai", KEYS["openai"])
    out = tmp_path / "p.byokbak"
    create_backup(out, PASS, keystore=store, kdf=kdf)
    home_b, store_b = to_machine_b(monkeypatch, tmp_path)

    def one_kdf() -> float:
        start = time.perf_counter()
        derive("x", b"s" * 16, kdf)
        return time.perf_counter() - start

    before = one_kdf()
    start = time.perf_counter()
    err = _refused(out, home_b, store_b, passphrase=PASS + " ")
    elapsed = time.perf_counter() - start
    kdf_s = max(before, one_kdf())  # a shared machine: the slower of two, around the try
    assert isinstance(err, BackupPassphraseError) and "wrong passphrase" in str(err)
    # one derivation and a file read: not two derivations, nor any decryption
    assert elapsed < 1.5 * kdf_s + 0.2, (elapsed, kdf_s)


def test_a_newer_format_version_is_refused(
    small_backup: tuple[Path, Path, Keystore], tmp_path: Path
) -> None:
    path, home_b, store_b = small_backup
    good = path.read_bytes()
    (n,) = struct.unpack(">I", good[len(MAGIC) : len(MAGIC) + 4])
    header = json.loads(good[len(MAGIC) + 4 : len(MAGIC) + 4 + n])
    header["v"] = 2
    raw = json.dumps(header).encode()
    rest = good[len(MAGIC) + 4 + n : -len(TRAILER_TAG) - 32]
    newer = tmp_path / "newer.byokbak"
    newer.write_bytes(_with_trailer(MAGIC + struct.pack(">I", len(raw)) + raw + rest))
    err = _refused(newer, home_b, store_b)
    assert isinstance(err, BackupVersionError)
    assert "newer jupyter_byok" in str(err) and "upgrade" in str(err)


def test_not_enough_disk_space_writes_nothing(
    small_backup: tuple[Path, Path, Keystore], tmp_path: Path
) -> None:
    path, home_b, store_b = small_backup
    before = state(home_b)
    with pytest.raises(BackupSpaceError, match=r"not enough disk space .* nothing was written"):
        restore_backup(path, PASS, keystore=store_b, free=lambda p: 1 << 20)
    assert state(home_b) == before
    out = tmp_path / "none.byokbak"
    with pytest.raises(BackupSpaceError, match="not enough disk space"):
        create_backup(out, PASS, keystore=store_b, kdf=CHEAP, free=lambda p: 0)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".none")]


def test_an_unopenable_keystore_here_stops_the_restore_first(
    small_backup: tuple[Path, Path, Keystore], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, home_b, _ = small_backup
    before = state(home_b)
    with pytest.raises(MachineBindingError, match="jupyter byok restore"):
        restore_backup(path, PASS, keystore=Keystore(machine_id=MACHINE_A))
    assert state(home_b) == before


def test_passphrase_warning() -> None:
    for weak in ("short", "password123456", "aaaaaaaaaaaaaaaaaaaa", "jupyter-backup-1"):
        assert passphrase_warning(weak), weak
    for strong in (PASS, "correct horse battery staple", "Xk3#pQ9!vL2@mN7$"):
        assert passphrase_warning(strong) is None, strong


# ------------------------------------------------------------------------------ CLI
def cli(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    passphrase: str | None = PASS,
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    if passphrase is None:
        monkeypatch.delenv("JUPYTER_BYOK_BACKUP_PASSPHRASE", raising=False)
    else:
        monkeypatch.setenv("JUPYTER_BYOK_BACKUP_PASSPHRASE", passphrase)
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_backup_and_restore_and_the_canary(
    tmp_path: Path,
    byok_home: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The key values appear nowhere: not in the file, the output, the logs, nor in any
    file left in either home or in the temp folder."""
    import logging
    import tempfile

    caplog.set_level(logging.DEBUG)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)
    import base64
    import shutil

    needles = [v.encode() for v in ALL_VALUES if v != PROXY_KEY and v != CORP_KEY]
    needles += [base64.b64encode(n) for n in needles]
    # the temporary folders backup and restore work in are read just before their removal
    scanned: list[str] = []
    rmtree = shutil.rmtree

    def scanning_rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        for p in Path(path).rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                assert not [n for n in needles if n in data], f"key value in temp file {p}"
                scanned.append(p.name)
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", scanning_rmtree)
    store = Keystore()
    for provider, value in KEYS.items():
        store.set(provider, value)
    store.set("secret", SECRET, "github")
    Ledger(ledger_path()).record(LedgerRow("openai", "gpt-4o", "ok", cost_usd=Decimal(1)))
    out = tmp_path / "cli.byokbak"

    code, stdout, stderr = cli(["backup", str(out)], capsys, monkeypatch)
    assert code == 0 and stderr == "", stderr
    assert "6 keys, 1 ledger rows" in stdout and "mode 0600" in stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    code, _, stderr = cli(["backup", str(out)], capsys, monkeypatch)
    assert code == 1 and "already exists" in stderr
    code, _, stderr = cli(["backup", str(tmp_path / "no" / "x.byokbak")], capsys, monkeypatch)
    assert code == 1 and stderr.count("\n") == 1 and "does not exist" in stderr
    code, _, stderr = cli(["backup", str(tmp_path / "w.byokbak")], capsys, monkeypatch, "abc")
    assert code == 0 and stderr.startswith("warning: this passphrase is weak")
    code, _, stderr = cli(["backup", str(tmp_path / "n.byokbak")], capsys, monkeypatch, None)
    assert code == 1 and "JUPYTER_BYOK_BACKUP_PASSPHRASE" in stderr
    assert not (tmp_path / "n.byokbak").exists()
    with pytest.raises(SystemExit):  # there is no way to pass it on the command line
        main(["backup", str(tmp_path / "x.byokbak"), "--passphrase", PASS])
    capsys.readouterr()

    home_b = tmp_path / "cli-home-b"
    monkeypatch.setenv("JUPYTER_BYOK_HOME", str(home_b))
    set_home(home_b)
    code, stdout, stderr = cli(["restore", str(out)], capsys, monkeypatch, PASS + "x")
    assert code == 1 and stderr.count("\n") == 1 and "wrong passphrase" in stderr
    code, stdout, stderr = cli(["restore", str(out)], capsys, monkeypatch)
    assert code == 0 and stderr == "", stderr
    assert "keys: 6 added" in stdout and "ledger rows: 1 added, 0 already here" in stdout
    code, stdout, _ = cli(["restore", str(out)], capsys, monkeypatch)
    assert "keys: 6 same" in stdout and "ledger rows: 0 added, 1 already here" in stdout
    assert Keystore().get("xai").reveal() == KEYS["xai"]

    assert "ledger.sqlite3" in scanned  # the snapshot and the restore's work copy
    blobs = {"stdout+stderr": stdout.encode() + stderr.encode(), "logs": caplog.text.encode()}
    for folder in (byok_home, home_b, tmpdir, tmp_path):
        for p in folder.rglob("*"):
            if p.is_file():
                blobs[str(p)] = p.read_bytes()
    for where, data in blobs.items():
        for needle in needles:
            assert needle not in data, where


def test_cli_asks_twice_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([PASS, PASS + "!"])
    monkeypatch.delenv("JUPYTER_BYOK_BACKUP_PASSPHRASE", raising=False)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    tty = io.StringIO("")
    monkeypatch.setattr(tty, "isatty", lambda: True)
    monkeypatch.setattr(sys, "stdin", tty)
    code = main(["backup", str(tmp_path / "t.byokbak")])
    _, err = capsys.readouterr()
    assert code == 1 and "differ" in err and not (tmp_path / "t.byokbak").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------- recovery
def test_the_other_machine_error_and_doctor_name_restore(
    byok_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_byok.commands.doctor import doctor, render_text
    from jupyter_byok.keys import machine_app_id

    Keystore(machine_id=MACHINE_A).set("openai", KEYS["openai"])
    with pytest.raises(MachineBindingError) as err:
        Keystore(machine_id=MACHINE_B).get("openai")
    assert "another machine" in str(err.value) and "jupyter byok restore" in str(err.value)
    assert machine_app_id() not in (None, MACHINE_A)  # doctor's own store is on this machine
    report = doctor(probe=False)
    assert "another machine" in report["keystore"]["error"]
    assert "jupyter byok restore BACKUP" in report["keystore"]["recovery"]
    assert "recovery" in render_text(report) and "jupyter byok backup" in render_text(report)


def test_price_overrides_registry_and_model_files_travel(
    byok_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_byok.pricing import BUILTIN_PATH, update_prices

    update_prices(BUILTIN_PATH)
    (byok_home / "local-models.json").write_text('{"default": "tiny", "models": {}}\n')
    model = tmp_path / "weights" / "tiny.gguf"
    model.parent.mkdir()
    model.write_bytes(b"GGUF" + os.urandom(300_000))
    update_settings(lambda s: s.local_models.__setitem__("tiny", str(model)))
    store = Keystore(machine_id=MACHINE_A)
    out = tmp_path / "m.byokbak"
    with pytest.raises(BackupError, match="missing"):
        update_settings(lambda s: s.local_models.__setitem__("gone", str(tmp_path / "no.gguf")))
        create_backup(out, PASS, keystore=store, kdf=CHEAP, with_models=True)
    assert not out.exists()
    update_settings(lambda s: s.local_models.pop("gone"))
    manifest = create_backup(out, PASS, keystore=store, kdf=CHEAP, with_models=True)
    assert manifest["counts"]["model_files"] == 1 and manifest["counts"]["price_overrides"]
    original = model.read_bytes()
    model.unlink()  # the new machine does not have it

    home_b, store_b = to_machine_b(monkeypatch, tmp_path)
    report = restore_backup(out, PASS, keystore=store_b)
    assert report["prices"] == "added" and report["local_registry"] == "added"
    assert report["model_files"] == {"added": 1}
    restored = Path(load_settings(fresh=True).local_models["tiny"])
    assert restored == home_b / "models" / "tiny.gguf" and restored.read_bytes() == original
    assert json.loads((home_b / "prices.json").read_text()) == json.loads(BUILTIN_PATH.read_text())
    assert json.loads((home_b / "local-models.json").read_text())["default"] == "tiny"
    again = restore_backup(out, PASS, keystore=store_b)
    assert again["model_files"] == {"same": 1} and again["prices"] == "same"
    assert sorted(p.name for p in (home_b / "models").iterdir()) == ["tiny.gguf"]


# ---------------------------------------------------------------------- live backup
WRITER = """
import sys, time
from pathlib import Path
from decimal import Decimal
from jupyter_byok.ledger import Ledger, LedgerRow, ledger_path
led = Ledger(ledger_path())
stop = Path(sys.argv[2])
n = 0
while not stop.exists():
    row = LedgerRow("openai", "gpt-4o-mini", "ok", cost_usd=Decimal("0.000001"),
                    feature="w" + sys.argv[1], input_tokens=n)
    led.record(row)          # returns once committed: the row is acknowledged
    print(row.id, flush=True)
    n += 1
"""


def test_live_backup_while_4_processes_write(
    byok_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import threading

    Ledger(ledger_path()).count()  # create it before the writers race to
    stop = tmp_path / "stop"
    acked: list[str] = []
    lock = threading.Lock()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(n), str(stop)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        for n in range(4)
    ]

    def collect(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with lock:
                acked.append(line.strip())

    readers = [threading.Thread(target=collect, args=(p,)) for p in procs]
    for t in readers:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 400 and time.monotonic() < deadline:
            time.sleep(0.05)
        with lock:
            before_snapshot = set(acked)
        assert len(before_snapshot) >= 400
        out = tmp_path / "live.byokbak"
        manifest = create_backup(out, PASS, keystore=Keystore(machine_id=MACHINE_A), kdf=CHEAP)
        time.sleep(0.3)  # the writers go on after the snapshot
    finally:
        stop.touch()
        for p in procs:
            p.wait(timeout=60)
        for t in readers:
            t.join(timeout=10)
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    assert len(acked) > len(before_snapshot)

    home_b, store_b = to_machine_b(monkeypatch, tmp_path)
    report = restore_backup(out, PASS, keystore=store_b)
    led = Ledger(ledger_path(home_b))
    assert led.integrity_check() == "ok"
    ids = set(led.frame()["id"])
    assert before_snapshot <= ids, f"{len(before_snapshot - ids)} acknowledged rows missing"
    assert ids <= set(acked)
    assert report["ledger"]["added"] == len(ids) == manifest["counts"]["ledger_rows"]
    led.close()
