"""Shared fixtures: the repository's folders, and databases to run every store test on: a fresh SQLite
file, and a fresh database in a throwaway PostgreSQL cluster started from Debian's binaries.

Set SOPFLOW_TEST_POSTGRES to a server URL to use that server instead of starting one. With
SOPFLOW_REQUIRE_POSTGRES=1 (CI), a missing PostgreSQL fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sopflow.engine.runtime import Engine
from tests.helpers.pgcluster import PgCluster, postgres_bindir

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "definitions"
MINI = ROOT / "tests" / "fixtures" / "mini"


class Clock:
    """A fake clock the tests move by hand; the engine and workers read time only through it."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def engine_on(database_url: str, clock: Clock, folder: Path) -> Iterator[Engine]:
    """An engine on `database_url` with `folder` deployed, closed afterwards."""
    sop = Engine(database_url, clock=clock)
    try:
        sop.deploy([folder])
        yield sop
    finally:
        sop.close()


def _unavailable(reason: str) -> None:
    if os.environ.get("SOPFLOW_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required (SOPFLOW_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL without a database name."""
    given = os.environ.get("SOPFLOW_TEST_POSTGRES")
    if given:
        yield given.rstrip("/")
        return
    bindir = postgres_bindir()
    if bindir is None:
        _unavailable("no /usr/lib/postgresql/*/bin (apt-get install postgresql)")
        return
    # The tests' cluster trades durability for speed: fsync and synchronous commit are off.
    cluster = PgCluster(bindir, durable=False)
    try:
        url = cluster.start()
    except (subprocess.CalledProcessError, KeyError, OSError) as exc:
        cluster.stop()
        _unavailable(f"could not start a cluster: {exc}")
        return
    yield url
    cluster.stop()


def fresh_postgres_database(server: str) -> str:
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    plain = server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs twice: on a new SQLite file and on a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sopflow.db'}"
    server = request.getfixturevalue("postgres_server")
    return fresh_postgres_database(server)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `postgres` every test that asks for the server itself, so that `-m "not postgres"` runs
    without one (the `database_url` fixture marks its PostgreSQL parameter)."""
    for item in items:
        if "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sopflow.db'}"
