"""Keystore behaviour: round trips, metadata, nonces, rotation, machine binding, tiers,
permissions, bad input and key resolution (issue 2, "Must show")."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import stat
import string
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_byok.errors import (
    InvalidSecretError,
    KeystoreCorruptError,
    KeystoreError,
    KeystoreLockedError,
    MachineBindingError,
    MissingKeyError,
    UnknownProviderError,
)
from jupyter_byok.keys import Keystore, resolve_key
from jupyter_byok.keys import kek as kek_module
from jupyter_byok.redact import Secret

MACHINE_A = b"machine-A-" + b"a" * 22
MACHINE_B = b"machine-B-" + b"b" * 22
# Upper-case bodies: no 5-character window of a key can appear by chance in the
# lower-case hex fingerprints, ids or ISO timestamps of the metadata.
KEY_ALPHABET = string.ascii_uppercase


def make_key(prefix: str = "sk-proj-", length: int = 48) -> str:
    return prefix + "".join(secrets.choice(KEY_ALPHABET) for _ in range(length))


def snapshot(home: Path) -> dict[str, bytes]:
    """Every file under ``home`` with its exact bytes."""
    return {
        str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()
    }


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leaks(text: str, key: str) -> bool:
    """True when ``text`` shows more of ``key`` than its last 4 characters."""
    return any(key[i : i + 5] in text for i in range(len(key) - 4))


@pytest.fixture
def ks(byok_home: Path) -> Keystore:
    return Keystore(byok_home, machine_id=MACHINE_A)


# ---------------------------------------------------------------------- round trips
def test_round_trip_and_reopen(ks: Keystore, byok_home: Path) -> None:
    key = make_key()
    info = ks.set("openai", key)
    assert ks.get("openai").reveal() == key
    assert ks.has("openai")
    assert info.label == "openai" and info.last4 == key[-4:]
    reopened = Keystore(byok_home, machine_id=MACHINE_A)
    assert reopened.get("openai").reveal() == key
    assert isinstance(reopened.get("openai"), Secret)


def test_several_named_keys_per_provider_and_generic_secrets(ks: Keystore) -> None:
    keys = {
        ("openai", "default"): make_key(),
        ("openai", "work"): make_key(),
        ("anthropic", "default"): make_key("sk-ant-api03-", 60),
        ("gemini", "default"): make_key("AIza", 35),
        ("secret", "github-mcp"): make_key("ghp_", 36),
        ("secret", "postgres"): make_key("pw", 20),
    }
    for (provider, name), value in keys.items():
        ks.set(provider, value, name)
    for (provider, name), value in keys.items():
        assert ks.get(provider, name).reveal() == value
    labels = {i.label for i in ks.list()}
    assert labels == {
        "openai",
        "openai@work",
        "anthropic",
        "gemini",
        "secret@github-mcp",
        "secret@postgres",
    }
    kinds = {(i.provider, i.name): i.kind for i in ks.list()}
    assert kinds[("secret", "postgres")] == "secret"
    assert kinds[("openai", "work")] == "provider"
    # Deleting one named key leaves its sibling alone.
    assert ks.delete("openai", "work") is True
    assert ks.delete("openai", "work") is False
    assert not ks.has("openai", "work")
    assert ks.get("openai").reveal() == keys[("openai", "default")]
    with pytest.raises(KeyError):
        ks.get("openai", "work")


def test_metadata_is_readable_and_never_more_than_last4(ks: Keystore) -> None:
    openai_key = make_key()
    gemini_key = make_key("AIza", 35)
    proxy_key = make_key("sk-proj-", 40)
    before = time.time()
    ks.set("openai", openai_key, tier="paid")
    ks.set("gemini", gemini_key, tier="free")
    ks.set("openai", proxy_key, "proxy", base_url="https://proxy.example/v1")
    infos = {i.label: i for i in ks.list()}
    assert infos["openai"].last4 == openai_key[-4:]
    assert infos["openai"].tier == "paid"
    assert infos["openai"].warning is None
    assert infos["gemini"].tier == "free"
    assert infos["gemini"].warning is not None and "Google" in infos["gemini"].warning
    assert infos["openai@proxy"].base_url == "https://proxy.example/v1"
    for info in infos.values():
        assert len(info.fingerprint) == 12 and int(info.fingerprint, 16) >= 0
        created = info.created.replace("+00:00", "")
        assert abs(time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%S")) - before) < 86400
        assert info.last_verified is None
    assert len({i.fingerprint for i in infos.values()}) == 3
    ks.mark_verified("openai")
    infos = {i.label: i for i in ks.list()}
    assert infos["openai"].last_verified is not None
    assert infos["gemini"].last_verified is None
    with pytest.raises(KeyError):
        ks.mark_verified("xai")
    # Neither metadata nor its JSON form shows more than the last 4 characters.
    for info in ks.list():
        text = json.dumps(info.to_dict()) + repr(info)
        for key in (openai_key, gemini_key, proxy_key):
            assert not leaks(text, key), info.label
    # Short secrets show no last 4 at all.
    ks.set("secret", "Short-PASSWORD", "tiny")
    ks.set("secret", "Shorter1", "tinier")
    tiny = {i.name: i for i in ks.list() if i.provider == "secret"}
    assert tiny["tinier"].last4 == ""
    assert ks.get("secret", "tinier").reveal() == "Shorter1"


def test_fingerprint_identifies_the_same_key(ks: Keystore) -> None:
    key = make_key()
    ks.set("openai", key)
    ks.set("openai", key, "copy")
    ks.set("openai", make_key(), "other")
    fps = {i.name: i.fingerprint for i in ks.list()}
    assert fps["default"] == fps["copy"] != fps["other"]


def test_fresh_96_bit_nonce_per_encryption(ks: Keystore) -> None:
    seen: list[bytes] = []
    ks.set("anthropic", make_key("sk-ant-api03-", 40))
    for i in range(150):
        ks.set("openai", make_key() if i % 2 else "sk-proj-SAMEVALUEEVERYTIMEXXXXXXXXXXXX")
        doc = json.loads(ks.path.read_bytes().split(b"\n")[0])
        entry = next(e for e in doc["entries"] if e["provider"] == "openai")
        seen.append(base64.b64decode(entry["nonce"]))
    assert all(len(n) == 12 for n in seen)
    assert len(set(seen)) == len(seen)
    # Identical plaintexts never give identical ciphertexts.
    doc = json.loads(ks.path.read_bytes().split(b"\n")[0])
    nonces = [e["nonce"] for e in doc["entries"]] + [doc["header"]["wrapped_dek"]["nonce"]]
    assert len(set(nonces)) == len(nonces)


def test_replace_one_key(ks: Keystore) -> None:
    old, new, other = make_key(), make_key(), make_key()
    ks.set("openai", old)
    ks.set("openai", other, "work")
    first = next(i for i in ks.list() if i.label == "openai")
    ks.mark_verified("openai")
    ks.set("openai", new)
    second = next(i for i in ks.list() if i.label == "openai")
    assert ks.get("openai").reveal() == new
    assert ks.get("openai", "work").reveal() == other
    assert second.id == first.id and second.created == first.created
    assert second.fingerprint != first.fingerprint and second.last4 == new[-4:]
    assert second.last_verified is None  # a new key has not been verified
    assert len(ks.list()) == 2


def test_rotate_data_key_and_key_file(ks: Keystore, byok_home: Path) -> None:
    values = {("openai", "default"): make_key(), ("secret", "mcp"): make_key("tok", 30)}
    for (provider, name), value in values.items():
        ks.set(provider, value, name)
    before = json.loads(ks.path.read_bytes().split(b"\n")[0])
    old_key_file = byok_home / before["header"]["kek_file"]
    assert old_key_file.exists()
    result = ks.rotate()
    after = json.loads(ks.path.read_bytes().split(b"\n")[0])
    assert result == {"kid": after["header"]["kid"], "entries": 2}
    assert after["header"]["kid"] != before["header"]["kid"]
    assert after["header"]["kek_file"] != before["header"]["kek_file"]
    assert after["header"]["wrapped_dek"] != before["header"]["wrapped_dek"]
    assert not old_key_file.exists()
    assert (byok_home / after["header"]["kek_file"]).exists()
    assert sorted(p.name for p in (byok_home / "kek").iterdir()) == [
        Path(after["header"]["kek_file"]).name
    ]
    old_cts = {e["ct"] for e in before["entries"]}
    assert not old_cts & {e["ct"] for e in after["entries"]}
    for store in (ks, Keystore(byok_home, machine_id=MACHINE_A)):
        for (provider, name), value in values.items():
            assert store.get(provider, name).reveal() == value
    with pytest.raises(KeystoreError, match="empty"):
        Keystore(byok_home / "other", machine_id=MACHINE_A).rotate()


# ------------------------------------------------------------------ machine binding
def test_copied_store_refuses_on_another_machine(ks: Keystore, byok_home: Path) -> None:
    key = make_key()
    ks.set("openai", key)
    ks.set("secret", make_key("tok", 30), "mcp")
    before = snapshot(byok_home)
    other = Keystore(byok_home, machine_id=MACHINE_B)
    for call in (
        other.list,
        lambda: other.get("openai"),
        lambda: other.set("openai", make_key()),
        lambda: other.delete("openai"),
        other.rotate,
    ):
        with pytest.raises(MachineBindingError) as err:
            call()
        message = str(err.value)
        assert "another machine" in message
        assert "jupyter byok keys reset" in message
        assert "\n" not in message
    status = other.status()
    assert "another machine" in status["error"] and status["entries"] is None
    assert snapshot(byok_home) == before
    # The store still opens on its own machine.
    assert Keystore(byok_home, machine_id=MACHINE_A).get("openai").reveal() == key

    moved = other.reset()
    assert {p.name.split(".aside-")[0] for p in moved} == {"keystore.json", "kek"}
    assert all(p.exists() for p in moved)
    assert not ks.path.exists()
    aside_file = next(p for p in moved if p.name.startswith("keystore.json"))
    assert aside_file.read_bytes() == before["keystore.json"]
    fresh_key = make_key()
    other.set("openai", fresh_key)
    assert Keystore(byok_home, machine_id=MACHINE_B).get("openai").reveal() == fresh_key
    # A second reset within the same second does not overwrite the first one's files.
    moved_again = other.reset()
    assert aside_file.read_bytes() == before["keystore.json"]
    assert set(moved_again).isdisjoint(moved)
    assert all(p.exists() for p in [*moved, *moved_again])


def test_machine_id_missing_or_key_file_missing(ks: Keystore, byok_home: Path) -> None:
    ks.set("openai", make_key())
    with pytest.raises(MachineBindingError, match="has none"):
        Keystore(byok_home, machine_id=None).list()
    header = json.loads(ks.path.read_bytes().split(b"\n")[0])["header"]
    key_file = byok_home / header["kek_file"]
    key_file.rename(key_file.with_suffix(".moved"))
    before = snapshot(byok_home)
    with pytest.raises(MachineBindingError, match="is missing") as err:
        Keystore(byok_home, machine_id=MACHINE_A).list()
    assert "keys reset" in str(err.value)
    assert snapshot(byok_home) == before


def test_file_tier_without_machine_id(byok_home: Path) -> None:
    store = Keystore(byok_home, machine_id=None)
    key = make_key()
    store.set("openai", key)
    assert store.status()["tier"] == "file"
    assert Keystore(byok_home, machine_id=MACHINE_B).get("openai").reveal() == key


# ----------------------------------------------------------------- passphrase tier
def test_passphrase_tier(byok_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Keystore(byok_home, machine_id=MACHINE_A, passphrase="correct horse").init("passphrase")
    store = Keystore(byok_home, machine_id=MACHINE_A, passphrase="correct horse")
    key = make_key()
    store.set("openai", key)
    assert store.status()["tier"] == "passphrase"
    before = snapshot(byok_home)
    with pytest.raises(KeystoreLockedError, match="wrong passphrase"):
        Keystore(byok_home, machine_id=MACHINE_A, passphrase="battery staple").list()
    with pytest.raises(KeystoreLockedError, match="JUPYTER_BYOK_PASSPHRASE") as err:
        Keystore(byok_home, machine_id=MACHINE_A).get("openai")
    assert "protected by a passphrase" in str(err.value)
    with pytest.raises(KeystoreLockedError):
        Keystore(byok_home, machine_id=MACHINE_A).set("openai", make_key())
    assert snapshot(byok_home) == before
    # Portable: the right passphrase opens it on another machine, also from the env.
    assert (
        Keystore(byok_home, machine_id=MACHINE_B, passphrase="correct horse").get("openai").reveal()
        == key
    )
    monkeypatch.setenv("JUPYTER_BYOK_PASSPHRASE", "correct horse")
    assert Keystore(byok_home, machine_id=MACHINE_A).get("openai").reveal() == key
    with pytest.raises(KeystoreError, match="already exists"):
        Keystore(byok_home, machine_id=MACHINE_A).init("passphrase")


def test_passphrase_tier_needs_a_passphrase(byok_home: Path) -> None:
    with pytest.raises(KeystoreLockedError, match="needs a passphrase"):
        Keystore(byok_home, machine_id=MACHINE_A).init("passphrase")
    assert not (byok_home / "keystore.json").exists()
    with pytest.raises(KeystoreError, match="unknown tier"):
        Keystore(byok_home, machine_id=MACHINE_A).init("rot13")


# -------------------------------------------------------------------- keyring tier
class FakeKeyring:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, user: str) -> str | None:
        return self.data.get((service, user))

    def set_password(self, service: str, user: str, value: str) -> None:
        self.data[(service, user)] = value


class HangingKeyring:
    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def get_password(self, service: str, user: str) -> str | None:
        self.release.wait(30)
        return None

    def set_password(self, service: str, user: str, value: str) -> None:
        self.release.wait(30)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # let the stuck worker threads finish


def test_keyring_tier(byok_home: Path) -> None:
    ring = FakeKeyring()
    Keystore(byok_home, machine_id=MACHINE_A, keyring_backend=ring).init("keyring")
    assert len(ring.data) == 1
    assert not (byok_home / "kek").exists() or not any((byok_home / "kek").iterdir())
    key = make_key()
    store = Keystore(byok_home, machine_id=MACHINE_A, keyring_backend=ring)
    store.set("openai", key)
    assert store.status()["tier"] == "keyring"
    assert (
        Keystore(byok_home, machine_id=MACHINE_A, keyring_backend=ring).get("openai").reveal()
        == key
    )
    with pytest.raises(KeystoreLockedError, match="OS keyring"):
        Keystore(byok_home, machine_id=MACHINE_A).list()
    with pytest.raises(MachineBindingError, match="keyring has no key"):
        Keystore(byok_home, machine_id=MACHINE_A, keyring_backend=FakeKeyring()).list()
    with pytest.raises(MachineBindingError, match="another machine"):
        Keystore(byok_home, machine_id=MACHINE_B, keyring_backend=ring).list()


def test_hanging_keyring_is_cut_off(
    byok_home: Path, monkeypatch: pytest.MonkeyPatch, release: threading.Event
) -> None:
    monkeypatch.setattr(kek_module, "KEYRING_TIMEOUT_S", 0.2)
    hanging = HangingKeyring(release)
    started = time.monotonic()
    with pytest.raises(KeystoreLockedError, match=r"did not answer within 0\.2 s"):
        Keystore(byok_home, machine_id=MACHINE_A, keyring_backend=hanging).init("keyring")
    assert time.monotonic() - started < 2.0
    assert not (byok_home / "keystore.json").exists()
    # An existing keyring store whose keyring hangs: reads are cut off too.
    Keystore(byok_home, machine_id=MACHINE_A, keyring_backend=FakeKeyring()).init("keyring")
    started = time.monotonic()
    with pytest.raises(KeystoreLockedError, match="did not answer"):
        Keystore(byok_home, machine_id=MACHINE_A, keyring_backend=hanging).list()
    assert time.monotonic() - started < 2.0


def test_failing_keyring_error_is_clean(byok_home: Path) -> None:
    class Broken(FakeKeyring):
        def set_password(self, service: str, user: str, value: str) -> None:
            raise RuntimeError(f"dbus said no to {value}")

    with pytest.raises(KeystoreLockedError, match="keyring failed") as err:
        Keystore(byok_home, machine_id=MACHINE_A, keyring_backend=Broken()).init("keyring")
    assert "dbus said no" not in str(err.value)
    with pytest.raises(KeystoreError, match="no OS keyring"):
        Keystore(byok_home, machine_id=MACHINE_A).init("keyring")


# --------------------------------------------------------------------- permissions
def assert_private(home: Path) -> None:
    assert mode(home) == 0o700
    for path in home.rglob("*"):
        if path.is_dir():
            assert mode(path) == 0o700, path
        else:
            assert mode(path) == 0o600, path


def test_permissions_after_every_write(byok_home: Path) -> None:
    os.umask(0o022)
    store = Keystore(byok_home, machine_id=MACHINE_A)
    for step in (
        lambda: store.set("openai", make_key()),
        lambda: store.set("openai", make_key(), "work"),
        lambda: store.mark_verified("openai"),
        lambda: store.delete("openai", "work"),
        store.rotate,
        lambda: store.set("secret", make_key("tok", 20), "mcp"),
    ):
        step()
        assert_private(byok_home)
        assert {p.name for p in byok_home.iterdir()} >= {"keystore.json", "keystore.lock", "kek"}


def test_loose_permissions_are_repaired_with_a_warning(
    byok_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Keystore(byok_home, machine_id=MACHINE_A)
    key = make_key()
    store.set("openai", key)
    key_file = next((byok_home / "kek").iterdir())
    os.chmod(store.path, 0o644)
    os.chmod(key_file, 0o644)
    os.chmod(byok_home / "kek", 0o755)
    os.chmod(byok_home, 0o755)
    caplog.set_level(logging.WARNING)
    # The same object (already open) repairs on its next load, too.
    assert store.get("openai").reveal() == key
    assert_private(byok_home)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("keystore.json" in w and "0600" in w for w in warnings)
    assert any(key_file.name in w for w in warnings)
    assert any(w.startswith(str(byok_home / "kek")) and "0700" in w for w in warnings)
    assert any(w.startswith(f"{byok_home} ") and "0700" in w for w in warnings)
    # A fresh object repairs a loosened home directory when it opens it.
    caplog.clear()
    os.chmod(byok_home, 0o755)
    Keystore(byok_home, machine_id=MACHINE_A)
    assert mode(byok_home) == 0o700
    assert any("0700" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("sk-proj-abc def-ghijklmnopqrstuvwxyz", "whitespace inside"),
        ("sk-proj-abc\tdefghijklmnopqrstuvwxyz", "whitespace inside"),
        ("sk-proj-abc\x00defghijklmnopqrstuvwxyz", "non-printable"),
        ("sk-proj-abc\x07defghijklmnopqrstuvwxyz", "non-printable"),
        ("sk-proj-abc\u200bdefghijklmnopqrstuvwxyz", "non-printable"),
        ("sk-proj-abcdéfghijklmnopqrstuvwxyz", "non-ASCII"),
        ("x" * 10_000_000, "10,000,000 characters"),
        ("sk-" + "y" * 4094, "at most 4096"),
    ],
)
def test_bad_secret_is_refused_and_store_unchanged(
    ks: Keystore, byok_home: Path, value: str, message: str
) -> None:
    ks.set("openai", make_key())
    before = snapshot(byok_home)
    with pytest.raises(InvalidSecretError, match=message) as err:
        ks.set("openai", value)
    text = str(err.value)
    assert "\n" not in text and len(text) < 300
    assert "abc" not in text and "xxxxxxxx" not in text and "yyyyyyyy" not in text
    assert snapshot(byok_home) == before


def test_surrounding_whitespace_is_trimmed(ks: Keystore) -> None:
    key = make_key()
    ks.set("openai", f"  {key}\n")
    assert ks.get("openai").reveal() == key


@pytest.mark.parametrize(
    ("provider", "name", "error", "message"),
    [
        ("nosuch", "default", UnknownProviderError, "unknown provider 'nosuch'"),
        ("local", "default", UnknownProviderError, "unknown provider 'local'"),
        ("", "default", UnknownProviderError, "unknown provider"),
        ("openai", "bad name", KeystoreError, "invalid key name"),
        ("openai", "../escape", KeystoreError, "invalid key name"),
        ("openai", "", KeystoreError, "invalid key name"),
        ("openai", "x" * 65, KeystoreError, "invalid key name"),
        ("openai", "we@ird", KeystoreError, "invalid key name"),
    ],
)
def test_bad_provider_or_name(
    ks: Keystore,
    byok_home: Path,
    provider: str,
    name: str,
    error: type[Exception],
    message: str,
) -> None:
    ks.set("openai", make_key())
    before = snapshot(byok_home)
    with pytest.raises(error, match=message):
        ks.set(provider, make_key(), name)
    assert snapshot(byok_home) == before


def test_bad_tier_is_refused(ks: Keystore, byok_home: Path) -> None:
    with pytest.raises(KeystoreError, match="invalid tier"):
        ks.set("gemini", make_key("AIza", 35), tier="gratis")
    assert not ks.path.exists()


def test_missing_store(ks: Keystore, byok_home: Path) -> None:
    assert ks.list() == []
    assert not ks.has("openai")
    assert ks.delete("openai") is False
    with pytest.raises(KeyError):
        ks.get("openai")
    status = ks.status()
    assert status["exists"] is False and status["entries"] == 0
    assert status["tier"] == "machine-file"
    assert not ks.path.exists()


GARBAGE: list[bytes] = [
    b"",
    b"\n",
    b"garbage\n",
    b"\x00\xff" * 100,
    b'{"format": "jupyter_byok.keystore", "v": 1}\n',
    b'{"format":"jupyter_byok.keystore","v":1,"header":{},"entries":[]}\nhmac-sha256:00\n',
    b'{"format":"something-else"}\nsha256:00\nhmac-sha256:00\n',
    b"[1, 2, 3]\nhmac-sha256:abc\n",
]


@pytest.mark.parametrize("raw", GARBAGE)
def test_garbage_store_is_reported_and_kept(ks: Keystore, byok_home: Path, raw: bytes) -> None:
    ks.path.write_bytes(raw)
    os.chmod(ks.path, 0o600)
    before = snapshot(byok_home)
    for call in (
        ks.list,
        lambda: ks.get("openai"),
        lambda: ks.has("openai"),
        lambda: ks.set("openai", make_key()),
        lambda: ks.delete("openai"),
        lambda: ks.mark_verified("openai"),
        ks.rotate,
        lambda: ks.init("file"),
    ):
        with pytest.raises(KeystoreError) as err:
            call()
        message = str(err.value)
        assert "\n" not in message
        if not isinstance(err.value, KeystoreCorruptError):
            assert "already exists" in message  # init() refuses to replace any file
        else:
            assert "damaged or was tampered with" in message
            assert "left untouched" in message and "jupyter byok keys reset" in message
    status = ks.status()
    assert status["tier"] == "unknown (damaged file)" and "damaged" in status["error"]
    assert snapshot(byok_home) == before


def test_tampered_key_file_path_cannot_escape(ks: Keystore, byok_home: Path) -> None:
    """A header naming a key file outside ``kek/`` is corrupt: never read, never chmod-ed."""
    ks.set("openai", make_key())
    outside = byok_home.parent / "victim.txt"
    outside.write_text(base64.b64encode(b"k" * 32).decode())
    os.chmod(outside, 0o644)
    raw = ks.path.read_bytes()
    body = raw.split(b"\n")[0]
    doc = json.loads(body)
    doc["header"]["kek_file"] = "../victim.txt"
    new_body = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    import hashlib

    digest = hashlib.sha256(new_body).hexdigest().encode()
    ks.path.write_bytes(new_body + b"\nsha256:" + digest + b"\n" + raw.split(b"\n")[2] + b"\n")
    with pytest.raises(KeystoreCorruptError, match="kek_file"):
        Keystore(byok_home, machine_id=MACHINE_A).list()
    assert mode(outside) == 0o644


# ------------------------------------------------------------------ key resolution
def test_resolution_order(ks: Keystore, byok_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, stored, env = make_key(), make_key(), make_key()
    monkeypatch.setenv("OPENAI_API_KEY", env)
    assert resolve_key("openai", store=ks).reveal() == env
    ks.set("openai", stored)
    assert resolve_key("openai", store=ks).reveal() == stored
    assert resolve_key("openai", explicit=explicit, store=ks).reveal() == explicit
    assert resolve_key("openai", explicit=Secret(explicit), store=ks).reveal() == explicit
    with pytest.raises(InvalidSecretError):
        resolve_key("openai", explicit="has space", store=ks)


def test_resolution_uses_the_default_store(byok_home: Path) -> None:
    stored = make_key("xai-", 80)
    Keystore().set("xai", stored)  # JUPYTER_BYOK_HOME and this machine's id
    assert (byok_home / "keystore.json").exists()
    assert resolve_key("xai").reveal() == stored


def test_gemini_environment_variables(ks: Keystore, monkeypatch: pytest.MonkeyPatch) -> None:
    google, gemini = make_key("AIza", 35), make_key("AIza", 35)
    monkeypatch.setenv("GOOGLE_API_KEY", google)
    assert resolve_key("gemini", store=ks).reveal() == google
    monkeypatch.setenv("GEMINI_API_KEY", gemini)
    assert resolve_key("gemini", store=ks).reveal() == gemini
    stored = make_key("AQ.", 50)
    ks.set("gemini", stored)
    assert resolve_key("gemini", store=ks).reveal() == stored


def test_missing_key_message_says_how_to_add_one(
    ks: Keystore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(MissingKeyError) as err:
        resolve_key("openai", store=ks)
    message = str(err.value)
    assert "jupyter byok keys set openai" in message and "OPENAI_API_KEY" in message
    assert "\n" not in message
    with pytest.raises(MissingKeyError) as err:
        resolve_key("gemini", store=ks)
    assert "GEMINI_API_KEY or GOOGLE_API_KEY" in str(err.value)
    # A named key never falls back to the environment.
    monkeypatch.setenv("OPENAI_API_KEY", make_key())
    with pytest.raises(MissingKeyError) as err:
        resolve_key("openai", "work", store=ks)
    assert "jupyter byok keys set openai --name work" in str(err.value)
    with pytest.raises(UnknownProviderError):
        resolve_key("nosuch", store=ks)
