"""The write connection a store keeps between steps: reused, never shared between threads or with a forked
child, and replaced when the server dropped it."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import event

from sopflow.engine.runtime import Engine
from sopflow.engine.store import database
from tests.conftest import MINI, Clock, engine_on, fresh_postgres_database


@pytest.fixture
def engine(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, MINI)


def _start(engine: Engine) -> int:
    return engine.start("expense", {"purpose": "taxi", "amount": 100}, actor="alice").case.id


def _loop(engine: Engine, case_id: int, rounds: int) -> None:
    for _ in range(rounds):
        engine.fire(case_id, "submit", actor="alice")
        engine.fire(case_id, "send_back", actor="mia")


def test_steps_reuse_the_write_connection_instead_of_the_pool(engine: Engine) -> None:
    case_id = _start(engine)
    checkouts: list[object] = []
    event.listen(engine.store.engine, "checkout", lambda *args: checkouts.append(args))
    _loop(engine, case_id, 10)
    assert checkouts == []
    assert engine.case(case_id).version == 21


def test_threads_stepping_at_once_each_get_a_connection(engine: Engine) -> None:
    case_ids = [_start(engine) for _ in range(4)]
    errors: list[BaseException] = []

    def work(case_id: int) -> None:
        try:
            _loop(engine, case_id, 10)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(case_id,)) for case_id in case_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert [engine.case(case_id).version for case_id in case_ids] == [21] * 4
    assert engine.verify().ok


def _child_steps(engine: Engine, case_id: int) -> None:
    _loop(engine, case_id, 20)
    engine.close()


def test_a_forked_child_never_uses_the_parents_connections(engine: Engine) -> None:
    parent_case, child_case = _start(engine), _start(engine)
    _loop(engine, parent_case, 1)  # the parent now holds its write connection
    engine.case(parent_case)  # and has a read connection idle in its pool
    child = multiprocessing.get_context("fork").Process(target=_child_steps, args=(engine, child_case))
    child.start()
    _loop(engine, parent_case, 20)  # both step at once: a shared connection would garble both sessions
    child.join(timeout=120)
    assert child.exitcode == 0
    assert engine.case(parent_case).version == 43
    assert engine.case(child_case).version == 41
    assert engine.verify().ok


def _child_closes(engine: Engine) -> None:
    engine.close()


def test_a_child_forked_while_a_step_runs_can_still_close(engine: Engine) -> None:
    case_id = _start(engine)
    # As if another thread were inside a step when the process forked: the write connection is taken.
    with engine.store._write():
        child = multiprocessing.get_context("fork").Process(target=_child_closes, args=(engine,))
        child.start()
        child.join(timeout=60)
    assert child.exitcode == 0, "the child's close() waited for a lock no thread of it holds"
    _loop(engine, case_id, 1)
    assert engine.case(case_id).version == 3


def test_a_connection_the_server_dropped_is_replaced_before_the_next_step(
    postgres_server: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL only: nothing drops a SQLite connection, which is a file.
    import psycopg

    monkeypatch.setattr(database, "IDLE_RECHECK_S", 0.05)
    url = fresh_postgres_database(postgres_server)
    for engine in engine_on(url, clock, MINI):
        case_id = _start(engine)
        _loop(engine, case_id, 1)
        plain = engine.store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(plain, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        assert ended, "the store held no connection to drop"
        time.sleep(0.1)
        _loop(engine, case_id, 1)
        assert engine.case(case_id).version == 5
