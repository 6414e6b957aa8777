"""The database side of backups: a consistent copy of the whole database with the counts and chain heads
it holds, a copy put back into a database, and the checks run on a restored copy.

SQLite: the online backup API of SQLite itself, run on a connection inside a read transaction, so the copy,
the counts and the heads are all of the one moment that transaction sees, while writers go on (WAL mode).
PostgreSQL: `pg_dump` in its custom format, handed the snapshot of a REPEATABLE READ transaction in which
the counts and heads were read (`pg_export_snapshot`), so again both are of one moment. Restoring uses
SQLite's backup API the other way round, or `pg_restore` in a single transaction.

The binaries are the server's own (`pg_dump`, `pg_restore`), found on PATH or under Debian's
/usr/lib/postgresql/*/bin; `SOPFLOW_PG_BINDIR` names another folder.
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, and_, func, insert, inspect, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from sopflow.engine.audit import canonical_json
from sopflow.engine.errors import ConfigurationError, Conflict, UsageError
from sopflow.engine.store import database
from sopflow.engine.store.records import NotificationSpec
from sopflow.engine.store.tables import audit, metadata, notifications

BINDIR_ENV = "SOPFLOW_PG_BINDIR"
COUNTED = ("cases", "audit", "definitions", "orgs", "timers", "delegations", "idempotency_keys")
"""The tables whose row counts a manifest records and a restored copy must match."""
SYSTEM_CASE = 0
"""The case number of a notification about the deployment itself (a backup that failed), not a case."""


@dataclass(frozen=True, slots=True)
class Contents:
    """What a database held at one moment: row counts by table and every chain's head."""

    counts: dict[str, int]
    heads: tuple[tuple[int, int, str], ...]
    """(case id, seq, hash) of the last audit record of every case."""


def _contents(conn: Connection) -> Contents:
    counts = {
        name: int(conn.execute(select(func.count()).select_from(metadata.tables[name])).scalar_one())
        for name in COUNTED
    }
    last = select(audit.c.case_id, func.max(audit.c.seq).label("seq")).group_by(audit.c.case_id).subquery()
    query = (
        select(audit.c.case_id, audit.c.seq, audit.c.hash)
        .join(last, and_(audit.c.case_id == last.c.case_id, audit.c.seq == last.c.seq))
        .order_by(audit.c.case_id)
    )
    heads = tuple((int(r.case_id), int(r.seq), str(r.hash)) for r in conn.execute(query))
    return Contents(counts, heads)


def contents(engine: Engine) -> Contents:
    """The counts and heads of the database as one transaction sees them."""
    with database.connect_or_explain(engine) as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return _contents(conn)


# -- taking a copy ----------------------------------------------------------------------------------


def copy_out(engine: Engine, target: Path) -> Contents:
    """Write a consistent copy of the database at `engine` to `target` (a new file); returns what it holds."""
    if engine.dialect.name == "sqlite":
        return _sqlite_copy(engine, target)
    return _pg_dump(engine, target)


def _sqlite_copy(engine: Engine, target: Path) -> Contents:
    with database.connect_or_explain(engine) as conn, conn.begin():
        found = _contents(conn)  # the read transaction's snapshot is now fixed, and the copy reads it
        source: sqlite3.Connection = conn.connection.driver_connection
        copy = sqlite3.connect(target, isolation_level=None)
        try:
            source.backup(copy)
            # A file that stands alone: no -wal file beside it to lose when the copy is moved.
            copy.execute("PRAGMA journal_mode = DELETE")
        finally:
            copy.close()
    return found


def _pg_dump(engine: Engine, target: Path) -> Contents:
    with database.connect_or_explain(engine) as conn, conn.begin():
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = str(conn.execute(text("SELECT pg_export_snapshot()")).scalar_one())
        found = _contents(conn)
        # pg_dump reads the very snapshot the counts were read in, while this transaction stays open.
        _run_pg("pg_dump", ["--format=custom", f"--snapshot={snapshot}", f"--file={target}"], engine.url)
    return found


# -- putting a copy back ----------------------------------------------------------------------------


def is_empty(engine: Engine) -> bool:
    """Whether the database holds no sopflow rows (no tables, or only empty ones)."""
    with database.connect_or_explain(engine) as conn:
        present = set(inspect(conn).get_table_names())
        for name in ("cases", "definitions", "orgs", "audit"):
            if name not in present:
                continue
            if conn.execute(select(func.count()).select_from(metadata.tables[name])).scalar():
                return False
    return True


def copy_in(source: Path, engine: Engine, kind: str) -> None:
    """Put the backup file `source` (of a database of `kind`) into the database at `engine`, replacing
    what it holds, whole or not at all."""
    if kind != engine.dialect.name:
        raise UsageError(
            f"the backup is of a {kind} database and cannot be restored into {engine.dialect.name}",
            hint=f"restore it into a {kind} URL",
        )
    if kind == "sqlite":
        copy = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        with database.connect_or_explain(engine) as conn:
            target: sqlite3.Connection = conn.connection.driver_connection
            try:
                copy.backup(target)
            finally:
                copy.close()
        return
    _run_pg(
        "pg_restore",
        ["--single-transaction", "--clean", "--if-exists", "--no-owner", "--exit-on-error", str(source)],
        engine.url,
    )


def integrity(engine: Engine) -> list[str]:
    """Problems the database finds in its own storage: SQLite's integrity check; on PostgreSQL a restore
    that `pg_restore` finished in one transaction is whole, and each table must be readable to its end."""
    with database.connect_or_explain(engine) as conn:
        if engine.dialect.name == "sqlite":
            rows = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA integrity_check")]
            return [] if rows == ["ok"] else rows
        for name in COUNTED:
            conn.execute(select(func.count()).select_from(metadata.tables[name])).scalar_one()
    return []


@contextmanager
def scratch_database(like_url: str, kind: str, folder: Path) -> Iterator[str]:
    """A new empty database to restore a backup into for checking, removed afterwards: a file in `folder`
    (SQLite), or a database beside the one `like_url` names on the same server (PostgreSQL, which needs
    the right to create databases)."""
    like = database.parse_url(like_url)
    name = f"sopflow_check_{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        path = folder / f".{name}.db"
        try:
            yield str(URL.create("sqlite", database=str(path)))
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    server = like.set(database="postgres")
    admin = database.create(server.render_as_string(hide_password=False))
    try:
        with database.connect_or_explain(admin) as plain:
            conn = plain.execution_options(isolation_level="AUTOCOMMIT")
            try:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            except DBAPIError as exc:
                raise ConfigurationError(
                    f"cannot create a scratch database to check the backup in: {str(exc).splitlines()[0]}",
                    hint="give sopflow's user the CREATEDB right (ALTER ROLE … CREATEDB)",
                ) from None
        try:
            yield like.set(database=name).render_as_string(hide_password=False)
        finally:
            with database.connect_or_explain(admin) as plain:
                conn = plain.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


# -- the outbox -------------------------------------------------------------------------------------


def notify(engine: Engine, specs: Sequence[NotificationSpec], now: datetime) -> None:
    """Put notifications about the deployment itself (case number 0) into the outbox."""
    if not specs:
        return
    with database.connect_or_explain(engine, write=True) as conn, conn.begin():
        conn.execute(
            insert(notifications),
            [
                {
                    "case_id": SYSTEM_CASE,
                    "channel": n.channel,
                    "recipient": n.recipient,
                    "subject": n.subject,
                    "body": canonical_json(dict(n.body)),
                    "created_at": now,
                    "attempts": 0,
                    "next_attempt_at": now,
                }
                for n in specs
            ],
        )


# -- PostgreSQL's tools -----------------------------------------------------------------------------


def pg_tool(name: str) -> str:
    """The path of PostgreSQL's `name` (pg_dump, pg_restore): SOPFLOW_PG_BINDIR, else PATH, else the
    newest of Debian's /usr/lib/postgresql/*/bin."""
    given = os.environ.get(BINDIR_ENV)
    if given:
        candidate = Path(given) / name
        if candidate.is_file():
            return str(candidate)
        raise ConfigurationError(f"{BINDIR_ENV} names `{given}`, which holds no `{name}`", hint=_TOOL_HINT)
    debian = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    found = debian[-1] if debian else shutil.which(name)
    if found is None:
        raise ConfigurationError(f"PostgreSQL's `{name}` is not installed here", hint=_TOOL_HINT)
    return found


_TOOL_HINT = (
    "install PostgreSQL's client programs (apt-get install postgresql-client), of the server's major "
    f"version or newer, or name their folder in {BINDIR_ENV}"
)


def _version_key(path: str) -> tuple[int, ...]:
    part = Path(path).parent.parent.name
    return tuple(int(p) for p in part.split(".") if p.isdigit())


def libpq_url(url: URL) -> str:
    """The libpq connection URI for a SQLAlchemy PostgreSQL URL (no driver name; query options kept)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _run_pg(tool: str, args: list[str], url: URL) -> None:
    program = pg_tool(tool)
    command = [program, f"--dbname={libpq_url(url)}", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=86_400)  # noqa: S603
    except OSError as exc:
        raise ConfigurationError(f"cannot run `{program}`: {exc.strerror or exc}", hint=_TOOL_HINT) from None
    if done.returncode != 0:
        detail = _first_error(done.stderr) or f"exit status {done.returncode}"
        raise ConfigurationError(
            f"{tool} failed on {url.render_as_string(hide_password=True)}: {detail}",
            hint="check the server, the user's rights and the disk; nothing was written",
        )


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line
    return lines[0] if lines else ""


def refuse_non_empty(engine: Engine, force: bool) -> None:
    """Refuse to restore over a database that holds cases or definitions, unless `force`."""
    if force or is_empty(engine):
        return
    raise Conflict(
        f"{engine.url.render_as_string(hide_password=True)} is not empty: it holds sopflow data",
        hint="restore into a new database, or pass --force to replace everything it holds",
    )
