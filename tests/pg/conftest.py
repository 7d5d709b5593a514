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
    from jupyter_byok.ledger import shared

    url = pg_cluster.create_database()
    monkeypatch.setenv("JUPYTER_BYOK_LEDGER_URL", url)
    yield url
    for led in list(shared._shared.values()):
        led.close()
    shared._shared.clear()
