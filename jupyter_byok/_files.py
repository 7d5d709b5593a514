"""Crash-safe file primitives shared by the keystore, config and price overrides.

Invariant: a file written with :func:`atomic_write` holds either its old or its new
content after a crash at any point; temp files live beside it (same filesystem) and
are named ``.<name>.<random>.tmp`` so that :func:`remove_stale_temps` can find them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("jupyter_byok")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (0700) or tighten it if group/other can read it. A folder that
    cannot be created (a read-only file system) is one ConfigError line."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    except OSError as exc:
        from .errors import ConfigError

        where = Path(exc.filename) if isinstance(exc.filename, str) else path
        raise ConfigError(
            f"cannot create the folder {path}: {os_error_line(exc, where)}; make it "
            "writable, or set JUPYTER_BYOK_HOME to a writable folder"
        ) from None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        _tighten(path, mode, PRIVATE_DIR)
    return path


def check_private_dir(path: Path) -> None:
    """Tighten an existing folder that group/other can open, and say so (never creates it)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        _tighten(path, mode, PRIVATE_DIR)


def check_private_file(path: Path) -> None:
    """Tighten a file that group/other can read, and say so."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        _tighten(path, mode, PRIVATE_FILE)


def _tighten(path: Path, mode: int, private: int) -> None:
    """chmod ``path`` to ``private``, and say so. On a read-only file system (or a file of
    another user) the mode cannot change: that is said too, and reading goes on (the files
    in it stay 0600); a write there fails on its own, with :func:`os_error_line`."""
    try:
        os.chmod(path, private)
    except OSError as exc:
        log.warning(
            "%s is accessible to other users (mode %o) and could not be set to %04o: %s",
            path,
            mode,
            private,
            exc.strerror or type(exc).__name__,
        )
        return
    log.warning("%s was accessible to other users (mode %o); set it to %04o", path, mode, private)


#: errno values that mean "this place cannot be written", with what to say about them
_UNWRITABLE = {
    errno.EROFS: "is on a read-only file system",
    errno.EACCES: "is not writable by this user",
    errno.EPERM: "is not writable by this user",
    errno.ENOSPC: "is on a full disk",
    errno.EDQUOT: "is over its disk quota",
}


def os_error_line(exc: OSError, where: Path) -> str:
    """One line for an OSError met at ``where`` (a file or folder): what and why, never a
    traceback. ``EROFS`` -> ``/x/byok is on a read-only file system``."""
    reason = _UNWRITABLE.get(exc.errno or 0)
    if reason is not None:
        return f"{where} {reason}"
    return f"{where}: {exc.strerror or type(exc).__name__}"


def read_no_symlink(path: Path) -> bytes:
    """The bytes of ``path``, refusing a symbolic link (``OSError`` with ``ELOOP``); a
    missing file is ``FileNotFoundError`` as usual."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = PRIVATE_FILE) -> None:
    """Write ``data`` to ``path`` atomically and durably (temp, fsync, replace, fsync dir)."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def remove_stale_temps(path: Path) -> int:
    """Remove temp files left by writers of ``path`` that died. Call with the lock held."""
    removed = 0
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed += 1
    return removed


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on a dedicated lock file (never on the data file).

    The lock file stays after release: deleting it would let contenders lock
    different inodes.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
