"""The key-encryption key (KEK) tiers: where the key that wraps the data key comes from.

* ``machine-file``: a per-install random key file (0600 in a 0700 folder) fed through HKDF
  together with this machine's id, so a copied store does not open elsewhere;
* ``file``: the key file only (no machine id on this system);
* ``passphrase``: scrypt over ``JUPYTER_BYOK_PASSPHRASE``; portable between machines;
* ``keyring``: the OS keyring (with a deadline) plus the machine id, when asked for.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .._files import check_private_file
from ..errors import KeystoreCorruptError, KeystoreError, KeystoreLockedError, MachineBindingError
from .fileformat import Corrupt, hkdf, unb64

__all__ = ["RECOVERY", "TIERS", "derive_kek", "machine_app_id", "machine_hint"]

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
KEYRING_TIMEOUT_S = 3.0

TIERS = {
    "machine-file": "key file + machine id (a copied store does not open on another machine)",
    "file": "key file only (no machine id found on this system)",
    "passphrase": "passphrase (scrypt); portable between machines",
    "keyring": "OS keyring + machine id",
}
RECOVERY = (
    "run `jupyter byok keys reset` to set the old files aside and start a fresh store, "
    "then `jupyter byok restore BACKUP` if you have a backup (or add your keys again)"
)


def machine_app_id() -> bytes | None:
    """An app-specific id derived from the machine id (never the raw id), or None."""
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            raw = Path(candidate).read_text().strip()
        except OSError:
            continue
        if raw:
            return hmac.new(raw.encode(), b"jupyter_byok/machine", hashlib.sha256).digest()
    return None


def machine_hint(machine_id: bytes) -> str:
    """A short public hint of the machine id, stored in the header to tell a store from
    another machine apart from a damaged one."""
    return hashlib.sha256(b"jupyter_byok/hint" + machine_id).hexdigest()[:16]


def keyring_get(keyring: Any, user: str) -> str | None:
    return with_timeout(lambda: keyring.get_password("jupyter_byok", user))


def keyring_set(keyring: Any, user: str, value: str) -> None:
    if keyring is None:
        raise KeystoreError("no OS keyring is available here: use the 'machine-file' tier")
    with_timeout(lambda: keyring.set_password("jupyter_byok", user, value))


def derive_kek(
    header: dict[str, Any],
    *,
    home: Path,
    store_path: Path,
    machine_id: bytes | None,
    passphrase: str | None,
    keyring: Any,
) -> bytes:
    """The key-encryption key for a store ``header`` (its tier says how), or the error
    that says why it cannot be had here."""
    tier = header.get("tier")
    salt = unb64(header["salt"])
    machine = b""
    if tier in ("machine-file", "keyring"):
        if machine_id is None:
            raise MachineBindingError(
                f"keystore {store_path} is bound to a machine id, and this system has none; "
                + RECOVERY
            )
        machine = machine_id
    if tier in ("machine-file", "file"):
        key_path = home / str(header.get("kek_file"))
        check_private_file(key_path)
        try:
            ikm = unb64(key_path.read_text().strip())
        except FileNotFoundError:
            raise MachineBindingError(
                f"the key file {key_path} is missing, so keystore {store_path} cannot be "
                "decrypted; restore the file from a backup, or " + RECOVERY
            ) from None
        except ValueError:
            raise KeystoreCorruptError(
                f"the key file {key_path} is damaged; restore it from a backup, or " + RECOVERY
            ) from None
    elif tier == "keyring":
        if keyring is None:
            raise KeystoreLockedError(
                "this keystore keeps its key in the OS keyring, which is not available here; "
                + RECOVERY
            )
        stored = keyring_get(keyring, str(header.get("keyring_user")))
        if not stored:
            raise MachineBindingError("the OS keyring has no key for this keystore; " + RECOVERY)
        ikm = unb64(stored)
    elif tier == "passphrase":
        if not passphrase:
            raise KeystoreLockedError(
                "the keystore is protected by a passphrase: set JUPYTER_BYOK_PASSPHRASE "
                "(or pass passphrase=...) to unlock it"
            )
        ikm = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(
            passphrase.encode("utf-8")
        )
    else:
        raise Corrupt(f"unknown protection tier {tier!r}")
    return hkdf(ikm, b"jupyter_byok/kek/v1\x00" + machine, salt)


def with_timeout(fn: Callable[[], Any], timeout: float | None = None) -> Any:
    """Run a keyring call with a deadline: a hung D-Bus must never block the server.

    The default deadline is read at call time (``KEYRING_TIMEOUT_S``), so that it can be
    configured after import.
    """
    if timeout is None:
        timeout = KEYRING_TIMEOUT_S
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    worker = threading.Thread(target=run, daemon=True, name="byok-keyring")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise KeystoreLockedError(
            f"the OS keyring did not answer within {timeout:g} s; use the 'machine-file' tier"
        )
    if error:
        raise KeystoreLockedError(f"the OS keyring failed ({type(error[0]).__name__})")
    return result[0] if result else None
