"""Backup and restore: keys, the usage ledger, settings and (optionally) local model files
in one file sealed with a passphrase, to move to a new machine (``jupyter byok backup`` /
``jupyter byok restore``; see docs/backup.md).

The file format is in :mod:`._format`; :func:`create_backup` collects and seals,
:func:`restore_backup` checks a file whole, then merges it.
"""

from __future__ import annotations

from ._format import (
    DEFAULT_KDF,
    VERSION,
    BackupCorruptError,
    BackupError,
    BackupPassphraseError,
    BackupSpaceError,
    BackupVersionError,
    KdfParams,
)
from ._restore import inspect, merge_settings, restore_backup
from ._snapshot import create_backup, passphrase_warning, snapshot_ledger

__all__ = [
    "DEFAULT_KDF",
    "VERSION",
    "BackupCorruptError",
    "BackupError",
    "BackupPassphraseError",
    "BackupSpaceError",
    "BackupVersionError",
    "KdfParams",
    "create_backup",
    "inspect",
    "merge_settings",
    "passphrase_warning",
    "restore_backup",
    "snapshot_ledger",
]
