"""Opening a database: URL checks, SQLite's durability settings, PostgreSQL, and Alembic migrations.

SQLite runs in WAL mode with `synchronous=FULL` (a transition reported done survives a power cut) and a
busy timeout; write transactions start with `BEGIN IMMEDIATE` so that two writers queue for the lock up
front instead of failing half-way. `durable=False` selects `synchronous=NORMAL`, which is faster and can
lose the last transactions on a power cut (never corrupts): an explicit opt-in.
"""

from __future__ import annotations

import os
import threading
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.pool import NullPool

from sopflow.engine.errors import ConfigurationError, SopflowError

WRITE = "sopflow_write"
"""Execution option that marks a connection's transaction as a write (BEGIN IMMEDIATE on SQLite)."""

SCHEMA_REVISION = "0004"
"""The Alembic head this code expects (a test keeps it equal to the newest migration). Checking it with
one SELECT keeps Alembic out of every command but `db upgrade` and the first use of a new database."""

BUSY_TIMEOUT_MS = 30_000
URL_HINT = "use sqlite:///path/to/file.db or postgresql+psycopg://user:password@host:5432/dbname"


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(f"`{url}` is not a database URL", hint=URL_HINT) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigurationError(f"database `{parsed.get_backend_name()}` is not supported", hint=URL_HINT)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create(url: str, *, durable: bool = True) -> Engine:
    """An engine for `url`, with sopflow's settings; nothing is connected yet."""
    parsed = parse_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite(parsed, durable)
        return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except NoSuchModuleError as exc:  # pragma: no cover - a broken install
        raise ConfigurationError(f"no driver for `{parsed.drivername}`: {exc}") from None


def _sqlite(url: URL, durable: bool) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:"):
        raise ConfigurationError(
            "an in-memory SQLite database cannot hold cases between commands",
            hint="name a file: sqlite:///sopflow.db",
        )
    folder = Path(database).expanduser().resolve().parent
    if not folder.is_dir():
        raise ConfigurationError(
            f"the folder `{folder}` for the SQLite database does not exist",
            hint="create the folder or point --db at an existing one",
        )
    engine = create_engine(
        url,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "isolation_level": None},
        poolclass=NullPool if url.query.get("pool") == "none" else None,
    )
    sync = "FULL" if durable else "NORMAL"

    @event.listens_for(engine, "connect")
    def _settings(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA synchronous = {sync}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        driver = connection.connection.driver_connection
        if driver.in_transaction:  # a StepTransaction began it; a Core statement ran inside it
            return
        write = connection.get_execution_options().get(WRITE, False)
        # Straight to the driver: this runs once per transaction.
        driver.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


_REVISION = text("SELECT version_num FROM alembic_version")


def current_revision(engine: Engine) -> str | None:
    """The schema revision recorded in the database, or None for a database sopflow has not set up.

    One SELECT that fails on a database without the table: every command runs this, and asking
    SQLAlchemy's inspector first costs more than the answer (two queries and its reflection caches)."""
    with connect_or_explain(engine) as conn:
        try:
            revision = conn.execute(_REVISION).scalar()
        except DBAPIError as exc:
            if _no_such_table(exc):
                return None
            raise
        return None if revision is None else str(revision)


def _no_such_table(exc: DBAPIError) -> bool:
    """Whether the driver said the table does not exist: SQLite's message, PostgreSQL's SQLSTATE 42P01."""
    orig = exc.orig
    return getattr(orig, "sqlstate", None) == "42P01" or "no such table" in str(orig)


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Create or upgrade the schema to `revision` with Alembic; returns the revision now in place."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(files("sopflow.engine.store").joinpath("migrations")))
    with connect_or_explain(engine) as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine) or ""


def ensure_schema(engine: Engine) -> None:
    """Create the schema in an empty database; refuse one whose schema is older than this sopflow."""
    current = current_revision(engine)
    if current == SCHEMA_REVISION:
        return
    if current is None:
        with connect_or_explain(engine) as conn:
            existing = inspect(conn).get_table_names()
        if "cases" in existing:
            raise ConfigurationError(
                "the database has sopflow tables but no migration record",
                hint="point --db at a database that sopflow created",
            )
        upgrade(engine)
        return
    raise ConfigurationError(
        f"the database schema is at revision {current}, this sopflow needs {SCHEMA_REVISION}",
        hint="run `sopflow db upgrade` (back the database up first)",
    )


def _explain_connect(engine: Engine, exc: OperationalError) -> ConfigurationError:
    return ConfigurationError(
        f"cannot open the database {engine.url.render_as_string(hide_password=True)}: "
        f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}",
        hint="check --db (or SOPFLOW_DB), that the server is running and the credentials",
    )


def _explain_failure(engine: Engine, exc: object) -> None:
    """Raise a ConfigurationError for a database that went away, is locked beyond the busy timeout, or is
    not the schema this code expects, instead of an internal error with SQL in it."""
    if isinstance(exc, OperationalError | ProgrammingError) and not isinstance(exc, IntegrityError):
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise ConfigurationError(
            f"the database {engine.url.render_as_string(hide_password=True)} failed: {detail}",
            hint="check that it is reachable and is a sopflow database at this version "
            "(`sopflow db upgrade`); then try again",
        ) from exc


class connect_or_explain:
    """Connect, turning 'cannot connect' into a ConfigurationError that says what to check."""

    def __init__(self, engine: Engine, *, write: bool = False) -> None:
        self.engine = engine
        self.write = write
        self._conn: Any = None

    def __enter__(self) -> Any:
        try:
            conn = self.engine.connect()
        except OperationalError as exc:
            raise _explain_connect(self.engine, exc) from None
        self._conn = conn.execution_options(**{WRITE: True}) if self.write else conn
        return self._conn

    def __exit__(self, exc_type: object, exc: object, _tb: object) -> None:
        self._conn.close()
        _explain_failure(self.engine, exc)


class StepTransaction:
    """A write transaction begun and ended on the driver connection under `conn`, for the hot path of a
    step: SQLAlchemy's `Transaction` (its objects, events and state checks) costs as much as one of the
    step's statements. `BEGIN IMMEDIATE` on SQLite; psycopg begins by itself with the first statement.

    A Core statement run inside it makes SQLAlchemy begin its own transaction (its `begin` listener sees
    the driver's and sends nothing): the end then goes through SQLAlchemy, so both agree again. Driver
    errors come out as SQLAlchemy's wrappers, as everywhere in the store.
    """

    __slots__ = ("_conn", "_driver", "active")

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._driver = conn.connection.driver_connection
        self.active = True
        if conn.dialect.name == "sqlite":
            self._call("BEGIN IMMEDIATE", self._driver.execute, "BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.active = False
        if self._conn.in_transaction():
            self._conn.commit()
        else:
            self._call("COMMIT", self._driver.commit)

    def rollback(self) -> None:
        self.active = False
        if self._conn.in_transaction():
            self._conn.rollback()
        else:
            self._call("ROLLBACK", self._driver.rollback)

    def _call(self, sql: str, method: Any, *args: Any) -> None:
        dbapi = self._conn.dialect.loaded_dbapi
        try:
            method(*args)
        except dbapi.Error as exc:
            self.active = False
            raise DBAPIError.instance(sql, (), exc, dbapi.Error, dialect=self._conn.dialect) from exc


IDLE_RECHECK_S = 1.0
"""A held PostgreSQL connection idle longer than this goes back to the pool and is checked out afresh,
with the pool's pre-ping, before its next use: a server restart between two steps costs nothing."""


_INHERITED: list[Any] = []
"""Connections a forked child found its parent holding, referenced for the child's whole life: were
one collected, SQLAlchemy would reset it (a ROLLBACK) and psycopg close it, on the parent's session.
At most one per store and fork; the one piece of module state in the store, and it only grows in a
child that forks with a store open."""


class WriteConnection:
    """The one connection a Store keeps checked out for its write transactions.

    A step is a short transaction; checking a connection out of SQLAlchemy's pool and back in (the
    checkout and checkin events, the reset, the pre-ping round trip on PostgreSQL) cost as much as the
    step's statements, so the store keeps one connection for writes and hands it to one caller at a time.
    A second thread that finds it busy takes a pooled connection as before, so threads never queue here.

    In a forked child (`own_process`, called before every use of the store's connections) the parent's
    connections are left alone: the held one is kept referenced and never used, the pool is replaced
    without closing what it held (SQLAlchemy's `dispose(close=False)`), and the lock, which another
    thread of the parent may have held at the fork, is a new one. The child then opens its own.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = os.getpid()
        self._last_used = 0.0
        self._recheck = engine.dialect.name == "postgresql"

    def own_process(self) -> None:
        """After a fork, leave the parent's connections to the parent (see the class)."""
        if self._pid == os.getpid():
            return
        if self._conn is not None:
            _INHERITED.append(self._conn)
            self._conn = None
        self._lock = threading.Lock()
        self.engine.dispose(close=False)
        self._pid = os.getpid()

    def __call__(self) -> Any:
        """A context manager yielding a write connection: the held one if it is free, else a pooled one."""
        self.own_process()
        if self._lock.acquire(blocking=False):
            return _Held(self)
        return connect_or_explain(self.engine, write=True)

    def _take(self) -> Any:
        conn = self._conn
        if conn is not None and (
            conn.closed
            or conn.invalidated
            or (self._recheck and time.monotonic() - self._last_used > IDLE_RECHECK_S)
        ):
            conn.close()
            conn = None
        if conn is None:
            self._conn = None
            try:
                conn = self.engine.connect().execution_options(**{WRITE: True})
            except OperationalError as exc:
                raise _explain_connect(self.engine, exc) from None
            self._conn = conn
        return conn

    def _give_back(self, failed: bool) -> None:
        conn = self._conn
        if conn is None:
            return
        if failed:
            # A database error may have left the connection broken: return it to the pool, which rolls
            # back and discards it if it is. (A refusal or a conflict the engine raises leaves it clean.)
            conn.close()
            self._conn = None
            return
        if conn.in_transaction():  # a read after the step's end (a replayed key) began one
            conn.rollback()
        elif _driver_in_transaction(conn):  # never left so by the store; never handed on so either
            conn.connection.driver_connection.rollback()
        self._last_used = time.monotonic()

    def close(self) -> None:
        """Return the held connection to the pool (before the engine is disposed)."""
        self.own_process()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None


def _driver_in_transaction(conn: Any) -> bool:
    """Whether the driver connection under `conn` is inside a transaction (sqlite3 or psycopg)."""
    driver = conn.connection.driver_connection
    inside = getattr(driver, "in_transaction", None)
    if inside is not None:
        return bool(inside)
    return int(driver.info.transaction_status) != 0  # psycopg: 0 is IDLE, outside any transaction


class _Held:
    def __init__(self, owner: WriteConnection) -> None:
        self.owner = owner

    def __enter__(self) -> Any:
        try:
            return self.owner._take()
        except BaseException:
            self.owner._lock.release()
            raise

    def __exit__(self, exc_type: object, exc: object, _tb: object) -> None:
        try:
            self.owner._give_back(failed=exc is not None and not isinstance(exc, SopflowError))
        finally:
            self.owner._lock.release()
        _explain_failure(self.owner.engine, exc)
