"""A planted canary key never shows up anywhere but as ciphertext (security.md §7 T11,
§8 G5): not in logs at DEBUG, exception messages, reprs, CLI output, or any file under
``JUPYTER_BYOK_HOME``."""

from __future__ import annotations

import base64
import logging
import os
import pickle
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_byok.errors import ByokError, KeystoreCorruptError
from jupyter_byok.keys import Keystore, resolve_key
from jupyter_byok.redact import install_log_filter

ENTRY_POINT = Path(sys.executable).with_name("jupyter-byok")
MACHINE = b"canary-machine-" + b"k" * 17


def make_canary() -> tuple[str, str]:
    token = "CANARY" + secrets.token_hex(8).upper()
    body = token + secrets.token_urlsafe(30).replace("-", "x").replace("_", "y")
    key = f"sk-proj-{body}T3BlbkFJ{secrets.token_urlsafe(24).replace('-', 'x')}Qz9w"
    return key, token


def forms(key: str, token: str) -> list[bytes]:
    """Byte strings that would reveal the canary: plain, base64, hex, UTF-16, the token."""
    raw = key.encode()
    return [
        raw,
        token.encode(),
        key[:-4].encode(),
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw),
        raw.hex().encode(),
        key.encode("utf-16-le"),
    ]


def assert_absent(blob: bytes | str, key: str, token: str, where: str) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for form in forms(key, token):
        assert form not in data, f"canary form found in {where}"


def assert_home_clean(home: Path, key: str, token: str) -> int:
    files = [p for p in home.rglob("*") if p.is_file()]
    for path in files:
        assert_absent(path.read_bytes(), key, token, str(path))
        assert_absent(path.name, key, token, str(path))
    return len(files)


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


def test_canary_through_the_api(
    byok_home: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, token = make_canary()
    install_log_filter()
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []

    store = Keystore(byok_home, machine_id=MACHINE)
    info = store.set("openai", key, tier="paid")
    store.set("openai", key, "work", base_url="https://proxy.example/v1")
    store.set("secret", key, "mcp")
    outputs += [repr(info), str(info.to_dict())]
    outputs += [repr(i) for i in store.list()]
    outputs.append(str(store.status()))
    secret = store.get("openai")
    assert secret.reveal() == key
    outputs += [repr(secret), str(secret), f"{secret}", f"{secret!r:>80}", "%s" % secret]  # noqa: UP031
    with pytest.raises(TypeError) as err:
        pickle.dumps(secret)
    outputs.append(str(err.value))
    outputs.append(repr(resolve_key("openai", store=store)))
    store.mark_verified("openai")
    store.rotate()
    outputs.append(str(store.status()))
    assert store.delete("openai", "work")

    # Logging at DEBUG on several loggers, with arguments, exceptions and stack info.
    log = logging.getLogger("jupyter_byok.canary")
    log.debug("the key is %s", key)
    logging.getLogger("httpx").info("HTTP Request: POST https://x/v1?key=%s", key)
    logging.getLogger("httpcore.http11").debug("send_request_headers.started %s", [key])
    logging.getLogger().warning("root sees %(k)s", {"k": secret.reveal()})
    try:
        raise ValueError(f"boom {key}")
    except ValueError:
        log.exception("while using %s", key)
    log.error("stack", stack_info=True)

    # Exception messages from every error path that sees the value.
    for bad in (key + " x", key + "\x00", key * 200):
        with pytest.raises(ByokError) as err:
            store.set("openai", bad)
        outputs.append(str(err.value))
    with pytest.raises(ByokError) as err:
        store.set("nosuch", key)
    outputs.append(str(err.value))
    outputs.append(str(ByokError(f"upstream echoed {key}")))
    monkeypatch.setenv("OPENAI_API_KEY", key)
    outputs.append(repr(resolve_key("openai", "default", store=Keystore(byok_home / "empty"))))

    # A tampered store: the corrupt-store error does not carry entry contents.
    raw = store.path.read_bytes()
    store.path.write_bytes(raw.replace(b'"tier":"paid"', b'"tier":"free"'))
    with pytest.raises(KeystoreCorruptError) as corrupt:
        store.get("openai")
    outputs.append(str(corrupt.value))
    store.path.write_bytes(raw)
    moved = store.reset()
    assert moved

    captured = capfd.readouterr()
    outputs += [captured.out, captured.err, caplog.text]
    outputs += [r.getMessage() for r in caplog.records]
    outputs += [r.exc_text or "" for r in caplog.records]
    for n, text in enumerate(outputs):
        assert_absent(text, key, token, f"output #{n}")
    assert any("[redacted]" in r.getMessage() for r in caplog.records)
    # Files: the keystore, the set-aside copies, key files, the lock: ciphertext only.
    assert assert_home_clean(byok_home, key, token) >= 4


def test_canary_through_the_cli(byok_home: Path) -> None:
    key, token = make_canary()
    results = [
        cli(byok_home, "keys", "set", "openai", stdin=key + "\n"),
        cli(byok_home, "keys", "set", "secret", "--name", "mcp", stdin=key),
        cli(byok_home, "keys", "list"),
        cli(byok_home, "keys", "list", "--json"),
        cli(byok_home, "keys", "status", "--json"),
        cli(byok_home, "keys", "set", "openai", stdin=key + " " + key),  # error path
        cli(byok_home, "keys", "set", "nosuch", stdin=key),  # error path
        cli(byok_home, "keys", "rotate-master"),
        cli(byok_home, "keys", "delete", "secret@mcp"),
        cli(byok_home, "keys", "status"),
    ]
    assert [r.returncode for r in results] == [0, 0, 0, 0, 0, 1, 1, 0, 0, 0]
    assert "…Qz9w" in results[2].stdout  # the last 4, and nothing more
    for n, done in enumerate(results):
        assert_absent(done.stdout, key, token, f"stdout of call {n}")
        assert_absent(done.stderr, key, token, f"stderr of call {n}")
        assert "Traceback" not in done.stderr
    assert Keystore(byok_home).get("openai").reveal() == key
    assert assert_home_clean(byok_home, key, token) >= 3
