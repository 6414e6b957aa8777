"""Faults injected while sopflow runs, with real processes: PostgreSQL restarted, crashed and down for a
few seconds under workers and a writer; SQLite's write lock held by another process past the busy
timeout; a full SQLite database; a PostgreSQL connection ended in the middle of a step; a server that
accepts connections and never answers; a statement stuck behind a lock; a worker killed in the middle of
a webhook call.

Every time: the data holds, each timer due meanwhile fires exactly once, the worker keeps going, and
what reaches stderr is one clear message with the right hint, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from sopflow.engine.errors import ConfigurationError, DatabaseUnavailable
from sopflow.engine.runtime import Engine
from sopflow.engine.store import database
from tests.conftest import MINI, ROOT, Clock, _unavailable, engine_on, fresh_postgres_database
from tests.helpers.faults import FaultyCluster, clean, sopflow, spawn
from tests.helpers.pgcluster import postgres_bindir

PING = ROOT / "tests" / "fixtures" / "ping"
LOCK_HINT = "another process holds SQLite's write lock"


def ping_cases_due(url: str, offsets: list[float]) -> tuple[list[int], datetime]:
    """One ping case per offset whose one-minute deadline falls due that many seconds from now; returns
    their ids and the moment the offsets count from."""
    origin = datetime.now(UTC)
    clock = Clock()
    ids = []
    with Engine(url, clock=clock) as setup:
        setup.deploy([PING])
        for n, offset in enumerate(offsets):
            clock.now = origin - timedelta(minutes=1) + timedelta(seconds=offset)
            ids.append(setup.start("ping", {"n": n}, actor="alice").case.id)
    return ids, origin


def breaches(engine: Engine, ids: list[int]) -> dict[int, int]:
    return {i: [r.event for r in engine.history(i)].count("deadline_breached") for i in ids}


def wait_for_breaches(url: str, ids: list[int], timeout: float) -> dict[int, int]:
    """The breach count of each case once every one has been breached (or `timeout` ran out); reads
    again while the database is still coming back."""
    ends = time.monotonic() + timeout
    found: dict[int, int] = {}
    while time.monotonic() < ends:
        try:
            with Engine(url) as engine:
                found = breaches(engine, ids)
        except DatabaseUnavailable:
            time.sleep(0.2)
            continue
        if all(found.values()):
            return found
        time.sleep(0.3)
    return found


def stop_all(processes: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    results = []
    for p in processes:
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        results.append((p.returncode, out, err))
    return results


# -- PostgreSQL restarted, crashed, down -------------------------------------------------------------


@pytest.fixture(scope="module")
def faulty() -> Iterator[tuple[FaultyCluster, str]]:
    """A PostgreSQL cluster of this module's own, to restart and crash without touching the suite's."""
    if os.environ.get("SOPFLOW_TEST_POSTGRES"):
        pytest.skip("restarting a server needs a cluster the tests start themselves")
    bindir = postgres_bindir()
    if bindir is None:
        _unavailable("no /usr/lib/postgresql/*/bin (apt-get install postgresql)")
        return
    cluster = FaultyCluster(bindir)
    try:
        server = cluster.start()
    except (subprocess.CalledProcessError, KeyError, OSError) as exc:
        cluster.stop()
        _unavailable(f"could not start a cluster: {exc}")
        return
    yield cluster, server
    cluster.stop()


def _inject(cluster: FaultyCluster, fault: str) -> None:
    if fault == "restart":
        cluster.restart_fast()
    elif fault == "crash":
        cluster.crash()
        time.sleep(0.5)
        cluster.start_again()
    else:  # an outage: the 10 s, shortened; the worker's backoff behaves the same
        cluster.stop_fast()
        time.sleep(3)
        cluster.start_again()


@pytest.mark.slow
@pytest.mark.postgres
def test_an_embedding_process_outlives_its_connections_ended_between_its_reads(
    faulty: tuple[FaultyCluster, str],
) -> None:
    """The server ends every connection of the database ten times a second (what a restart does to an
    idle one): a read that had finished still closes its connection, whose ROLLBACK then fails. That
    failure is the connection's, not the read's: the process goes on, with no traceback."""
    import psycopg

    _cluster, server = faulty
    url = fresh_postgres_database(server)
    ping_cases_due(url, [3600.0])
    writer = spawn("tests.helpers.outage_writer", url)
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    try:
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as admin:
            for _ in range(40):
                time.sleep(0.1)
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND datname = current_database()"
                )
        alive = writer.poll() is None
    finally:
        ((code, out, err),) = stop_all([writer])
    assert alive, err
    assert code == 0, err
    clean(err)
    assert int(out.split()[-3]) > 0  # `written N failed M`: it kept writing between the terminations


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("fault", ["restart", "crash", "outage"])
def test_workers_ride_out_a_postgres_fault_and_fire_each_timer_due_meanwhile_once(
    faulty: tuple[FaultyCluster, str], fault: str, tmp_path: Path
) -> None:
    cluster, server = faulty
    url = fresh_postgres_database(server)
    ids, _origin = ping_cases_due(url, [1.0 + 0.25 * n for n in range(24)])  # due over the next 7 s
    health = tmp_path / "health.json"
    worker_args = ("worker", "--idle", "0.2", "--max-backoff", "1", "--lease", "5")
    workers = [
        spawn("sopflow", "--db", url, *worker_args, "--health-file", str(health)),
        spawn("sopflow", "--db", url, *worker_args),
    ]
    writer = spawn("tests.helpers.outage_writer", url)
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    try:
        time.sleep(2.0)  # the workers are up and have fired the first timers
        _inject(cluster, fault)
        found = wait_for_breaches(url, ids, timeout=60)
        time.sleep(1.0)  # a timer fired twice would show by now
        alive = [p.poll() is None for p in (*workers, writer)]
    finally:
        results = stop_all([*workers, writer])
    assert alive == [True, True, True], [r[2] for r in results]
    for code, _out, err in results:
        assert code == 0, err
        clean(err)
    assert found == {i: 1 for i in ids}
    with Engine(url) as engine:
        assert breaches(engine, ids) == {i: 1 for i in ids}
        assert engine.verify().ok
    assert "written" in results[2][1]
    if fault == "outage":
        said = results[0][2] + results[1][2]
        assert "retrying with backoff" in said and "the database answers again" in said
        # Logged when it starts and when its message changes (ended by the server, then refused, then
        # starting up), not at every retry: a few lines per worker, not one per attempt.
        for _code, _out, err in results[:2]:
            assert err.count("retrying with backoff") <= 4, err
    state = json.loads(health.read_text())
    assert state["state"] == "running" and state["last_success"] is not None


@pytest.mark.slow
@pytest.mark.postgres
def test_a_worker_started_while_the_server_is_down_waits_for_it(
    faulty: tuple[FaultyCluster, str], tmp_path: Path
) -> None:
    cluster, server = faulty
    url = fresh_postgres_database(server)
    ids, _origin = ping_cases_due(url, [0.0, 0.5])
    health = tmp_path / "health.json"
    cluster.stop_fast()
    try:
        worker = spawn(
            "sopflow", "--db", url, "worker", "--idle", "0.2", "--max-backoff", "1",
            "--health-file", str(health),
        )  # fmt: skip
        time.sleep(2.5)
        assert worker.poll() is None
    finally:
        cluster.start_again()
    found = wait_for_breaches(url, ids, timeout=30)
    ((code, _out, err),) = stop_all([worker])
    assert code == 0, err
    clean(err)
    assert "cannot open the database" in err and "the database answers; starting" in err
    assert found == {i: 1 for i in ids}


def test_a_connection_ended_in_the_middle_of_a_step_logs_no_traceback(
    postgres_server: str, clock: Clock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    monkeypatch.setattr(database, "IDLE_RECHECK_S", 3600)  # the held connection is used as it is
    url = fresh_postgres_database(postgres_server)
    for engine in engine_on(url, clock, MINI):
        case_id = engine.start("expense", {"amount": 5, "purpose": "x"}, actor="alice").case.id
        plain = engine.store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(plain, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="sqlalchemy.pool"):
            with pytest.raises(DatabaseUnavailable) as caught:
                engine.fire(case_id, "submit", actor="alice")
            assert "terminating connection due to administrator command" in caught.value.message
            assert "restarting or unreachable" in (caught.value.hint or "")
            engine.fire(case_id, "submit", actor="alice")  # the next step gets a new connection
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
        assert engine.case(case_id).state != "draft"


# -- PostgreSQL timeouts -------------------------------------------------------------------------------


def test_a_server_that_accepts_and_never_answers_fails_after_the_connect_timeout(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])  # accepted, and never a byte back
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = silent.getsockname()[1]
    try:
        began = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as caught:
            Engine(f"postgresql+psycopg://sopflow@127.0.0.1:{port}/sopflow?connect_timeout=2")
        assert time.monotonic() - began < 15
        assert "cannot open the database" in caught.value.message
        done = sopflow("--db", f"postgresql+psycopg://sopflow@127.0.0.1:{port}/db?connect_timeout=2", "list")
        assert done.returncode == 2, done.stderr
        clean(done.stderr)
    finally:
        stop.set()
        thread.join()
        for s in held:
            s.close()
        silent.close()


def test_postgres_connections_get_default_timeouts_that_the_url_overrides(
    postgres_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    monkeypatch.delenv("PGOPTIONS", raising=False)
    url = fresh_postgres_database(postgres_server)
    for given, expected in ((url, "1min"), (url + "?options=-c%20statement_timeout%3D1500", "1500ms")):
        engine = database.create(given)
        try:
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == expected
        finally:
            engine.dispose()
    assert database._postgres_args(database.parse_url(url))["connect_timeout"] == database.CONNECT_TIMEOUT_S
    assert "connect_timeout" not in database._postgres_args(database.parse_url(url + "?connect_timeout=3"))
    # Other options in the URL are kept, with the timeout added.
    engine = database.create(url + "?options=-c%20search_path%3Dnowhere")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "1min"
            assert conn.exec_driver_sql("SHOW search_path").scalar() == "nowhere"
    finally:
        engine.dispose()


def test_a_step_stuck_behind_a_lock_ends_at_the_statement_timeout_with_its_hint(
    postgres_server: str, clock: Clock
) -> None:
    import psycopg

    url = fresh_postgres_database(postgres_server)
    for engine in engine_on(url + "?options=-c%20statement_timeout%3D500", clock, MINI):
        case_id = engine.start("expense", {"amount": 5, "purpose": "x"}, actor="alice").case.id
        plain = engine.store.engine.url.set(drivername="postgresql", query={}).render_as_string(
            hide_password=False
        )
        with psycopg.connect(plain) as blocker:
            blocker.execute("SELECT id FROM cases WHERE id = %s FOR UPDATE", (case_id,))
            with pytest.raises(DatabaseUnavailable) as caught:
                engine.fire(case_id, "submit", actor="alice")
            blocker.rollback()
        assert "statement timeout" in caught.value.message
        assert "statement_timeout" in (caught.value.hint or "")
        engine.fire(case_id, "submit", actor="alice")


# -- SQLite: the write lock held past the busy timeout, a full disk --------------------------------------


@pytest.fixture
def locked_db(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A SQLite database with the mini definitions and one case, whose URL waits 1 s for the lock."""
    path = tmp_path / "ops.db"
    with Engine(f"sqlite:///{path}") as setup:
        setup.deploy([MINI])
        setup.start("expense", {"amount": 5, "purpose": "x"}, actor="alice")
    yield f"sqlite:///{path}?timeout=1", path


def _hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    holder = spawn("tests.helpers.lock_holder", str(path), str(seconds))
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.slow
def test_a_lock_held_past_the_timeout_is_exit_2_with_the_lock_hint_from_every_command(
    locked_db: tuple[str, Path],
) -> None:
    url, path = locked_db
    holder = _hold_lock(path, 120)
    try:
        commands = [
            ("--as", "alice", "start", "expense", "--data", '{"amount": 1, "purpose": "y"}'),
            ("--as", "alice", "fire", "1", "submit"),
            ("tick",),
            ("deploy", str(PING)),
            ("--as", "alice", "delegate", "bob", "--until", "2099-01-01T00:00:00+00:00"),
            ("--as", "mia", "reassign", "1", "bob"),
            ("db", "upgrade"),
        ]
        for args in commands:
            done = sopflow("--db", url, *args)
            assert done.returncode == 2, (args, done.stdout, done.stderr)
            clean(done.stderr)
            assert "is locked: the write lock was still held after 1 s" in done.stderr, (args, done.stderr)
            assert LOCK_HINT in done.stderr and "sqlite3 shell" in done.stderr
        # Reading goes on: WAL readers never wait for the writer.
        assert sopflow("--db", url, "list").returncode == 0
        # A writer that waits longer than a second says that it waits, and for what.
        done = sopflow("--db", url.replace("timeout=1", "timeout=2"), "--as", "alice", "fire", "1", "submit")
        assert done.returncode == 2
        assert "waiting up to 1 s more for the write lock of" in done.stderr, done.stderr
        assert "another process holds it" in done.stderr
    finally:
        holder.kill()
        holder.communicate()


@pytest.mark.slow
def test_the_worker_keeps_going_while_the_lock_is_held_and_fires_what_fell_due(tmp_path: Path) -> None:
    path = tmp_path / "ops.db"
    ids, _origin = ping_cases_due(f"sqlite:///{path}", [1.0, 1.5, 2.0, 2.5])
    worker = spawn(
        "sopflow", "--db", f"sqlite:///{path}?timeout=1", "worker", "--idle", "0.2", "--max-backoff", "1"
    )
    time.sleep(1.2)
    holder = _hold_lock(path, 3)
    holder.communicate(timeout=30)
    found = wait_for_breaches(f"sqlite:///{path}", ids, timeout=30)
    alive = worker.poll() is None
    ((code, _out, err),) = stop_all([worker])
    assert alive and code == 0, err
    clean(err)
    assert found == {i: 1 for i in ids}
    assert err.count("is locked: the write lock was still held after 1 s") == 1, err
    assert "the database answers again" in err


def test_a_full_database_says_free_space_and_writes_nothing(tmp_path: Path, clock: Clock) -> None:
    from sqlalchemy import event

    path = tmp_path / "full.db"
    for engine in engine_on(f"sqlite:///{path}", clock, MINI):
        limit = f"PRAGMA max_page_count = {path.stat().st_size // 4096 + 2}"

        @event.listens_for(engine.store.engine, "connect")
        def _small(dbapi_connection: object, _record: object, limit: str = limit) -> None:
            dbapi_connection.execute(limit)  # type: ignore[attr-defined]

        engine.store.close()
        started = 0
        with pytest.raises(DatabaseUnavailable) as caught:
            for n in range(10_000):
                engine.start("expense", {"amount": n, "purpose": "x" * 2000}, actor="alice")
                started += 1
        assert "is full" in caught.value.message
        assert "free space" in (caught.value.hint or "")
        assert engine.store.count_cases() == started
        assert engine.verify().ok


def test_a_worker_gives_up_on_what_no_retry_can_fix(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with Engine(f"sqlite:///{path}") as setup:
        setup.deploy([MINI])
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    done = sopflow("--db", f"sqlite:///{path}", "worker", "--max-backoff", "1", timeout=60)
    assert done.returncode == 2, done.stderr
    clean(done.stderr)
    assert "schema is at revision 0001" in done.stderr and "sopflow db upgrade" in done.stderr
    with pytest.raises(ConfigurationError) as caught:
        Engine(f"sqlite:///{path}")
    assert not isinstance(caught.value, DatabaseUnavailable)


@pytest.mark.parametrize("wrong", ["user", "database"])
def test_a_worker_gives_up_on_a_postgres_login_no_retry_can_fix(postgres_server: str, wrong: str) -> None:
    url = fresh_postgres_database(postgres_server)
    if wrong == "user":
        url = url.replace("postgres@", "nobody@")
        words, hint = 'role "nobody" does not exist', "user name and password"
    else:
        url += "_gone"
        words, hint = "does not exist", "create the database first"
    done = sopflow("--db", url, "worker", "--max-backoff", "1", timeout=60)
    assert done.returncode == 2, done.stderr
    clean(done.stderr)
    assert words in done.stderr and hint in done.stderr
    assert "retrying" not in done.stderr


def test_the_systemd_unit_in_the_docs_names_options_the_worker_has() -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    unit = text.split("```ini\n", 1)[1].split("```", 1)[0]
    start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    options = [word for word in start.split() if word.startswith("--")]
    usage = sopflow("worker", "--help").stdout
    assert options and all(option in usage for option in options), (options, usage)
    assert "Restart=always" in unit


# -- the worker's loop, in-process ---------------------------------------------------------------------


@pytest.fixture
def engine(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, MINI)


def test_the_loop_backs_off_through_failures_reports_its_health_and_fires_once(
    engine: Engine, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sopflow.engine.errors import OutcomeUnknown
    from sopflow.engine.worker import Health, Worker

    case_id = engine.start("expense", {"amount": 5, "purpose": "x"}, actor="alice").case.id
    engine.fire(case_id, "submit", actor="alice")
    clock.advance(days=2)
    store = engine.store
    real_claim, real_fire = store.claim_timers, store.fire_timer
    failures = [DatabaseUnavailable("the database went away"), DatabaseUnavailable("still away")]

    def claim(*args: object, **kwargs: object) -> object:
        if failures:
            raise failures.pop(0)
        return real_claim(*args, **kwargs)  # type: ignore[arg-type]

    unknown = [OutcomeUnknown("the connection failed while committing")]

    def fire(*args: object, **kwargs: object) -> object:
        fired = real_fire(*args, **kwargs)  # type: ignore[arg-type]
        if unknown:  # committed, and the answer lost on the way back
            raise unknown.pop(0)
        return fired

    monkeypatch.setattr(store, "claim_timers", claim)
    monkeypatch.setattr(store, "fire_timer", fire)
    stop = threading.Event()
    seen: list[dict[str, object]] = []

    def on_health(health: Health) -> None:
        seen.append(health.as_dict())
        if health.last_success is not None and not failures and not unknown and len(seen) > 4:
            stop.set()

    worker = Worker(engine, retry_cap=0.5, channels=[])
    worker.run(stop, idle=0.05, on_health=on_health)
    states = [s["state"] for s in seen]
    assert states[0] == "waiting for the database" and states[-1] == "running"
    assert seen[0]["last_error"] == "the database went away" and seen[1]["failures"] == 2
    assert worker.health.failing_since is None and worker.health.failures == 0
    events = [r.event for r in engine.history(case_id)]
    assert events.count("deadline_breached") == 1 and events.count("escalate") == 1


class _DriverError(Exception):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("message", "sqlstate", "retry", "cure"),
    [
        ("database is locked", None, True, "holds SQLite's write lock"),
        ("database or disk is full", None, True, "free space"),
        ("could not extend file: No space left on device", "53100", True, "free space"),
        ("canceling statement due to statement timeout", "57014", True, "statement_timeout"),
        ("canceling statement due to lock timeout", "55P03", True, "pg_stat_activity"),
        ("terminating connection due to administrator command", "57P01", True, "restarting or unreachable"),
        ("connection failed: Connection refused", None, True, "restarting or unreachable"),
        ('password authentication failed for user "ops"', "28P01", False, "user name and password"),
        ('database "ops" does not exist', "3D000", False, "create the database first"),
        ("no such table: cases", None, False, "sopflow db upgrade"),
    ],
)
def test_each_database_failure_gets_the_hint_that_names_its_cure(
    message: str, sqlstate: str | None, retry: bool, cure: str, tmp_path: Path
) -> None:
    from sqlalchemy.exc import OperationalError

    postgres = sqlstate is not None or "connection" in message
    engine = database.create(
        "postgresql://ops@db.invalid/ops" if postgres else f"sqlite:///{tmp_path / 'x.db'}"
    )
    try:  # nothing connects: the answer depends on the error and the URL only
        error = database.classify(engine, OperationalError("SELECT 1", {}, _DriverError(message, sqlstate)))
    finally:
        engine.dispose()
    assert isinstance(error, DatabaseUnavailable) is retry, error
    assert isinstance(error, ConfigurationError) and error.exit_code == 2
    assert cure in (error.hint or ""), error.hint


class _Hanging(BaseHTTPRequestHandler):
    """A webhook receiver that hangs on its first request (while `hang` is set) and answers the rest."""

    hang: ClassVar[threading.Event] = threading.Event()
    keys: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        _Hanging.keys.append(self.headers["Idempotency-Key"])
        if _Hanging.hang.is_set():
            time.sleep(20)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_a_worker_killed_in_the_middle_of_a_webhook_leaves_it_to_another(database_url: str) -> None:
    from tests.test_delivery import overdue_notifications

    past = Clock()
    past.now = datetime.now(UTC) - timedelta(days=3)
    with Engine(database_url, clock=past) as setup:
        setup.deploy([MINI])
        (note,) = overdue_notifications(setup, past)
    _Hanging.keys = []
    _Hanging.hang.set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hanging)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    args = ("sopflow", "--db", database_url, "worker", "--webhook", hook, "--lease", "2", "--idle", "0.2")
    try:
        first = spawn(*args)
        ends = time.monotonic() + 30
        while not _Hanging.keys and time.monotonic() < ends:
            time.sleep(0.05)
        assert _Hanging.keys, "the first worker never called the webhook"
        first.send_signal(signal.SIGKILL)  # in the middle of the webhook call
        first.communicate(timeout=30)
        _Hanging.hang.clear()
        second = spawn(*args)
        with Engine(database_url) as check:
            ends = time.monotonic() + 30
            while check.store.undelivered() and time.monotonic() < ends:
                time.sleep(0.2)
            ((code, _out, err),) = stop_all([second])
            assert code == 0, err
            clean(err)
            assert [(attempt, ok) for attempt, ok, _ in check.store.deliveries(note)] == [(1, True)]
    finally:
        server.shutdown()
        server.server_close()
    # Called twice (the first call's answer was never heard), with one key the receiver can tell it by.
    assert _Hanging.keys.count(f"sopflow-{note}") == 2


def test_a_health_file_that_cannot_be_written_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sopflow.engine.worker import Health, HealthFile

    write = HealthFile(str(tmp_path / "no-such-folder" / "health.json"))
    health = Health("w", datetime.now(UTC))
    with caplog.at_level(logging.WARNING, logger="sopflow.worker"):
        for _ in range(3):
            write(health)
    assert len([r for r in caplog.records if "cannot write the health file" in r.getMessage()]) == 1
    good = HealthFile(str(tmp_path / "health.json"))
    good(health)
    assert json.loads((tmp_path / "health.json").read_text())["state"] == "starting"
