"""A throwaway PostgreSQL cluster in a temporary folder, for tests and benchmarks.

``with PgCluster() as pg: url = pg.create_database("t1")`` runs ``initdb`` and ``pg_ctl``
from the installed PostgreSQL (``pg_config --bindir``, else ``/usr/lib/postgresql/*/bin``;
``scripts/setup.sh`` installs Debian's ``postgresql``). As root, the cluster runs as the
unprivileged ``nobody`` (PostgreSQL refuses to run as root) in a folder it owns. It listens
on 127.0.0.1 at a free port and on a socket in its folder; local connections are trusted,
TCP ones need a password (``scram-sha-256``): :meth:`PgCluster.add_role` makes one.

No PostgreSQL installed is an error (:class:`PostgresMissing`), never a reason to skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["PgCluster", "PostgresMissing", "find_bindir"]


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """The folder of ``initdb`` and ``pg_ctl``."""
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10
            )
            candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise PostgresMissing(
        "PostgreSQL is not installed (no initdb/pg_ctl found by pg_config --bindir or in "
        "/usr/lib/postgresql/*/bin): run scripts/setup.sh or `apt-get install postgresql`"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """One throwaway cluster (see the module's notes)."""

    def __init__(self, base: str | os.PathLike[str] | None = None) -> None:
        self.bindir = find_bindir()
        self._tmp = Path(tempfile.mkdtemp(prefix="byok-pg-", dir=base))
        self.datadir = self._tmp / "data"
        self.sockdir = self._tmp / "sock"
        self.port = _free_port()
        self.superuser = "byok_admin"
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "nobody", "--"]
            os.chmod(self._tmp, 0o755)
        self._n = 0

    # ------------------------------------------------------------------ running
    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [*self._as, *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self._tmp)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {out.stderr.strip() or out.stdout}")

    def _own(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self._as:
            shutil.chown(path, "nobody", "nogroup" if _has_group("nogroup") else None)

    def start(self) -> PgCluster:
        self._own(self.datadir)
        self._own(self.sockdir)
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", self.superuser,
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        conf = self.datadir / "postgresql.conf"
        with open(conf, "a", encoding="utf-8") as f:
            f.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.sockdir}'\nmax_connections = 200\n"
                "shared_buffers = 64MB\nlog_min_messages = warning\n"
            )
        # host connections of the superuser (the fixture's own) are trusted too
        hba = self.datadir / "pg_hba.conf"
        text = hba.read_text(encoding="utf-8")
        hba.write_text(f"host all {self.superuser} 127.0.0.1/32 trust\n" + text, encoding="utf-8")
        self.pg_ctl_start()
        return self

    def pg_ctl_start(self) -> None:
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l",
            str(self.sockdir / "server.log"), "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE`` (``immediate``: as if the server crashed)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ databases
    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.admin_url(database), autocommit=True) as conn:
            cur = conn.execute(sql)  # trusted test SQL
            return list(cur.fetchall()) if cur.description else []

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; returns its URL (as the superuser)."""
        if name is None:
            self._n += 1
            name = f"t{os.getpid()}_{self._n}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.admin_url(name)

    def add_role(self, name: str, password: str, database: str) -> str:
        """A login role with exactly the single-user servers' grants on ``database``
        (``APP_GRANTS``, as docs/jupyterhub.md lists them; the schema must exist); returns
        its URL, without the password."""
        from ..ledger.pg import APP_GRANTS

        self.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        for grant in APP_GRANTS:
            self.execute(grant.format(database=f'"{database}"', role=name), database)
        return f"postgresql://{quote(name)}@127.0.0.1:{self.port}/{database}"

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.execute("SELECT 1")
                return
            except Exception:
                time.sleep(0.1)
        raise TimeoutError("PostgreSQL did not come back")


def _has_group(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True
