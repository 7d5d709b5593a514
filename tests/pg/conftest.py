"""Fixtures for tests against a real PostgreSQL: one throwaway cluster per pytest process
(each xdist worker starts its own), one new database per test.

A machine without PostgreSQL fails these tests (``PostgresMissing``); it never skips them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jupyter_byok.testing.postgres import PgCluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    with PgCluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new database, configured as this test's shared ledger."""
    url = pg_cluster.create_database()
    monkeypatch.setenv("JUPYTER_BYOK_LEDGER_URL", url)
    yield url
    from jupyter_byok.ledger import shared

    shared._shared.clear()


@pytest.fixture(autouse=True)
def close_shared_ledgers() -> Iterator[None]:
    """Every shared ledger a test made is closed after it, with its pool (a pool left to
    the garbage collector may be collected in its own worker thread, which it cannot join)."""
    from jupyter_byok.ledger import shared

    yield
    for led in list(shared._open):
        led.close()
