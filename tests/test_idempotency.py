"""Idempotency keys and the commit whose outcome is unknown, on SQLite and PostgreSQL.

A key names one write request: the same request again returns the first result and writes nothing;
the key reused by another person, for another definition, case or event, or with other content is a
Conflict (recorded as a refusal when there is a case). Every write has a key, the caller's or a new
one, so that a COMMIT whose outcome is unknown (the connection broke during it) can be retried safely:
it is reported as `OutcomeUnknown` (exit 4) with the key, and the retry applies the write once.

The broken COMMIT is injected at the driver's commit call (after the server committed, or instead of
it) and, on PostgreSQL, made real by terminating the server process from another connection just
before the COMMIT is sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.engine.default import DefaultDialect

from sopflow.cli.main import cli
from sopflow.engine import Conflict, OutcomeUnknown, UsageError
from sopflow.engine.errors import EXIT_UNKNOWN, DatabaseUnavailable
from sopflow.engine.runtime import Engine
from sopflow.engine.store import database
from sopflow.engine.store.keys import KeyClaim, KeyUse
from tests.conftest import MINI, Clock, engine_on, fresh_postgres_database

EXPENSE = {"amount": 100, "purpose": "taxi"}


@pytest.fixture
def engine(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, MINI)


def events(engine: Engine, case_id: int) -> list[tuple[str, str, str]]:
    return [(r.actor, r.event, r.outcome) for r in engine.history(case_id)]


# -- the same request, and another request under the same key ----------------------------------------


def test_the_same_request_again_returns_the_first_result(engine: Engine) -> None:
    first = engine.start("expense", EXPENSE, actor="alice", key="claim-7")
    again = engine.start("expense", dict(EXPENSE), actor="alice", key="claim-7")
    assert (first.replayed, again.replayed) == (False, True)
    assert (again.case.id, again.record.hash, again.key) == (first.case.id, first.record.hash, "claim-7")
    step = engine.fire(first.case.id, "submit", actor="alice", comment="receipts attached", key="s-1")
    repeat = engine.fire(first.case.id, "submit", actor="alice", comment="receipts attached", key="s-1")
    assert repeat.replayed and repeat.record.hash == step.record.hash
    assert events(engine, first.case.id) == [("alice", "start", "accepted"), ("alice", "submit", "accepted")]
    assert engine.case(first.case.id).version == 2


def test_a_write_without_a_key_gets_one_that_repeats_it(engine: Engine) -> None:
    started = engine.start("expense", EXPENSE, actor="alice")
    assert started.key and not started.replayed
    assert engine.start("expense", EXPENSE, actor="alice", key=started.key).case.id == started.case.id
    other = engine.start("expense", EXPENSE, actor="alice")
    assert other.key != started.key and other.case.id != started.case.id  # no key: a new request
    step = engine.fire(started.case.id, "submit", actor="alice")
    assert step.key and step.key != started.key
    again = engine.fire(started.case.id, "submit", actor="alice", key=step.key)
    assert again.replayed
    assert [e for _, e, _ in events(engine, started.case.id)] == ["start", "submit"]


def test_a_key_used_by_another_person_is_a_refused_conflict(engine: Engine) -> None:
    case_id = engine.start("expense", EXPENSE, actor="alice").case.id
    engine.fire(case_id, "submit", actor="alice", key="retry-1")
    assignee = engine.case(case_id).assignee
    assert assignee is not None
    clash = "already used by another person: alice fired `submit` on case 1"
    with pytest.raises(Conflict, match=clash) as err:
        engine.fire(case_id, "send_back", actor=assignee, key="retry-1")
    assert err.value.exit_code == 1
    history = engine.history(case_id)
    assert [(r.actor, r.event, r.outcome) for r in history][-1] == (assignee, "send_back", "refused")
    assert history[-1].reason is not None and history[-1].reason.startswith("conflict: idempotency key")
    assert engine.case(case_id).state == "manager_review"
    assert engine.verify(case_id).ok
    # The same event by another person, as in `--as li.na fire 1 submit --key retry-1` after zhou.qiang.
    other = engine.start("expense", EXPENSE, actor="bob").case.id
    engine.fire(other, "submit", actor="bob", key="bob-1")
    with pytest.raises(Conflict, match="by another person: bob fired `submit`"):
        engine.fire(other, "submit", actor="alice", key="bob-1")


def test_a_start_key_reused_by_another_person_is_a_conflict(engine: Engine) -> None:
    engine.start("expense", EXPENSE, actor="alice", key="import-42")
    before = engine.store.count_cases()
    with pytest.raises(Conflict, match="by another person: alice started case 1 of `expense`"):
        engine.start("expense", EXPENSE, actor="bob", key="import-42")
    assert engine.store.count_cases() == before


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"payload": {"note": "other"}}, "with other content"),
        ({"comment": "a second thought"}, "with other content"),
        ({"event": "send_back"}, "for another request"),
    ],
)
def test_a_fire_key_reused_with_other_content_or_event_is_a_conflict(
    engine: Engine, change: dict[str, Any], why: str
) -> None:
    case_id = engine.start("expense", EXPENSE, actor="alice").case.id
    assignee = engine.fire(case_id, "submit", actor="alice").case.assignee
    assert assignee is not None
    first: dict[str, Any] = {"event": "approve_claim", "payload": {"note": "ok"}, "comment": None}
    engine.fire(case_id, first["event"], actor=assignee, payload=first["payload"], key="k")
    retry = {**first, **change}
    with pytest.raises(Conflict, match=f"already used {why}: {assignee} fired `approve_claim`"):
        engine.fire(
            case_id,
            retry["event"],
            actor=assignee,
            payload=retry["payload"],
            comment=retry["comment"],
            key="k",
        )
    assert engine.case(case_id).state == "paid"
    assert [o for _, _, o in events(engine, case_id)] == ["accepted"] * 3 + ["refused"]


def test_a_start_key_reused_with_other_data_or_for_another_definition_is_a_conflict(engine: Engine) -> None:
    engine.start("expense", EXPENSE, actor="alice", key="k")
    with pytest.raises(Conflict, match="with other content"):
        engine.start("expense", {**EXPENSE, "amount": 101}, actor="alice", key="k")
    with pytest.raises(Conflict, match="for another request: alice started case 1 of `expense`"):
        engine.start("board-vote", {"motion": "a new office"}, actor="alice", key="k")
    assert engine.store.count_cases() == 1


def test_a_key_reused_on_another_case_or_by_a_fire_after_a_start_is_a_conflict(engine: Engine) -> None:
    one = engine.start("expense", EXPENSE, actor="alice", key="s").case.id
    two = engine.start("expense", EXPENSE, actor="alice").case.id
    engine.fire(one, "submit", actor="alice", key="f")
    with pytest.raises(Conflict, match=f"for another request: alice fired `submit` on case {one}"):
        engine.fire(two, "submit", actor="alice", key="f")
    with pytest.raises(Conflict, match=f"for another request: alice started case {one}"):
        engine.fire(two, "submit", actor="alice", key="s")
    assert events(engine, two) == [("alice", "start", "accepted")] + [("alice", "submit", "refused")] * 2
    assert engine.fire(two, "submit", actor="alice", key="g").case.state == "manager_review"


def test_keys_must_be_1_to_200_characters(engine: Engine) -> None:
    for bad in ("", "   ", "k" * 201):
        with pytest.raises(UsageError, match="idempotency key"):
            engine.start("expense", EXPENSE, actor="alice", key=bad)
    assert engine.start("expense", EXPENSE, actor="alice", key="k" * 200).key == "k" * 200


def test_a_default_key_changes_nothing_the_audit_record_hashes(tmp_path: Path, clock: Clock) -> None:
    hashes = []
    for name in ("a", "b"):
        with Engine(f"sqlite:///{tmp_path / name}.db", clock=clock) as sop:
            sop.deploy([MINI])
            started = sop.start("expense", EXPENSE, actor="alice")
            step = sop.fire(started.case.id, "submit", actor="alice")
            assert started.key not in json.dumps(step.record.body())
            hashes.append((started.record.hash, step.record.hash))
    assert hashes[0] == hashes[1]  # two different default keys, the same records


def test_keys_stored_before_fingerprints_match_on_actor_operation_and_target() -> None:
    legacy = KeyUse("k", "fire", "alice", "submit", 3, 2, None)
    claim = KeyClaim.fire("k", "alice", 3, "submit", {"any": "payload"}, None)
    assert claim.same_request(legacy)
    assert not KeyClaim.fire("k", "alice", 4, "submit", {}, None).same_request(legacy)
    assert not KeyClaim.fire("k", "bob", 3, "submit", {}, None).same_request(legacy)


def _at_once(database_url: str, clock: Clock, calls: list[Callable[[Engine], Any]]) -> list[Any]:
    """Run each call on its own engine and thread, released together; each one's result or error."""
    engines = [Engine(database_url, clock=clock) for _ in calls]
    barrier = threading.Barrier(len(calls))
    out: list[Any] = [None] * len(calls)

    def run_one(n: int) -> None:
        barrier.wait()
        try:
            out[n] = calls[n](engines[n])
        except Exception as exc:  # collected for the test to judge
            out[n] = exc

    threads = [threading.Thread(target=run_one, args=(n,)) for n in range(len(calls))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for e in engines:
            e.close()
    return out


def test_the_same_keyed_request_at_once_is_applied_once(
    engine: Engine, database_url: str, clock: Clock
) -> None:
    case_id = engine.start("expense", EXPENSE, actor="alice").case.id
    fires = _at_once(database_url, clock, [lambda e: e.fire(case_id, "submit", actor="alice", key="k")] * 4)
    assert all(not isinstance(r, Exception) for r in fires), fires
    assert sorted(r.replayed for r in fires) == [False, True, True, True]
    assert [e for _, e, _ in events(engine, case_id)] == ["start", "submit"]
    starts = _at_once(database_url, clock, [lambda e: e.start("expense", EXPENSE, actor="bob", key="s")] * 4)
    assert all(not isinstance(r, Exception) for r in starts), starts
    assert len({r.case.id for r in starts}) == 1 and sum(not r.replayed for r in starts) == 1
    assert engine.store.count_cases() == 2


def test_one_key_on_two_cases_at_once_applies_one_and_refuses_the_other(
    engine: Engine, database_url: str, clock: Clock
) -> None:
    ids = [engine.start("expense", EXPENSE, actor="alice").case.id for _ in range(2)]
    calls = [lambda e, c=c: e.fire(c, "submit", actor="alice", key="k") for c in ids]
    results = _at_once(database_url, clock, calls)
    kinds = ["Conflict" if isinstance(r, Conflict) else type(r).__name__ for r in results]
    assert sorted(kinds) == ["Conflict", "Result"], results
    assert sorted(engine.case(c).state for c in ids) == ["draft", "manager_review"]


# -- the COMMIT whose outcome is unknown ----------------------------------------------------------------


class Breaker:
    """Breaks the next COMMIT of a step's transaction (a start, a fire, a timer), at the driver's commit
    call, whichever way the store ends the transaction (on the driver connection, or through SQLAlchemy's
    dialect): the server commits first (`applied`) or does not, then the call fails as a broken
    connection does."""

    def __init__(self, applied: bool, before: Callable[[Any], None] | None = None) -> None:
        self.applied = applied
        self.before = before
        self.armed = False
        self.inside = False
        """Whether a step transaction is committing (other transactions commit as usual)."""
        self.broke = 0

    def commit(self, driver: Any, real: Callable[[], None]) -> None:
        if not (self.armed and self.inside):
            real()
            return
        self.armed = False
        self.broke += 1
        if self.before is not None:
            self.before(driver)
            real()  # raises: the server has gone
        if self.applied:
            real()
        else:
            driver.rollback()
        dbapi = __import__(type(driver).__module__.split(".")[0])  # sqlite3 or psycopg
        raise dbapi.OperationalError("server closed the connection unexpectedly")


class _Driver:
    """A driver connection whose `commit` goes through the Breaker."""

    def __init__(self, real: Any, breaker: Breaker) -> None:
        self._real = real
        self._breaker = breaker

    def commit(self) -> None:
        self._breaker.commit(self._real, self._real.commit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@contextmanager
def broken_commit(
    monkeypatch: pytest.MonkeyPatch, *, applied: bool, before: Callable[[Any], None] | None = None
) -> Iterator[Breaker]:
    breaker = Breaker(applied, before)
    init = database.StepTransaction.__init__
    step_commit = database.StepTransaction.commit
    do_commit = DefaultDialect.do_commit

    def step_init(self: database.StepTransaction, conn: Any) -> None:
        init(self, conn)
        self._driver = _Driver(self._driver, breaker)

    def commit(self: database.StepTransaction) -> None:
        breaker.inside = True
        try:
            step_commit(self)
        finally:
            breaker.inside = False

    def dialect_commit(self: DefaultDialect, dbapi_connection: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        breaker.commit(driver, lambda: do_commit(self, dbapi_connection))

    with monkeypatch.context() as patch:
        patch.setattr(database.StepTransaction, "__init__", step_init)
        patch.setattr(database.StepTransaction, "commit", commit)
        patch.setattr(DefaultDialect, "do_commit", dialect_commit)
        breaker.armed = True
        yield breaker
        breaker.armed = False


@pytest.mark.parametrize("applied", [True, False], ids=["committed", "not-committed"])
def test_a_fire_whose_commit_broke_is_unknown_and_its_keyed_retry_applies_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, applied: bool
) -> None:
    case_id = engine.start("expense", EXPENSE, actor="alice").case.id
    with broken_commit(monkeypatch, applied=applied) as breaker, pytest.raises(OutcomeUnknown) as err:
        engine.fire(case_id, "submit", actor="alice", comment="retry me")
    assert breaker.broke == 1
    unknown = err.value
    assert (unknown.exit_code, unknown.kind) == (EXIT_UNKNOWN, "outcome-unknown")
    assert unknown.key is not None and f"--key {unknown.key}" in str(unknown)
    assert f"`submit` on case {case_id} may or may not have been stored" in unknown.message
    assert unknown.as_dict()["key"] == unknown.key
    stored = [e for _, e, _ in events(engine, case_id)]
    assert stored == (["start", "submit"] if applied else ["start"])
    retry = engine.fire(case_id, "submit", actor="alice", comment="retry me", key=unknown.key)
    assert retry.replayed is applied
    assert [e for _, e, _ in events(engine, case_id)] == ["start", "submit"]
    assert engine.case(case_id).version == 2
    assert engine.verify(case_id).ok
    # The engine goes on with a working connection.
    assert engine.fire(case_id, "send_back", actor=retry.case.assignee or "").case.state == "draft"


@pytest.mark.parametrize("applied", [True, False], ids=["committed", "not-committed"])
def test_a_start_whose_commit_broke_is_unknown_and_its_keyed_retry_starts_one_case(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, applied: bool
) -> None:
    before = engine.store.count_cases()
    with broken_commit(monkeypatch, applied=applied), pytest.raises(OutcomeUnknown) as err:
        engine.start("expense", EXPENSE, actor="alice", key="import-9")
    assert err.value.key == "import-9"
    assert "the start of a `expense` case may or may not have been stored" in err.value.message
    assert engine.store.count_cases() == before + (1 if applied else 0)
    retry = engine.start("expense", EXPENSE, actor="alice", key="import-9")
    assert retry.replayed is applied
    assert engine.store.count_cases() == before + 1


def test_a_backend_terminated_at_commit_is_unknown_and_the_retry_applies_once(
    postgres_server: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    database_url = fresh_postgres_database(postgres_server)
    plain = database_url.replace("postgresql+psycopg://", "postgresql://")

    def terminate(driver: Any) -> None:
        with psycopg.connect(plain, autocommit=True) as other:
            pid = driver.info.backend_pid
            assert other.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone() == (True,)

    for sop in engine_on(database_url, clock, MINI):
        case_id = sop.start("expense", EXPENSE, actor="alice").case.id
        broken = broken_commit(monkeypatch, applied=False, before=terminate)
        with broken as breaker, pytest.raises(OutcomeUnknown) as err:
            sop.fire(case_id, "submit", actor="alice")
        assert breaker.broke == 1 and err.value.key is not None
        retry = sop.fire(case_id, "submit", actor="alice", key=err.value.key)
        assert retry.case.version == 2
        assert [r.event for r in sop.history(case_id)] == ["start", "submit"]
        again = sop.fire(case_id, "submit", actor="alice", key=err.value.key)
        assert again.replayed


@pytest.mark.parametrize("applied", [True, False], ids=["committed", "not-committed"])
def test_a_timer_whose_commit_broke_is_an_outage_the_worker_rides_out_and_fires_once(
    engine: Engine, clock: Clock, monkeypatch: pytest.MonkeyPatch, applied: bool
) -> None:
    from sopflow.engine.worker import ConsoleChannel, Worker

    case_id = engine.start("expense", EXPENSE, actor="alice").case.id
    engine.fire(case_id, "submit", actor="alice")
    clock.advance(days=2, minutes=1)  # the deadline pay-within-2d is breached
    worker = Worker(engine, channels=[ConsoleChannel(write=lambda _text: None)])
    with broken_commit(monkeypatch, applied=applied) as breaker, pytest.raises(DatabaseUnavailable) as err:
        worker.tick()
    assert breaker.broke == 1 and "fires once" in str(err.value)
    clock.advance(seconds=61)  # the lease taken before the failure has run out
    worker.tick()
    breaches = [r for r in engine.history(case_id) if r.event == "deadline_breached"]
    assert len(breaches) == 1
    assert engine.verify(case_id).ok


# -- the command line ---------------------------------------------------------------------------------


def run(db: str, *args: str, user: str | None = None, as_json: bool = False) -> Any:
    head = ["--db", db] + (["--as", user] if user else []) + (["--json"] if as_json else [])
    env = {"SOPFLOW_DB": None, "SOPFLOW_USER": None, "SOPFLOW_DEBUG": None}
    result = CliRunner().invoke(cli, [*head, *args], env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def cli_db(database_url: str) -> str:
    assert run(database_url, "deploy", str(MINI)).exit_code == 0
    assert run(database_url, "start", "expense", "--data", json.dumps(EXPENSE), user="alice").exit_code == 0
    return database_url


def test_the_cli_refuses_a_key_another_person_used(cli_db: str) -> None:
    assert run(cli_db, "fire", "1", "submit", "--key", "retry-1", user="alice").exit_code == 0
    again = run(cli_db, "fire", "1", "submit", "--key", "retry-1", user="alice")
    assert again.exit_code == 0 and "already done" in again.stdout
    other = run(cli_db, "fire", "1", "send_back", "--key", "retry-1", user="mia")
    assert other.exit_code == 1
    assert other.stderr.startswith("error: idempotency key `retry-1` was already used by another person")
    assert "hint: " in other.stderr
    answer = run(cli_db, "fire", "1", "send_back", "--key", "retry-1", user="mia", as_json=True)
    assert json.loads(answer.stdout)["error"] == "conflict"
    history = json.loads(run(cli_db, "history", "1", as_json=True).stdout)
    assert [(r["actor"], r["outcome"]) for r in history][-2:] == [("mia", "refused")] * 2


def test_the_cli_says_an_outcome_is_unknown_and_repeats_with_the_key(
    cli_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with broken_commit(monkeypatch, applied=True):
        broke = run(cli_db, "fire", "1", "submit", user="alice")
    assert broke.exit_code == EXIT_UNKNOWN == 4
    assert broke.stderr.startswith("error: `submit` on case 1 may or may not have been stored")
    key = broke.stderr.split("--key ", 1)[1].split("`", 1)[0]
    retry = run(cli_db, "fire", "1", "submit", "--key", key, user="alice", as_json=True)
    assert retry.exit_code == 0
    answer = json.loads(retry.stdout)
    assert (answer["replayed"], answer["key"]) == (True, key)
    history = json.loads(run(cli_db, "history", "1", as_json=True).stdout)
    assert [r["event"] for r in history] == ["start", "submit"]
    with broken_commit(monkeypatch, applied=False):
        unknown = run(cli_db, "start", "expense", "--data", json.dumps(EXPENSE), user="bob", as_json=True)
    assert unknown.exit_code == 4
    error = json.loads(unknown.stdout)
    assert error["error"] == "outcome-unknown" and error["key"]
    data = json.dumps(EXPENSE)
    started = run(cli_db, "start", "expense", "--data", data, "--key", error["key"], user="bob")
    assert started.exit_code == 0 and "already done" not in started.stdout


# -- the migration ---------------------------------------------------------------------------------------


def test_the_keys_stored_before_move_to_one_table(database_url: str) -> None:
    import sqlalchemy as sa

    from sopflow.engine.store.tables import audit, cases, idempotency_keys

    engine = database.create(database_url)
    try:
        database.upgrade(engine, "0002")
        at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        fire_keys = sa.table("fire_keys", sa.column("case_id"), sa.column("key"), sa.column("seq"))
        case = {
            "definition_id": "expense", "definition_version": 1, "state": "manager_review", "open": True,
            "data": "{}", "version": 2, "starter": "alice", "assignee": "mia", "submitter": "alice",
            "entered_seq": 2, "entered_at": at, "created_at": at, "updated_at": at, "audit_seq": 2,
            "last_hash": "h2",
        }  # fmt: skip
        record = {
            "at": "2026-03-02T09:00:00.000000Z", "outcome": "accepted", "payload": "{}", "data_change": "{}",
            "detail": "{}", "definition_hash": "d", "prev_hash": "h0", "hash": "h",
        }  # fmt: skip
        with engine.begin() as conn:
            two = [{**case, "id": 1, "start_key": "s-old"}, {**case, "id": 2, "start_key": None}]
            conn.execute(sa.insert(cases), two)
            conn.execute(
                sa.insert(audit),
                [
                    {**record, "case_id": 1, "seq": 1, "actor": "alice", "event": "start"},
                    {**record, "case_id": 1, "seq": 2, "actor": "alice", "event": "submit"},
                    {**record, "case_id": 2, "seq": 2, "actor": "bob", "event": "submit"},
                ],
            )
            # One fire key on two cases (each case had its own keys): the first case keeps it.
            rows = [{"case_id": 1, "key": "f-old", "seq": 2}, {"case_id": 2, "key": "f-old", "seq": 2}]
            conn.execute(sa.insert(fire_keys), rows)
        database.upgrade(engine)
        with engine.connect() as conn:
            found = conn.execute(
                sa.select(
                    idempotency_keys.c.key, idempotency_keys.c.operation, idempotency_keys.c.actor,
                    idempotency_keys.c.target, idempotency_keys.c.fingerprint, idempotency_keys.c.case_id,
                    idempotency_keys.c.seq,
                ).order_by(idempotency_keys.c.key)
            ).all()  # fmt: skip
            assert "fire_keys" not in sa.inspect(conn).get_table_names()
        assert [tuple(r) for r in found] == [
            ("f-old", "fire", "alice", "submit", None, 1, 2),
            ("s-old", "start", "alice", "expense", None, 1, 1),
        ]
    finally:
        engine.dispose()
