"""Opening a database: URL checks, SQLite's durability settings, PostgreSQL, and Alembic migrations.

SQLite runs in WAL mode with `synchronous=FULL` (a transition reported done survives a power cut) and a
busy timeout; write transactions start with `BEGIN IMMEDIATE` so that two writers queue for the lock up
front instead of failing half-way. `durable=False` selects `synchronous=NORMAL`, which is faster and can
lose the last transactions on a power cut (never corrupts): an explicit opt-in.

PostgreSQL connections get a connect timeout and a statement timeout unless the URL (or libpq's
environment) sets them, so that a server that accepts connections but never answers fails the command.

A database failure becomes one of two errors: `DatabaseUnavailable` when trying again later may work (the
server is down or restarting, a lost connection, SQLite's lock held past the busy timeout, a full disk, a
statement past its timeout), `ConfigurationError` when a person must act (credentials, a database that
does not exist, the wrong schema). Each names the cure in its hint. A connection that broke is discarded
from the pool without the reset (a ROLLBACK) that would fail on it and log a traceback.
"""

from __future__ import annotations

import contextlib
import logging
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
    SQLAlchemyError,
)
from sqlalchemy.pool import NullPool

from sopflow.engine.errors import ConfigurationError, DatabaseUnavailable, OutcomeUnknown, SopflowError

log = logging.getLogger("sopflow.store")

WRITE = "sopflow_write"
"""Execution option that marks a connection's transaction as a write (BEGIN IMMEDIATE on SQLite)."""

SCHEMA_REVISION = "0014"
"""The Alembic head this code expects (a test keeps it equal to the newest migration). Checking it with
one SELECT keeps Alembic out of every command but `db upgrade` and the first use of a new database."""

BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for the write lock by default; `?timeout=SECONDS` in the URL changes it."""
LOCK_NOTICE_MS = 1_000
"""A writer still waiting for SQLite's write lock after this long says so (a warning on `sopflow.store`,
which the CLI prints on stderr) and goes on waiting for the rest of the busy timeout."""
LOCK_WAIT = "sopflow_lock_wait"
"""Set (true) on the log record of that notice, so that a caller who reports the failure itself (a worker
retrying) can drop it."""
CONNECT_TIMEOUT_S = 10
"""PostgreSQL: the default seconds to wait for a connection (URL `?connect_timeout=`; PGCONNECT_TIMEOUT)."""
STATEMENT_TIMEOUT_MS = 60_000
"""PostgreSQL: the default longest statement (URL `?options=-c statement_timeout=…`, or PGOPTIONS); a
schema upgrade is exempt."""
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
        return create_engine(
            parsed, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args=_postgres_args(parsed)
        )
    except NoSuchModuleError as exc:  # pragma: no cover - a broken install
        raise ConfigurationError(f"no driver for `{parsed.drivername}`: {exc}") from None


def _postgres_args(url: URL) -> dict[str, Any]:
    """The timeouts sopflow adds to a PostgreSQL connection, unless the URL or libpq's environment sets
    them (SQLAlchemy's connect arguments would override the URL's)."""
    args: dict[str, Any] = {}
    if "connect_timeout" not in url.query and "PGCONNECT_TIMEOUT" not in os.environ:
        args["connect_timeout"] = CONNECT_TIMEOUT_S
    # libpq reads PGOPTIONS only when the URL has no `options`; this argument replaces both, so it
    # carries on whichever was given (a search_path, say) with the timeout added.
    given = url.query.get("options", os.environ.get("PGOPTIONS", ""))
    options = given if isinstance(given, str) else " ".join(given)
    if "statement_timeout" not in options:
        args["options"] = f"{options} -c statement_timeout={STATEMENT_TIMEOUT_MS}".strip()
    return args


def _busy_timeout_ms(url: URL) -> int:
    raw = url.query.get("timeout")
    if raw is None:
        return BUSY_TIMEOUT_MS
    try:
        seconds = float(raw if isinstance(raw, str) else raw[-1])
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86_400:
        raise ConfigurationError(
            f"`timeout={raw}` in the SQLite URL is not a number of seconds",
            hint="give the seconds a writer waits for the lock, e.g. sqlite:///sopflow.db?timeout=30",
        )
    return int(seconds * 1000)


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
    if Path(database).expanduser().is_dir():
        raise ConfigurationError(
            f"`{database}` is a folder, not a SQLite database file",
            hint=f"name a file in it: sqlite:///{Path(database) / 'sopflow.db'}",
        )
    busy_ms = _busy_timeout_ms(url)
    engine = create_engine(
        url,
        connect_args={"timeout": busy_ms / 1000, "isolation_level": None},
        poolclass=NullPool if url.query.get("pool") == "none" else None,
    )
    sync = "FULL" if durable else "NORMAL"
    notice_ms = min(LOCK_NOTICE_MS, busy_ms)

    @event.listens_for(engine, "connect")
    def _settings(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA synchronous = {sync}")
        cursor.execute("PRAGMA foreign_keys = ON")
        # Every write begins with BEGIN IMMEDIATE (`begin_immediate`), which waits for the lock in two
        # parts so it can say that it waits; readers in WAL mode do not wait for the writer.
        cursor.execute(f"PRAGMA busy_timeout = {notice_ms}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        driver = connection.connection.driver_connection
        if driver.in_transaction:  # a StepTransaction began it; a Core statement ran inside it
            return
        write = connection.get_execution_options().get(WRITE, False)
        # Straight to the driver: this runs once per transaction. SQLAlchemy does not wrap what a `begin`
        # listener raises, so the driver's error is wrapped here, as every other one in the store is.
        dbapi = engine.dialect.loaded_dbapi
        try:
            if write:
                begin_immediate(driver, engine)
            else:
                driver.execute("BEGIN")
        except dbapi.Error as exc:
            raise DBAPIError.instance("BEGIN", (), exc, dbapi.Error, dialect=engine.dialect) from exc

    return engine


def begin_immediate(driver: Any, engine: Engine) -> None:
    """`BEGIN IMMEDIATE` on a SQLite driver connection whose busy timeout is `LOCK_NOTICE_MS`: when the
    lock is not free by then, say so and wait for the rest of the configured busy timeout."""
    try:
        driver.execute("BEGIN IMMEDIATE")
        return
    except engine.dialect.loaded_dbapi.OperationalError as exc:
        if not _locked(str(exc)):
            raise
    busy_ms = _busy_timeout_ms(engine.url)
    notice_ms = min(LOCK_NOTICE_MS, busy_ms)
    if busy_ms <= notice_ms:
        driver.execute("BEGIN IMMEDIATE")  # raises "database is locked" again: the wait is over
        return
    log.warning(
        "waiting up to %g s more for the write lock of %s: another process holds it (a sopflow command "
        "or worker in a long write, or a tool such as the sqlite3 shell or a backup in a write transaction)",
        round((busy_ms - notice_ms) / 1000, 1),
        engine.url.database,
        extra={LOCK_WAIT: True},
    )
    driver.execute(f"PRAGMA busy_timeout = {busy_ms - notice_ms}")
    try:
        driver.execute("BEGIN IMMEDIATE")
    finally:
        driver.execute(f"PRAGMA busy_timeout = {notice_ms}")


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
    # A write transaction from the start: SQLite's lock is waited for up front, as for every write.
    with connect_or_explain(engine, write=True) as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            # Building an index on a large table may take longer than a statement is otherwise allowed.
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
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


LOCKED_HINT = (
    "another process holds SQLite's write lock: a sopflow command or worker in a long write, or a tool "
    "with the file open in a write transaction (the sqlite3 shell, a backup or copy program, a migration "
    "script); finish or stop it and try again (a worker retries by itself)"
)
_FULL_HINT = (
    "free space on the disk that holds the database (and its -wal file), then try again; "
    "nothing of this command was written"
)
_DOWN_HINT = (
    "the server is down, restarting or unreachable: check that it is running and that --db (or "
    "SOPFLOW_DB) points at it, then try again (a worker retries by itself)"
)
_TIMEOUT_HINT = (
    f"a statement ran longer than PostgreSQL's statement_timeout ({STATEMENT_TIMEOUT_MS // 1000} s unless "
    "the URL's `options` set it): look for a long transaction holding a lock on sopflow's tables, or raise "
    "it, e.g. ?options=-c%20statement_timeout%3D120000"
)
_PG_LOCK_HINT = (
    "another transaction held a lock sopflow needed (past lock_timeout, or in a deadlock): look for a long "
    "transaction on sopflow's tables (pg_stat_activity), then try again (a worker retries by itself)"
)
_CREDENTIALS_HINT = "check the user name and password in --db (or SOPFLOW_DB) and the server's pg_hba.conf"
_MISSING_HINT = "create the database first (`createdb`), or fix its name in --db (or SOPFLOW_DB)"
_SCHEMA_HINT = (
    "check that --db points at a sopflow database at this version (`sopflow db upgrade`); then try again"
)
_PERMANENT_SQLSTATES = {"28000": _CREDENTIALS_HINT, "28P01": _CREDENTIALS_HINT, "3D000": _MISSING_HINT}
_PERMANENT_WORDS = (
    ("password authentication failed", _CREDENTIALS_HINT),
    ("no pg_hba.conf entry", _CREDENTIALS_HINT),
    ("authentication failed", _CREDENTIALS_HINT),
    ("role \"", _CREDENTIALS_HINT),
    ("database \"", _MISSING_HINT),
    ("unable to open database file", "check --db: the file's folder must exist and be writable"),
    ("file is not a database", "--db names a file that is not a SQLite database"),
    ("readonly database", "the database file (or its folder) is read-only: give this user write access"),
    ("no such table", _SCHEMA_HINT),
    ("no such column", _SCHEMA_HINT),
    ("has no column", _SCHEMA_HINT),
)
_SQLITE_HINT = "check the disk that holds the database file and its -wal file; then try again"


def _locked(message: str) -> bool:
    return "database is locked" in message or "database table is locked" in message


def _first_line(exc: DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig and str(exc.orig).strip() else type(exc).__name__


def classify(engine: Engine, exc: DBAPIError, *, connecting: bool = False) -> ConfigurationError:
    """The error to raise for a database failure: `DatabaseUnavailable` when trying again later may work,
    a plain ConfigurationError when a person must change something; each with the hint that fits."""
    where = engine.url.render_as_string(hide_password=True)
    detail = _first_line(exc)
    if connecting:
        what = f"cannot open the database {where}: {detail}"
    else:
        what = f"the database {where} failed: {detail}"
    message = str(exc.orig) if exc.orig else detail
    state = getattr(exc.orig, "sqlstate", None)
    if state in _PERMANENT_SQLSTATES:
        return ConfigurationError(what, hint=_PERMANENT_SQLSTATES[state])
    if _locked(message):
        busy = _busy_timeout_ms(engine.url) / 1000
        return DatabaseUnavailable(
            f"the database {where} is locked: the write lock was still held after {busy:g} s",
            hint=LOCKED_HINT,
        )
    if "database or disk is full" in message or state == "53100":
        return DatabaseUnavailable(f"the database {where} is full: {detail}", hint=_FULL_HINT)
    if state == "57014":
        return DatabaseUnavailable(what, hint=_TIMEOUT_HINT)
    if state in ("55P03", "40P01"):
        return DatabaseUnavailable(what, hint=_PG_LOCK_HINT)
    if isinstance(exc, ProgrammingError) or (state or "").startswith("42"):
        return ConfigurationError(what, hint=_SCHEMA_HINT)
    for words, hint in _PERMANENT_WORDS:
        if words in message:
            return ConfigurationError(what, hint=hint)
    if engine.dialect.name == "sqlite":
        return DatabaseUnavailable(what, hint=_SQLITE_HINT)
    return DatabaseUnavailable(what, hint=_DOWN_HINT)


def _explain_connect(engine: Engine, exc: OperationalError) -> ConfigurationError:
    return classify(engine, exc, connecting=True)


def _explain_failure(engine: Engine, exc: object) -> None:
    """Raise `classify`'s error for a database that went away, is locked beyond the busy timeout, is
    full, or is not the schema this code expects, instead of an internal error with SQL in it."""
    if isinstance(exc, OperationalError | ProgrammingError) and not isinstance(exc, IntegrityError):
        raise classify(engine, exc) from exc


def discard_if_broken(conn: Any) -> None:
    """Invalidate `conn` when its driver connection is broken (a PostgreSQL connection the server ended),
    so that closing it drops it instead of resetting it: the pool's reset would fail and log a traceback."""
    if conn.invalidated or conn.closed:
        return
    try:
        driver = conn.connection.driver_connection
    except DBAPIError:  # pragma: no cover - a connection that cannot even be reached is invalid already
        return
    if getattr(driver, "broken", False) or getattr(driver, "closed", False) is True:
        conn.invalidate()


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
        if exc is not None:
            discard_if_broken(self._conn)
        try:
            self._conn.close()
        except DBAPIError:
            # The server ended the connection after the work inside was done (a PostgreSQL restart, or
            # `pg_terminate_backend`): closing rolls back the read's transaction on a connection that is
            # gone. What was read or committed stands; the connection is dropped, not returned.
            _drop(self._conn)
        _explain_failure(self.engine, exc)


def _drop(conn: Any) -> None:
    """Invalidate a connection whose closing failed, so that the pool opens a new one in its place."""
    # SQLAlchemy's own disconnect handling may have invalidated it already.
    with contextlib.suppress(SQLAlchemyError):
        conn.invalidate()


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
            self._call("BEGIN IMMEDIATE", begin_immediate, self._driver, conn.engine)

    def commit(self) -> None:
        """COMMIT; `OutcomeUnknown` when it fails. The server may have committed before the connection
        broke (or committed nothing): only a retry under the write's idempotency key can tell, so this is
        never reported as a database failure, whose advice to try again would apply the write twice."""
        self.active = False
        try:
            if self._conn.in_transaction():
                self._conn.commit()
            else:
                self._call("COMMIT", self._driver.commit)
        except IntegrityError:
            raise  # a constraint checked at COMMIT refused it: nothing was stored
        except DBAPIError as exc:
            discard_if_broken(self._conn)
            detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise OutcomeUnknown(
                f"the database connection failed while committing ({detail})",
                hint="it may have been stored: look (`sopflow history CASE`) before doing it again",
            ) from exc

    def rollback(self) -> None:
        self.active = False
        if self._conn.invalidated:  # the connection broke: the server has ended the transaction
            return
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
            discard_if_broken(self._conn)
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
            # back, or drop it if it is broken. (A refusal or a conflict the engine raises leaves it clean.)
            discard_if_broken(conn)
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
            # An unknown outcome or an unavailable database may have broken the connection, unlike the
            # engine's other errors (a refusal, a conflict).
            failure = isinstance(exc, OutcomeUnknown | DatabaseUnavailable)
            broken = failure or not isinstance(exc, SopflowError)
            self.owner._give_back(failed=exc is not None and broken)
        finally:
            self.owner._lock.release()
        _explain_failure(self.owner.engine, exc)
