"""The encrypted keystore: provider keys and named secrets, encrypted at rest.

Invariants:

* Plaintext keys never leave this module except as :class:`~jupyter_byok.redact.Secret`
  objects handed to the code that sends them to their provider.
* Every entry is sealed with AES-256-GCM under a random data key (DEK), with a fresh
  96-bit nonce and associated data binding it to (format version, data key id, provider,
  entry name, kind, base URL). The DEK is wrapped by a key-encryption key (KEK).
* The KEK comes from a per-install random key file (0600 in a 0700 folder) fed through
  HKDF together with this machine's id (so a copied store does not open elsewhere), or
  from a passphrase (scrypt), or from the OS keyring when the user asks for it and one
  answers within 3 seconds (the tiers: :mod:`.kek`).
* The whole file is authenticated (HMAC over its exact bytes under a DEK subkey): any
  change to any byte is reported as :class:`KeystoreCorruptError`, and the file is left
  where it is. Nothing here ever overwrites a store it could not read.
* File layout: ``<compact JSON body>\nsha256:<hex>\nhmac-sha256:<hex>\n``. The unkeyed
  SHA-256 of the body is checked first, before any key is derived, so that accidental
  damage anywhere (including the salt or key-file fields that feed the KEK) is reported
  as corruption and never misread as "created on another machine". It adds no
  authenticity: the HMAC and the AES-GCM tags do that. Only a file whose checksum is
  intact but whose KEK does not match raises :class:`MachineBindingError` (or
  :class:`KeystoreLockedError` for a wrong passphrase). The layout, checksums and
  associated data are in :mod:`.fileformat`.
* Writes are atomic (temp file, fsync, ``os.replace``, fsync dir) and read-modify-write
  cycles hold an exclusive ``flock`` on ``keystore.lock``, so several servers and kernels
  can share one store.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets as _random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._files import (
    PRIVATE_FILE,
    atomic_write,
    check_private_dir,
    check_private_file,
    ensure_private_dir,
    file_lock,
    os_error_line,
    read_no_symlink,
    remove_stale_temps,
)
from ..errors import (
    InvalidSecretError,
    KeystoreCorruptError,
    KeystoreError,
    KeystoreLockedError,
    KeystorePermissionError,
    MachineBindingError,
    UnknownProviderError,
)
from ..redact import Secret
from . import fileformat as ff
from . import kek as tiers
from .binding import binding_for
from .fileformat import KEK_FILE_RE, VERSION, Corrupt, Store, b64, hkdf, unb64
from .kek import RECOVERY, TIERS, machine_app_id
from .naming import NAME_RE, label, validate_name

__all__ = ["KeyInfo", "Keystore", "validate_name", "validate_secret"]

log = logging.getLogger("jupyter_byok.keystore")

MAX_SECRET_LENGTH = 4096
#: Random 96-bit nonces stay safe far below 2**32 encryptions per key (NIST SP 800-38D).
ROTATE_AFTER = 2**30

#: the end of the one line a keystore change in a folder that cannot be written gets
UNWRITABLE_HINT = (
    "stored keys can still be listed and used, but none can be added, changed or removed: "
    "make the folder writable, or set JUPYTER_BYOK_HOME to a writable folder"
)


def _link_target(path: Path) -> str:
    try:
        return f" (to {os.readlink(path)})"
    except OSError:
        return ""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def validate_secret(value: str) -> str:
    """Return the cleaned secret or raise :class:`InvalidSecretError` (never echoing it)."""
    if not isinstance(value, str):
        raise InvalidSecretError("a key must be text")
    if len(value) > MAX_SECRET_LENGTH:
        raise InvalidSecretError(
            f"the key is {len(value):,} characters long; keys are at most {MAX_SECRET_LENGTH}: "
            "check that you pasted the key and not a file"
        )
    value = value.strip()
    if not value:
        raise InvalidSecretError(
            "the key is empty: paste the whole key from your provider's console"
        )
    if any(ch.isspace() for ch in value):
        raise InvalidSecretError(
            "the key has whitespace inside it: paste it again as one unbroken piece"
        )
    if not value.isascii() or not value.isprintable():
        raise InvalidSecretError(
            "the key has non-printable or non-ASCII characters: copy it again from the provider"
        )
    return value


@dataclass
class KeyInfo:
    """What may be shown about a stored key: never more than its last 4 characters."""

    provider: str
    name: str
    kind: str
    last4: str
    fingerprint: str
    created: str
    updated: str
    last_verified: str | None = None
    tier: str | None = None
    base_url: str | None = None
    id: str = ""

    @property
    def label(self) -> str:
        return label(self.provider, self.name)

    @property
    def warning(self) -> str | None:
        if self.provider == "gemini" and self.tier == "free":
            return (
                "Gemini free tier: Google may use prompts and answers to improve its products; "
                "use a paid key for private data"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["label"] = self.label
        data["warning"] = self.warning
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyInfo:
        """The inverse of :meth:`to_dict` (``label`` and ``warning`` are derived)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


#: seconds between checks of the keystore folders' permissions on the fast read path
DIR_CHECK_INTERVAL = 1.0


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes whenever a file's bytes do (see Keystore._load_readonly)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _unchanged(st: os.stat_result, parsed: tuple[int, ...]) -> bool:
    """The file is the one parsed when its identity was ``parsed``, and still private."""
    return _identity(st) == parsed and not st.st_mode & 0o077


class Keystore:
    """The keystore under ``home`` (``JUPYTER_BYOK_HOME`` by default).

    ``machine_id`` and ``keyring_backend`` are injection seams: by default the machine id
    is read from the system and no keyring is used unless the store was created with one.
    """

    def __init__(
        self,
        home: Path | None = None,
        *,
        machine_id: bytes | Callable[[], bytes | None] | None = machine_app_id,
        passphrase: str | None = None,
        keyring_backend: Any = None,
    ) -> None:
        from ..config import byok_home

        folder = Path(home) if home else byok_home()
        try:
            self.home = ensure_private_dir(folder)
        except OSError as exc:
            raise KeystorePermissionError(
                f"cannot use the keystore folder: {os_error_line(exc, folder)}; {UNWRITABLE_HINT}"
            ) from None
        self.path = self.home / "keystore.json"
        self.lock_path = self.home / "keystore.lock"
        self.kek_dir = self.home / "kek"
        self._machine_id = machine_id() if callable(machine_id) else machine_id
        self._passphrase = (
            passphrase if passphrase is not None else os.environ.get("JUPYTER_BYOK_PASSPHRASE")
        )
        self._keyring = keyring_backend
        self._kek_cache: dict[tuple[str, ...], bytes] = {}
        self._parsed: tuple[bytes, Store] | None = None
        self._seen: tuple[tuple[int, ...], Store] | None = None
        self._dirs_checked = float("-inf")
        self._mutex = threading.Lock()
        self._cleanup()

    # ----------------------------------------------------------------- public API
    def exists(self) -> bool:
        return self.path.exists()

    def status(self) -> dict[str, Any]:
        """Protection tier, file locations and counts (never a secret)."""
        info: dict[str, Any] = {
            "path": str(self.path),
            "home": str(self.home),
            "exists": self.exists(),
            "machine_id_available": self._machine_id is not None,
        }
        if not self.exists():
            tier = "machine-file" if self._machine_id is not None else "file"
            info.update(tier=tier, tier_description=TIERS[tier], entries=0, providers=[])
            return info
        header = self._read_header()
        tier = str(header.get("tier"))
        info.update(tier=tier, tier_description=TIERS.get(tier, tier))
        kek_file = header.get("kek_file")
        if isinstance(kek_file, str) and KEK_FILE_RE.match(kek_file):
            info["key_file"] = str(self.home / kek_file)
        try:
            entries = self.list()
        except KeystoreError as exc:
            info.update(error=str(exc), entries=None, providers=[])
        else:
            info.update(entries=len(entries), providers=sorted({e.provider for e in entries}))
        return info

    def list(self) -> list[KeyInfo]:
        store = self._load_readonly()
        if store is None:
            return []
        return [self._info(e) for e in store.entries]

    def get(self, provider: str, name: str = "default") -> Secret:
        store = self._load_readonly()
        entry = self._find(store, provider, name) if store else None
        if store is None or entry is None:
            raise KeyError(f"{provider}@{name}")
        return Secret(self._open_entry(store, entry))

    def get_with_info(self, provider: str, name: str = "default") -> tuple[Secret, KeyInfo]:
        """The key and what may be shown about it (its kind and bound base URL)."""
        store = self._load_readonly()
        entry = self._find(store, provider, name) if store else None
        if store is None or entry is None:
            raise KeyError(f"{provider}@{name}")
        return Secret(self._open_entry(store, entry)), self._info(entry)

    def has(self, provider: str, name: str = "default") -> bool:
        store = self._load_readonly()
        return bool(store and self._find(store, provider, name))

    def set(
        self,
        provider: str,
        secret: str | Secret,
        name: str = "default",
        *,
        tier: str | None = None,
        base_url: str | None = None,
        allow_http: bool = False,
    ) -> KeyInfo:
        """Add or replace one key. Bad input raises before anything is written.

        The key is bound to an origin (see :mod:`jupyter_byok.origin`): ``base_url`` (its
        calls go there), else the provider's own. A key for an endpoint is bound to the
        endpoint's URL as it is now: entering it again binds it to the endpoint's current
        URL. ``allow_http`` allows a plain-http ``base_url`` to another machine.
        """
        value = validate_secret(secret.reveal() if isinstance(secret, Secret) else secret)
        _check_provider(provider)
        validate_name(name)
        if tier not in (None, "free", "paid"):
            raise KeystoreError(f"invalid tier {tier!r}: use 'free' or 'paid'")
        bind = binding_for(provider, base_url, allow_http)
        Secret(value)  # registers the value with the redaction filter
        with self._locked() as (store, save):
            if store is None:
                store = self._create()
            entry = self._find(store, provider, name)
            now = _now()
            if bind is not None:
                base_url = bind
            new = {
                "id": entry["id"] if entry else _random.token_hex(8),
                "provider": provider,
                "name": name,
                "kind": "secret" if provider == "secret" else "provider",
                "created": entry["created"] if entry else now,
                "updated": now,
                "last_verified": None,
                "tier": tier if tier is not None else (entry.get("tier") if entry else None),
                "base_url": base_url
                if base_url is not None
                else (entry.get("base_url") if entry else None),
            }
            self._seal(store, new, value)
            if entry is not None:
                store.entries[store.entries.index(entry)] = new
            else:
                store.entries.append(new)
            save(store)
            return self._info(new)

    def rebind(
        self,
        provider: str,
        name: str = "default",
        base_url: str | None = None,
        *,
        allow_http: bool = False,
    ) -> KeyInfo:
        """Bind a stored key to a new origin: re-seal it with the new base URL in its
        associated data. ``base_url=None``: the provider's own URL (an endpoint's current
        one). Only for a person at a terminal (``jupyter byok keys rebind``): no REST route
        and no magic call it, so a token holder cannot move a key."""
        if provider == _secret_namespace():
            raise KeystoreError("named secrets are never sent anywhere: there is nothing to rebind")
        _check_provider(provider)
        bind = binding_for(provider, base_url, allow_http)
        with self._locked() as (store, save):
            entry = self._find(store, provider, name) if store else None
            if store is None or entry is None:
                raise KeystoreError(
                    f"no stored key {label(provider, name)}; `jupyter byok keys list` shows what is stored"
                )
            value = self._open_entry(store, entry)
            new = {**entry, "base_url": bind, "updated": _now(), "last_verified": None}
            self._seal(store, new, value)
            store.entries[store.entries.index(entry)] = new
            save(store)
            return self._info(new)

    def delete(self, provider: str, name: str = "default") -> bool:
        with self._locked() as (store, save):
            entry = self._find(store, provider, name) if store else None
            if store is None or entry is None:
                return False
            store.entries.remove(entry)
            save(store)
            return True

    def mark_verified(self, provider: str, name: str = "default") -> None:
        with self._locked() as (store, save):
            entry = self._find(store, provider, name) if store else None
            if store is None or entry is None:
                raise KeyError(f"{provider}@{name}")
            entry["last_verified"] = _now()
            save(store)

    def rotate(self) -> dict[str, Any]:
        """Rotate the data key and the key-encryption key; re-encrypt every entry at once."""
        with self._locked() as (store, save):
            if store is None:
                raise KeystoreError("the keystore is empty: there is nothing to rotate")
            plaintexts = [(e, self._open_entry(store, e)) for e in store.entries]
            old_kek_file = store.header.get("kek_file")
            fresh = self._create(tier=str(store.header["tier"]))
            fresh.header["created"] = store.header.get("created", fresh.header["created"])
            for entry, value in plaintexts:
                self._seal(fresh, entry, value)
            fresh.entries = [e for e, _ in plaintexts]
            save(fresh)
        if old_kek_file and old_kek_file != fresh.header.get("kek_file"):
            with contextlib.suppress(FileNotFoundError):
                (self.home / old_kek_file).unlink()
        return {"kid": fresh.header["kid"], "entries": len(fresh.entries)}

    def init(self, tier: str) -> None:
        """Create an empty store with the given protection tier (refuses if one exists)."""
        if tier not in TIERS:
            raise KeystoreError(f"unknown tier {tier!r}: use one of {', '.join(TIERS)}")
        with self._locked() as (store, save):
            if store is not None or self.exists():
                raise KeystoreError(
                    "a keystore already exists here; run `jupyter byok keys reset` first"
                )
            save(self._create(tier=tier))

    def reset(self) -> builtins.list[Path]:
        """Set the current files aside (never deleted) so that a fresh store can start."""
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        moved: builtins.list[Path] = []
        with self._writing(), file_lock(self.lock_path), self._mutex:
            for path in (self.path, self.kek_dir):
                if path.exists():
                    target = path.with_name(f"{path.name}.aside-{stamp}")
                    n = 1
                    while target.exists() or target.is_symlink():
                        # Never replace files set aside earlier (two resets in a second).
                        n += 1
                        target = path.with_name(f"{path.name}.aside-{stamp}-{n}")
                    os.replace(path, target)
                    moved.append(target)
            self._kek_cache.clear()
        return moved

    # ------------------------------------------------------- backup and restore
    #: what :meth:`export_entries` carries of an entry besides its value
    EXPORTED = ("id", "provider", "name", "created", "updated", "last_verified", "tier", "base_url")

    def export_entries(self) -> builtins.list[tuple[dict[str, Any], Secret]]:
        """Every entry's metadata (:attr:`EXPORTED`, with its origin binding ``base_url``)
        and its value, for ``jupyter byok backup``; raises as :meth:`list` does."""
        store = self._load_readonly()
        if store is None:
            return []
        return [
            ({k: e.get(k) for k in self.EXPORTED}, Secret(self._open_entry(store, e)))
            for e in store.entries
        ]

    def import_entries(
        self,
        items: builtins.list[tuple[dict[str, Any], Secret]],
        *,
        replace: bool = False,
        dry_run: bool = False,
    ) -> builtins.list[tuple[str, str]]:
        """Merge exported entries into this store, re-sealed under its data key (a new store
        gets this machine's default tier), in one write. Each entry keeps its origin binding
        (``base_url``) as exported. Returns ``(label, outcome)`` per item: ``added``,
        ``same`` (same value: skipped), ``conflict`` (another value: kept) or ``replaced``
        (``replace=True``). ``dry_run`` checks and answers without writing."""
        checked = []
        for meta, secret in items:
            provider, name = meta.get("provider"), meta.get("name")
            if not isinstance(provider, str) or not NAME_RE.match(provider):
                raise KeystoreError(f"invalid provider name {provider!r} in the entries")
            validate_name(str(name))
            base_url = meta.get("base_url")
            if not isinstance(base_url, (str, type(None))) or meta.get("tier") not in (
                None,
                "free",
                "paid",
            ):
                raise KeystoreError(f"malformed entry {provider}@{name}")
            checked.append((meta, validate_secret(secret.reveal())))
        outcomes: builtins.list[tuple[str, str]] = []
        with self._locked() as (store, save):
            if store is None:
                if dry_run:
                    return [(_label(m), "added") for m, _ in checked]
                store = self._create()
            ids = {e.get("id") for e in store.entries}
            changed = False
            for meta, value in checked:
                provider, name = str(meta["provider"]), str(meta["name"])
                entry = self._find(store, provider, name)
                if entry is not None and hmac.compare_digest(
                    self._open_entry(store, entry).encode(), value.encode()
                ):
                    outcomes.append((_label(meta), "same"))
                    continue
                if entry is not None and not replace:
                    outcomes.append((_label(meta), "conflict"))
                    continue
                if dry_run:
                    outcomes.append((_label(meta), "replaced" if entry is not None else "added"))
                    continue
                new_id = meta.get("id")
                if entry is not None:
                    new_id = entry["id"]
                elif not isinstance(new_id, str) or not new_id or new_id in ids:
                    new_id = _random.token_hex(8)
                ids.add(new_id)
                new = {
                    "id": new_id,
                    "provider": provider,
                    "name": name,
                    "kind": "secret" if provider == _secret_namespace() else "provider",
                    "created": str(meta.get("created") or _now()),
                    "updated": str(meta.get("updated") or _now()),
                    "last_verified": meta.get("last_verified"),
                    "tier": meta.get("tier"),
                    "base_url": meta.get("base_url"),
                }
                Secret(value)  # registers the value with the redaction filter
                self._seal(store, new, value)
                if entry is not None:
                    store.entries[store.entries.index(entry)] = new
                else:
                    store.entries.append(new)
                outcomes.append((_label(meta), "replaced" if entry is not None else "added"))
                changed = True
            if changed:
                save(store)
        return outcomes

    # ------------------------------------------------------------------ internals
    def _cleanup(self) -> None:
        """Remove temp files of dead writers; only when no writer holds the lock."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        except OSError:  # a read-only folder: no writer left anything; reading goes on
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            try:
                removed = remove_stale_temps(self.path)
                if self.kek_dir.exists():
                    for tmp in self.kek_dir.glob(".*.tmp"):
                        tmp.unlink(missing_ok=True)
                        removed += 1
                if removed:
                    log.info("removed %d stale keystore temp file(s)", removed)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[tuple[Store | None, Callable[[Store], None]]]:
        with self._writing(), file_lock(self.lock_path), self._mutex:
            remove_stale_temps(self.path)
            store = self._load()

            def save(new: Store) -> None:
                atomic_write(self.path, self._serialize(new))

            yield store, save

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A change to the store: an OSError (a read-only or full folder, a file of another
        user) becomes one KeystorePermissionError line naming the place and what to do."""
        try:
            yield
        except OSError as exc:
            where = Path(exc.filename) if isinstance(exc.filename, str) else self.home
            raise KeystorePermissionError(
                f"cannot change the keystore: {os_error_line(exc, where)}; {UNWRITABLE_HINT}"
            ) from None

    def _find(self, store: Store, provider: str, name: str) -> dict[str, Any] | None:
        for entry in store.entries:
            if entry.get("provider") == provider and entry.get("name") == name:
                return entry
        return None

    def _info(self, entry: dict[str, Any]) -> KeyInfo:
        return KeyInfo(
            provider=entry["provider"],
            name=entry["name"],
            kind=entry.get("kind", "provider"),
            last4=entry.get("last4", ""),
            fingerprint=entry.get("fingerprint", ""),
            created=entry.get("created", ""),
            updated=entry.get("updated", ""),
            last_verified=entry.get("last_verified"),
            tier=entry.get("tier"),
            base_url=entry.get("base_url"),
            id=entry.get("id", ""),
        )

    # -- key hierarchy
    def _create(self, tier: str | None = None) -> Store:
        if tier is None:
            tier = "machine-file" if self._machine_id is not None else "file"
        if tier == "machine-file" and self._machine_id is None:
            raise KeystoreError("no machine id on this system: use the 'file' or 'passphrase' tier")
        salt = _random.token_bytes(16)
        header: dict[str, Any] = {
            "kid": "dek-" + _random.token_hex(6),
            "tier": tier,
            "salt": b64(salt),
            "created": _now(),
            "encryptions": 0,
            "kek_file": None,
            "keyring_user": None,
            "machine_hint": None,
        }
        if tier in ("machine-file", "keyring"):
            header["machine_hint"] = self._machine_hint()
        if tier in ("machine-file", "file"):
            header["kek_file"] = self._new_key_file()
        elif tier == "keyring":
            header["keyring_user"] = "kek-" + _random.token_hex(6)
            tiers.keyring_set(self._keyring, header["keyring_user"], b64(_random.token_bytes(32)))
        elif tier == "passphrase" and not self._passphrase:
            raise KeystoreLockedError(
                "the passphrase tier needs a passphrase: set JUPYTER_BYOK_PASSPHRASE "
                "or use `jupyter byok keys init --tier passphrase`"
            )
        kek = self._derive_kek(header)
        dek = AESGCM.generate_key(bit_length=256)
        header["kek_check"] = ff.kek_check(kek)
        nonce = _random.token_bytes(12)
        wrapped = AESGCM(kek).encrypt(nonce, dek, ff.dek_aad(header))
        header["wrapped_dek"] = {"nonce": b64(nonce), "ct": b64(wrapped)}
        return Store(header=header, entries=[], dek=dek)

    def _new_key_file(self) -> str:
        ensure_private_dir(self.kek_dir)
        rel = f"kek/kek-{_random.token_hex(6)}.key"
        atomic_write(self.home / rel, b64(_random.token_bytes(32)).encode() + b"\n")
        return rel

    def _derive_kek(self, header: dict[str, Any]) -> bytes:
        return tiers.derive_kek(
            header,
            home=self.home,
            store_path=self.path,
            machine_id=self._machine_id,
            passphrase=self._passphrase,
            keyring=self._keyring,
        )

    def _machine_hint(self) -> str:
        assert self._machine_id is not None
        return tiers.machine_hint(self._machine_id)

    # -- reading
    def _read_header(self) -> dict[str, Any]:
        try:
            body, _ = ff.split(self.path.read_bytes())
            header = json.loads(body)["header"]
            if not isinstance(header, dict) or header.get("tier") not in TIERS:
                raise ValueError
            return header
        except (ValueError, KeyError, TypeError, Corrupt):
            return {"tier": "unknown (damaged file)"}

    def _load_readonly(self) -> Store | None:
        """:meth:`_load` for readers that do not modify the store (every provider call reads
        a key): a verified parse is reused while the file's identity is unchanged.

        The identity is device, inode, size, mtime and ctime. Writers replace the file (a
        new inode), and an edit in place changes ctime, which no user-space call can set
        back; so an unchanged identity means unchanged bytes. The file's permissions are
        checked on every read (the same ``stat``); the folders' at most once a second (a
        folder opened to others exposes no key: the files in it stay 0600).
        """
        try:
            st = os.lstat(self.path)  # a symbolic link is refused (_load)
        except FileNotFoundError:
            return None
        except OSError:
            return self._load(reuse=True)
        seen = self._seen
        if seen is not None and _unchanged(st, seen[0]):
            now = time.monotonic()
            if now - self._dirs_checked > DIR_CHECK_INTERVAL:
                check_private_dir(self.home)
                check_private_dir(self.kek_dir)
                self._dirs_checked = now
            return seen[1]
        store = self._load(reuse=True)
        # the identity read before the bytes: if they changed in between, the next stat
        # differs from it and the file is read again
        self._seen = None if store is None else (_identity(st), store)
        return store

    def read_is_cheap(self) -> bool:
        """Whether reading a key now costs no more than a few ``stat`` calls: the file is
        absent, or unchanged since its last verified parse. Otherwise a read parses the
        file and may derive the key-encryption key (scrypt, a keyring), so the server does
        it on a worker thread."""
        try:
            st = os.lstat(self.path)  # a symbolic link is refused (_load)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        seen = self._seen
        return seen is not None and _unchanged(st, seen[0])

    def _load(self, reuse: bool = False) -> Store | None:
        """Read and verify the store (each time: other processes may have changed it)."""
        ensure_private_dir(self.home)
        try:
            raw = read_no_symlink(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise KeystoreError(
                    f"keystore {self.path} is a symbolic link{_link_target(self.path)}; "
                    "jupyter_byok does not follow links for its keystore, nor replace them: "
                    "put the file itself there, or set JUPYTER_BYOK_HOME to the folder that "
                    "holds it"
                ) from None
            raise KeystoreError(f"cannot read keystore: {os_error_line(exc, self.path)}") from None
        check_private_file(self.path)
        check_private_dir(self.kek_dir)
        digest = hashlib.sha256(raw).digest()
        if reuse and self._parsed is not None and self._parsed[0] == digest:
            return self._parsed[1]
        try:
            store = self._parse(raw)
            if reuse:
                self._parsed = (digest, store)
            return store
        except Corrupt as exc:
            raise KeystoreCorruptError(
                f"keystore {self.path} is damaged or was tampered with ({exc}); it was left "
                "untouched. Restore it from a backup, or " + RECOVERY
            ) from None

    def _parse(self, raw: bytes) -> Store:
        body, mac = ff.split(raw)
        try:
            doc = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Corrupt("not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != ff.FORMAT:
            raise Corrupt("not a jupyter_byok keystore")
        if doc.get("v") != VERSION:
            raise Corrupt(f"unsupported format version {doc.get('v')!r}")
        header, entries = doc.get("header"), doc.get("entries")
        if not isinstance(header, dict) or not isinstance(entries, list):
            raise Corrupt("missing header or entries")
        ff.check_header(header)
        try:
            wrapped = header["wrapped_dek"]
            nonce, ct = unb64(wrapped["nonce"]), unb64(wrapped["ct"])
        except (KeyError, TypeError, ValueError):
            raise Corrupt("missing or malformed data key") from None
        if len(nonce) != 12:
            raise Corrupt("malformed data key nonce")
        try:
            kek = self._cached_kek(header)
        except (KeyError, TypeError, ValueError):
            raise Corrupt("malformed header") from None
        try:
            dek = AESGCM(kek).decrypt(nonce, ct, ff.dek_aad(header))
        except InvalidTag:
            if hmac.compare_digest(str(header.get("kek_check")), ff.kek_check(kek)):
                raise Corrupt("the data key failed authentication") from None
            self._raise_binding(header)
            raise Corrupt("the data key failed authentication") from None
        if not hmac.compare_digest(mac, ff.mac(dek, body)):
            raise Corrupt("file checksum mismatch")
        for entry in entries:
            if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k), str) for k in ("provider", "name")
            ):
                raise Corrupt("malformed entry")
        return Store(header=header, entries=entries, dek=dek)

    def _cached_kek(self, header: dict[str, Any]) -> bytes:
        """KEK derivation can be slow (scrypt): remember it per header identity."""
        ident = tuple(
            str(header.get(k)) for k in ("tier", "salt", "kek_file", "keyring_user", "machine_hint")
        )
        kek = self._kek_cache.get(ident)
        if kek is None:
            kek = self._kek_cache[ident] = self._derive_kek(header)
        return kek

    def _raise_binding(self, header: dict[str, Any]) -> None:
        tier = header.get("tier")
        if tier == "passphrase":
            raise KeystoreLockedError(
                "wrong passphrase for the keystore: check JUPYTER_BYOK_PASSPHRASE"
            )
        hint = header.get("machine_hint")
        if (
            tier in ("machine-file", "keyring")
            and hint
            and self._machine_id is not None
            and not hmac.compare_digest(str(hint), self._machine_hint())
        ):
            raise MachineBindingError(
                f"keystore {self.path} was created on another machine (or this machine's id "
                "changed), so its keys cannot be decrypted here; the files were left "
                "untouched. " + RECOVERY[0].upper() + RECOVERY[1:]
            )
        raise MachineBindingError(
            f"the key-encryption key does not match keystore {self.path} (the key file was "
            "replaced or restored from elsewhere); the files were left untouched. "
            "Restore the matching key file, or " + RECOVERY
        )

    def _open_entry(self, store: Store, entry: dict[str, Any]) -> str:
        try:
            nonce, ct = unb64(entry["nonce"]), unb64(entry["ct"])
            plaintext = AESGCM(store.dek).decrypt(nonce, ct, ff.entry_aad(store.header, entry))
            return plaintext.decode("utf-8")
        except (KeyError, TypeError, ValueError, InvalidTag, UnicodeDecodeError):
            raise KeystoreCorruptError(
                f"keystore entry {entry.get('provider')}@{entry.get('name')} failed authentication "
                "(damaged or tampered with); delete it with `jupyter byok keys delete` "
                "and set it again"
            ) from None

    # -- writing
    def _seal(self, store: Store, entry: dict[str, Any], value: str) -> None:
        if store.header.get("encryptions", 0) >= ROTATE_AFTER:
            raise KeystoreError(
                "the data key has been used very often: run `jupyter byok keys rotate-master`"
            )
        nonce = _random.token_bytes(12)
        ct = AESGCM(store.dek).encrypt(
            nonce, value.encode("utf-8"), ff.entry_aad(store.header, entry)
        )
        entry["nonce"], entry["ct"] = b64(nonce), b64(ct)
        entry["last4"] = value[-4:] if len(value) >= 12 else ""
        fp_key = hkdf(store.dek, b"jupyter_byok/fingerprint")
        entry["fingerprint"] = hmac.new(fp_key, value.encode(), hashlib.sha256).hexdigest()[:12]
        store.header["encryptions"] = int(store.header.get("encryptions", 0)) + 1

    def _serialize(self, store: Store) -> bytes:
        return ff.serialize(store)


def _check_provider(provider: str) -> None:
    from ..providers import SECRET_NAMESPACE, known_provider_names

    if provider == SECRET_NAMESPACE:
        return
    if provider not in known_provider_names() or provider == "local":
        known = ", ".join(sorted(known_provider_names() - {"local"}))
        raise UnknownProviderError(
            f"unknown provider {provider!r}: use one of {known}, 'secret' for a named secret, "
            "or register an endpoint first"
        )


def _secret_namespace() -> str:
    from ..providers import SECRET_NAMESPACE

    return SECRET_NAMESPACE


def _label(meta: dict[str, Any]) -> str:
    return label(meta.get("provider"), meta.get("name"))
