"""``jupyter byok restore``: check a backup whole, then merge it into this machine's state.

Nothing is written before everything has been checked: the file's checksum, the
passphrase, every record's authentication tag, every section's digest, the ledger
snapshot's integrity and row count, the keystore, settings and budgets here (they must
open), the merge plan, and the free disk space. Then settings, budgets, price overrides,
model files, keys and ledger rows are merged, each in one atomic write: new items are
added, identical ones skipped, conflicting ones reported and kept (``replace=True``
takes the backup's). Keys are re-sealed under this machine's keystore (its protection
tier), each with the origin it was bound to; ledger rows merge by their unique ids, so
restoring twice adds nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from ..redact import Secret
from ._format import BackupCorruptError, BackupError, Reader, open_reader
from ._snapshot import WHOLE_FILES, FreeBytes, _need_space, free_bytes

OUTCOMES = ("added", "same", "conflict", "replaced")


def _tally(outcomes: list[tuple[str, str]]) -> dict[str, Any]:
    counts = Counter(o for _, o in outcomes)
    out: dict[str, Any] = {k: counts.get(k, 0) for k in OUTCOMES}
    out["conflicts"] = sorted(label for label, o in outcomes if o == "conflict")
    return out


def merge_settings(
    local: dict[str, Any], backup: dict[str, Any], replace: bool
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Merge the backup's settings into the local ones: dict-valued settings (aliases,
    endpoints, local models, local prices) item by item, the others as one item each; a
    local value still at its default takes the backup's."""
    from ..config import Settings

    defaults = Settings().to_json()
    merged = json.loads(json.dumps(local))
    outcomes: list[tuple[str, str]] = []
    for key, value in backup.items():
        if key == "version":
            continue
        if isinstance(value, dict):
            into = merged.setdefault(key, {})
            if not isinstance(into, dict):
                continue
            for name, item in value.items():
                label = f"{key}.{name}"
                if name not in into:
                    into[name] = item
                    outcomes.append((label, "added"))
                elif into[name] == item:
                    outcomes.append((label, "same"))
                elif replace:
                    into[name] = item
                    outcomes.append((label, "replaced"))
                else:
                    outcomes.append((label, "conflict"))
            continue
        current = merged.get(key, defaults.get(key))
        if current == value:
            outcomes.append((key, "same"))
        elif current == defaults.get(key):
            merged[key] = value
            outcomes.append((key, "added"))
        elif replace:
            merged[key] = value
            outcomes.append((key, "replaced"))
        else:
            outcomes.append((key, "conflict"))
    return merged, outcomes


def _json_section(reader: Reader, section: str) -> Any:
    try:
        return json.loads(reader.read(section))
    except ValueError:
        raise BackupCorruptError(f"section {section} of {reader.path} is not JSON") from None


def _extract(reader: Reader, section: str, dest: Path, compressed: bool) -> None:
    """Decrypt (and inflate) a large section into ``dest``, checking its digest and size."""
    entry = reader.manifest["sections"][section]
    h = hashlib.sha256()
    size = 0
    z = zlib.decompressobj() if compressed else None
    with open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        for chunk in reader.chunks(section):
            data = z.decompress(chunk) if z is not None else chunk
            h.update(data)
            size += len(data)
            out.write(data)
        if z is not None:
            try:
                tail = z.flush()
            except zlib.error:
                tail = b""
            h.update(tail)
            size += len(tail)
            out.write(tail)
            if not z.eof:
                raise BackupCorruptError(f"section {section} of {reader.path} is incomplete")
    if h.hexdigest() != entry.get("sha256") or size != entry.get("bytes"):
        raise BackupCorruptError(f"section {section} of {reader.path} failed its digest check")


def _ledger_columns(conn: sqlite3.Connection, schema: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA {schema}.table_info(attempts)")]


def _check_snapshot(path: Path, rows: int) -> None:
    from ..ledger import migrate

    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        # the full integrity_check ran when the backup was made, and these bytes are
        # authenticated as written then: the quick check (no index cross-check) suffices
        ok = conn.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise BackupCorruptError(f"the backup's ledger fails its integrity check ({ok})")
        migrate(conn)  # an older ledger's schema, brought up to this version's
        (n,) = conn.execute("SELECT count(*) FROM attempts").fetchone()
        if n != rows:
            raise BackupCorruptError(
                f"the backup's ledger holds {n} rows, its manifest says {rows}"
            )
    except sqlite3.Error as exc:
        raise BackupCorruptError(f"the backup's ledger cannot be read ({exc})") from None
    finally:
        conn.close()


def merge_ledger(snapshot: Path, dest: Path) -> dict[str, int]:
    """Add the snapshot's rows that ``dest`` lacks (by their unique id), in one
    transaction, then fold them into the rollup."""
    from ..ledger import Ledger

    led = Ledger(dest)
    try:
        led.count()  # creates and migrates the ledger if needed
        conn = sqlite3.connect(str(dest), timeout=60, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("ATTACH DATABASE ? AS snap", (str(snapshot),))
            theirs = set(_ledger_columns(conn, "snap"))
            cols = ", ".join(c for c in _ledger_columns(conn, "main") if c in theirs)
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                conn.execute(
                    f"INSERT OR IGNORE INTO main.attempts ({cols}) "
                    f"SELECT {cols} FROM snap.attempts ORDER BY rowid"
                )
                added = conn.total_changes - before
                (total,) = conn.execute("SELECT count(*) FROM snap.attempts").fetchone()
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("DETACH DATABASE snap")
        finally:
            conn.close()
        led.fold()
    except sqlite3.Error as exc:
        raise BackupError(f"could not merge the ledger rows into {dest} ({exc})") from None
    finally:
        led.close()
    return {"added": added, "present": total - added}


def restore_backup(
    source: str | os.PathLike[str],
    passphrase: str,
    *,
    replace: bool = False,
    keystore: Any = None,
    free: FreeBytes = free_bytes,
) -> dict[str, Any]:
    """Check ``source`` whole, then merge it into this JUPYTER_BYOK_HOME; returns counts
    per kind (``added``, ``same``, ``conflict``, ``replaced``; ledger ``added`` and
    ``present``) and the backup's manifest. On any failure nothing is changed."""
    from .._files import atomic_write, ensure_private_dir, file_lock
    from ..budgets import get_budgets, merge_budgets
    from ..config import Settings, byok_home, home_file, load_settings, update_settings
    from ..keys import Keystore
    from ..ledger import ledger_path
    from ..pricing import OVERRIDE_NAME, validate_prices

    path = Path(source).expanduser().absolute()
    with open_reader(path) as reader:
        manifest = reader.unlock(passphrase)
        sections: dict[str, dict[str, Any]] = manifest["sections"]
        counts = manifest.get("counts", {})
        home = byok_home()
        # This machine's state must open before anything is merged into it.
        store = keystore if keystore is not None else Keystore()
        store.list()
        local = load_settings(home, fresh=True).to_json()
        get_budgets()
        ledger = ledger_path(home)
        big = sum(int(e.get("bytes", 0)) for e in sections.values() if e.get("kind") != "key")
        ledger_bytes = int(sections.get("ledger", {}).get("bytes", 0))
        _need_space(home, big + ledger_bytes, "the restore", free)
        if ledger.parent != home:
            _need_space(ledger.parent, ledger_bytes, "the ledger rows", free)

        work = Path(tempfile.mkdtemp(prefix=".restore-", dir=ensure_private_dir(home)))
        try:
            # ---- read and check every section
            keys: list[tuple[dict[str, Any], Secret]] = []
            for section, entry in sections.items():
                if entry.get("kind") == "key":
                    data = _json_section(reader, section)
                    if not isinstance(data, dict) or not isinstance(data.get("value"), str):
                        raise BackupCorruptError(f"key section {section} is malformed")
                    value = Secret(data.pop("value"))
                    keys.append((data, value))
            files = {
                s: _json_section(reader, s)
                for s in ("settings", "budgets", *WHOLE_FILES)
                if s in sections
            }
            snapshot = None
            if "ledger" in sections:
                snapshot = work / "ledger.sqlite3"
                _extract(reader, "ledger", snapshot, compressed=True)
                _check_snapshot(snapshot, int(counts.get("ledger_rows", -1)))
            model_files: dict[str, tuple[Path, dict[str, Any]]] = {}
            for section, entry in sections.items():
                if entry.get("kind") == "model":
                    tmp = work / section
                    _extract(reader, section, tmp, compressed=False)
                    model_files[str(entry.get("name"))] = (tmp, entry)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    try:
        # ---- plan: every merge is computed (and its input validated) before any write
        backup_settings = files.get("settings") or {}
        if not isinstance(backup_settings, dict):
            raise BackupCorruptError("the backup's settings are malformed")
        model_targets: dict[str, tuple[Path, Path | None]] = {}
        models_dir = home / "models"
        for name, (tmp, entry) in model_files.items():
            original, digest = Path(str(entry.get("path"))), str(entry.get("sha256"))
            target: Path | None = models_dir / original.name
            if original.is_file() and _sha256(original) == digest:
                final, target = original, None  # already here: nothing to copy
            elif target is not None and target.is_file() and _sha256(target) == digest:
                final, target = target, None
            else:
                if target is not None and target.exists():
                    target = models_dir / f"{name}-{digest[:8]}{original.suffix}"
                final = target if target is not None else original
            backup_settings.setdefault("local_models", {})[name] = str(final)
            model_targets[name] = (tmp, target)
        merged, settings_outcomes = merge_settings(local, backup_settings, replace)
        Settings.from_json(merged)  # a malformed setting fails here
        budget_items = (files.get("budgets") or {}).get("budgets", [])
        budget_outcomes = merge_budgets(budget_items, replace=replace, dry_run=True)
        # whole files: the user's price overrides, and the registry of pulled local models
        whole: dict[str, tuple[Path, bytes, str]] = {}
        for section, name in WHOLE_FILES.items():
            if section not in files:
                continue
            if section == "prices":
                validate_prices(files[section], where="the backup's price overrides")
            elif not isinstance(files[section], dict):
                raise BackupCorruptError(f"the backup's {name} is malformed")
            target = home_file(OVERRIDE_NAME if section == "prices" else name, home)
            try:
                same = json.loads(target.read_bytes()) == files[section]
                outcome = "same" if same else ("replaced" if replace else "conflict")
            except FileNotFoundError:
                outcome = "added"
            except ValueError:
                outcome = "replaced" if replace else "conflict"
            raw = json.dumps(files[section], indent=2).encode("utf-8") + b"\n"
            whole[section] = (target, raw, outcome)
        store.import_entries(keys, replace=replace, dry_run=True)

        # ---- write
        def change(settings: Settings) -> None:
            again, _ = merge_settings(settings.to_json(), backup_settings, replace)
            settings.__dict__.update(Settings.from_json(again).__dict__)

        if any(o in ("added", "replaced") for _, o in settings_outcomes):
            update_settings(change, home)
        budget_outcomes = merge_budgets(budget_items, replace=replace)
        for target, raw, outcome in whole.values():
            if outcome in ("added", "replaced"):
                with file_lock(target.with_suffix(".lock")):
                    atomic_write(target, raw)
        model_report: Counter[str] = Counter()
        for _name, (tmp, target) in model_targets.items():
            if target is None:
                model_report["same"] += 1
                continue
            ensure_private_dir(models_dir)
            os.replace(tmp, target)
            model_report["added"] += 1
        key_outcomes = store.import_entries(keys, replace=replace)
        ledger_report = {"added": 0, "present": 0}
        if snapshot is not None:
            ledger_report = merge_ledger(snapshot, ledger)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "source": {
            "machine": manifest.get("machine"),
            "created": manifest.get("created"),
            "jupyter_byok": manifest.get("jupyter_byok"),
        },
        "keys": _tally(key_outcomes),
        "settings": _tally(settings_outcomes),
        "budgets": _tally(budget_outcomes),
        "prices": whole["prices"][2] if "prices" in whole else None,
        "local_registry": whole["local_registry"][2] if "local_registry" in whole else None,
        "model_files": dict(model_report),
        "ledger": ledger_report,
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def inspect(source: str | os.PathLike[str], passphrase: str) -> dict[str, Any]:
    """The manifest of a backup after checking its passphrase (reads no section)."""
    with open_reader(Path(source).expanduser().absolute()) as reader:
        return reader.unlock(passphrase)
