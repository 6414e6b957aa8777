"""Shared fixtures: the repository's folders, and databases to run every store test on: a fresh SQLite
file, and a fresh database in a throwaway PostgreSQL cluster started from Debian's binaries.

Set SOPFLOW_TEST_POSTGRES to a server URL to use that server instead of starting one. With
SOPFLOW_REQUIRE_POSTGRES=1 (CI), a missing PostgreSQL fails the tests instead of skipping them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "definitions"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(reason: str) -> None:
    if os.environ.get("SOPFLOW_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required (SOPFLOW_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


class _Cluster:
    """A throwaway PostgreSQL cluster in a temporary folder, on a free loopback port."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="sopflow-pg-"))
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: run it as the Debian package's `postgres` user.
            pwd.getpwnam("postgres")
            shutil.chown(self.folder, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, cwd="/tmp", timeout=120)

    def start(self) -> str:
        data = self.folder / "data"
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "-l",
            str(self.folder / "log"),
            "start",
        )
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"

    def stop(self) -> None:
        subprocess.run(
            [
                *self.as_user,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.folder / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            check=False,
            capture_output=True,
            cwd="/tmp",
            timeout=60,
        )
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL without a database name."""
    given = os.environ.get("SOPFLOW_TEST_POSTGRES")
    if given:
        yield given.rstrip("/")
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins:
        _unavailable("no /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    cluster = _Cluster(Path(bins[-1]))
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


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs twice: on a new SQLite file and on a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sopflow.db'}"
    server = request.getfixturevalue("postgres_server")
    return fresh_postgres_database(server)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sopflow.db'}"
