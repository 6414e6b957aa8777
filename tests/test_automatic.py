"""Automatic steps on SQLite and PostgreSQL: a state whose work a registered Python handler or a webhook
does, through the worker, retried, with one idempotency key per entry; the answer mapped into the data and
the case moved on by the system's audited step; a failure after the retries handed to a person with the
error; a worker killed during the work loses nothing and records it once. The fixture:
tests/fixtures/automatic/scoring.yaml."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sopflow.engine import Engine
from sopflow.engine.automatic import AutomaticCall
from sopflow.engine.definition.model import AUTOMATIC_DONE, AUTOMATIC_FAILED
from sopflow.engine.worker import ConsoleChannel, Worker
from tests.conftest import ROOT, Clock, engine_on

AUTOMATIC = ROOT / "tests" / "fixtures" / "automatic"


@pytest.fixture
def sop(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, AUTOMATIC)


def _worker(sop: Engine) -> Worker:
    return Worker(sop, channels=[ConsoleChannel(write=lambda _line: None)])


def _submitted(sop: Engine) -> int:
    case = sop.start("scoring", {"name": "q3"}, actor="alice").case.id
    sop.fire(case, "submit", actor="alice")
    assert sop.case(case).state == "scoring"
    return case


def test_the_handler_answers_and_the_case_moves_on_with_the_answer(sop: Engine) -> None:
    calls: list[AutomaticCall] = []

    def score(call: AutomaticCall) -> dict[str, Any]:
        calls.append(call)
        return {"value": 87, "ignored": True}

    sop.register_handler("score", score)
    case = _submitted(sop)
    _worker(sop).tick()
    assert sop.case(case).state == "review"
    assert sop.case(case).data["score"] == 87
    assert [c.key for c in calls] == [f"{case}:2"]
    assert calls[0].data == {"name": "q3"}
    last = sop.history(case)[-1]
    assert (last.actor, last.event, last.payload) == ("$system", AUTOMATIC_DONE, {"score": 87})
    assert last.detail["automatic"] == {"key": f"{case}:2", "tries": 1}
    _worker(sop).tick()  # nothing more to do: the work was recorded once
    assert len([r for r in sop.history(case) if r.event == AUTOMATIC_DONE]) == 1
    assert sop.verify().ok, sop.verify().findings


def test_a_failing_try_is_retried_and_the_last_error_goes_to_a_person(sop: Engine) -> None:
    tries: list[str] = []

    def score(call: AutomaticCall) -> dict[str, Any]:
        tries.append(call.key)
        raise ConnectionError("scoring service down")

    sop.register_handler("score", score)
    case = _submitted(sop)
    _worker(sop).tick()
    assert len(tries) == 3 and len(set(tries)) == 1  # 1 + 2 retries, one key
    after = sop.case(case)
    assert after.state == "score_by_hand"
    assert after.data["scoring_error"] == "ConnectionError: scoring service down"
    assert sop.history(case)[-1].event == AUTOMATIC_FAILED
    assert [t.events for t in sop.tasks("mia")] == [("scored",)]
    sop.fire(case, "scored", actor="mia", payload={"score": 70})
    assert sop.case(case).state == "review"
    assert sop.verify().ok, sop.verify().findings


def test_no_registered_handler_is_a_failure_a_person_sees(sop: Engine) -> None:
    case = _submitted(sop)
    _worker(sop).tick()
    assert sop.case(case).state == "score_by_hand"
    assert "no handler `score` is registered" in sop.case(case).data["scoring_error"]


def test_an_answer_the_data_cannot_take_goes_to_a_person(sop: Engine) -> None:
    sop.register_handler("score", lambda call: {"value": "high"})
    case = _submitted(sop)
    _worker(sop).tick()
    assert sop.case(case).state == "score_by_hand"
    assert "does not fit" in sop.case(case).data["scoring_error"]
    assert sop.verify().ok, sop.verify().findings


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_an_answer_with_a_number_json_cannot_hold_is_a_failed_try_and_the_worker_goes_on(
    sop: Engine, value: float
) -> None:
    tries: list[str] = []

    def score(call: AutomaticCall) -> dict[str, Any]:
        tries.append(call.key)
        return {"value": value}

    sop.register_handler("score", score)
    case = _submitted(sop)
    _worker(sop).tick()  # no internal error: the worker goes on with its other work
    assert len(tries) == 3  # each answer a failed try, retried like any other
    after = sop.case(case)
    assert after.state == "score_by_hand"
    assert "`value` is not a number JSON can hold" in after.data["scoring_error"]
    assert sop.history(case)[-1].event == AUTOMATIC_FAILED
    assert sop.store.pending_timers(case) == []
    assert sop.verify().ok, sop.verify().findings


class _Scorer(http.server.BaseHTTPRequestHandler):
    keys: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).keys.append(self.headers["Idempotency-Key"])
        answer = json.dumps({"value": len(body["data"]["name"])}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_webhook_is_called_with_the_idempotency_key_and_its_answer_mapped(
    database_url: str, clock: Clock, tmp_path: Path
) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Scorer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        text = (AUTOMATIC / "scoring.yaml").read_text(encoding="utf-8")
        url = f"http://127.0.0.1:{server.server_port}/score"
        (tmp_path / "scoring.yaml").write_text(text.replace("handler: score", f"webhook: {url}"), "utf-8")
        (tmp_path / "org.yaml").write_text((AUTOMATIC / "org.yaml").read_text("utf-8"), "utf-8")
        with Engine(database_url, clock=clock) as sop:
            sop.deploy([tmp_path])
            case = _submitted(sop)
            _worker(sop).tick()
            assert sop.case(case).state == "review"
            assert sop.case(case).data["score"] == 2
            assert _Scorer.keys[-1] == f"{case}:2"
            assert sop.verify().ok, sop.verify().findings
    finally:
        server.shutdown()
        server.server_close()


class _NaNScorer(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"value": NaN}')  # Python's json reads it; no JSON holds it

    def log_message(self, *args: Any) -> None:
        pass


def test_a_webhook_answering_nan_is_a_failed_try_and_tick_goes_on(
    database_url: str, clock: Clock, tmp_path: Path
) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _NaNScorer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        text = (AUTOMATIC / "scoring.yaml").read_text(encoding="utf-8")
        url = f"http://127.0.0.1:{server.server_port}/score"
        (tmp_path / "scoring.yaml").write_text(text.replace("handler: score", f"webhook: {url}"), "utf-8")
        (tmp_path / "org.yaml").write_text((AUTOMATIC / "org.yaml").read_text("utf-8"), "utf-8")
        with Engine(database_url, clock=clock) as sop:
            sop.deploy([tmp_path])
            case = _submitted(sop)
            _worker(sop).tick()
            assert sop.case(case).state == "score_by_hand"
            assert "NaN is not a number JSON can hold" in sop.case(case).data["scoring_error"]
            assert sop.verify().ok, sop.verify().findings
    finally:
        server.shutdown()
        server.server_close()


def test_the_checker_refuses_an_automatic_state_with_a_timeout() -> None:
    assert (ROOT / "tests" / "bad" / "automatic-timeout-1.yaml").exists()


@pytest.mark.slow
def test_a_worker_killed_during_the_work_loses_no_step_and_records_each_once(
    database_url: str, tmp_path: Path
) -> None:
    import random
    import signal
    import time
    from datetime import timedelta

    from tests.test_concurrency import _spawn

    log = tmp_path / "deliveries.txt"
    log.touch()
    with Engine(database_url) as sop:
        sop.deploy([AUTOMATIC])
        cases = [_submitted(sop) for _ in range(12)]
    rng = random.Random(20261206)
    for _ in range(8):
        worker = _spawn("tests.helpers.automatic_worker", database_url, str(AUTOMATIC), str(log))
        assert worker.stdout is not None
        line = worker.stdout.readline().strip()
        assert line == "ready", worker.stderr.read() if worker.stderr else line
        time.sleep(rng.uniform(0.0, 0.2))
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=30)
    time.sleep(1.2)  # every lease a killed worker held has run out
    with Engine(database_url) as sop:
        sop.register_handler("score", lambda call: {"value": 1})
        Worker(sop, lease=timedelta(seconds=1), channels=[ConsoleChannel(write=lambda _line: None)]).tick()
        for case in cases:
            history = sop.history(case)
            assert sop.case(case).state == "review"
            assert len([r for r in history if r.event == AUTOMATIC_DONE]) == 1
            assert not [r for r in history if r.event == AUTOMATIC_FAILED]
        assert sop.verify().ok, sop.verify().findings
    delivered = log.read_text(encoding="utf-8").split()
    assert set(delivered) <= {f"{c}:2" for c in cases}  # every call carried its case's one key


def test_each_failed_try_is_kept_with_the_timer_and_a_later_worker_makes_only_those_left(
    sop: Engine, clock: Clock
) -> None:
    from datetime import timedelta

    case = _submitted(sop)
    (timer,) = sop.store.pending_timers(case)
    claimed = sop.store.claim_timers(clock(), "gone", timedelta(seconds=30), 10)
    assert [t.id for t in claimed] == [timer.id]
    # A worker made two of the three tries, kept them, and died.
    assert sop.store.note_attempt(timer, "gone", 1, "ConnectionError: down", clock() + timedelta(seconds=30))
    assert sop.store.note_attempt(timer, "gone", 2, "TimeoutError: slow", clock() + timedelta(seconds=30))
    assert not sop.store.note_attempt(timer, "another", 3, "x", clock())  # only the lease holder writes
    (kept,) = sop.store.pending_timers(case)
    assert (kept.attempts, kept.last_error) == (2, "TimeoutError: slow")
    calls: list[str] = []

    def score(call: AutomaticCall) -> dict[str, Any]:
        calls.append(call.key)
        raise ConnectionError("still down")

    sop.register_handler("score", score)
    clock.advance(seconds=31)  # the dead worker's lease runs out
    _worker(sop).tick()
    assert calls == [f"{case}:2"]  # the one try left, not three more
    last = sop.history(case)[-1]
    assert (last.event, last.detail["automatic"]["tries"]) == (AUTOMATIC_FAILED, 3)
    assert sop.case(case).data["scoring_error"] == "ConnectionError: still down"


def test_a_worker_that_finds_every_try_made_hands_the_case_to_a_person_without_calling(
    sop: Engine, clock: Clock
) -> None:
    from datetime import timedelta

    case = _submitted(sop)
    (timer,) = sop.store.pending_timers(case)
    sop.store.claim_timers(clock(), "gone", timedelta(seconds=30), 10)
    until = clock() + timedelta(seconds=30)
    assert sop.store.note_attempt(timer, "gone", 3, "ConnectionError: down", until)
    calls: list[str] = []

    def score(call: AutomaticCall) -> dict[str, Any]:
        calls.append(call.key)
        return {"value": 1}

    sop.register_handler("score", score)
    clock.advance(seconds=31)
    _worker(sop).tick()
    assert calls == []
    after = sop.case(case)
    assert (after.state, after.data["scoring_error"]) == ("score_by_hand", "ConnectionError: down")
    assert len([r for r in sop.history(case) if r.event == AUTOMATIC_FAILED]) == 1
    assert sop.verify().ok, sop.verify().findings


def test_a_worker_whose_lease_was_taken_over_stops_trying(sop: Engine, clock: Clock) -> None:
    from datetime import timedelta

    case = _submitted(sop)
    calls: list[str] = []

    def score(call: AutomaticCall) -> dict[str, Any]:
        calls.append(call.key)
        # Meanwhile the lease ran out and another worker took the timer.
        sop.store.claim_timers(clock(), "other", timedelta(seconds=30), 10, at=clock() + timedelta(hours=1))
        raise ConnectionError("down")

    sop.register_handler("score", score)
    report = _worker(sop).tick()
    assert calls == [f"{case}:2"] and report.lost_claims == 1
    assert sop.case(case).state == "scoring"  # nothing recorded: the work is the other worker's
    assert sop.store.pending_timers(case)[0].attempts == 0


@pytest.mark.slow
def test_workers_killed_between_failing_tries_make_each_try_once_and_hand_the_case_over_once(
    database_url: str, tmp_path: Path
) -> None:
    import random
    import signal
    import time
    from datetime import timedelta

    from tests.test_concurrency import _spawn

    log = tmp_path / "calls.txt"
    log.touch()
    with Engine(database_url) as sop:
        sop.deploy([AUTOMATIC])
        cases = [_submitted(sop) for _ in range(6)]
    rng = random.Random(20261207)
    kills = 0
    for _ in range(10):
        worker = _spawn("tests.helpers.failing_worker", database_url, str(AUTOMATIC), str(log))
        assert worker.stdout is not None
        line = worker.stdout.readline().strip()
        assert line == "ready", worker.stderr.read() if worker.stderr else line
        time.sleep(rng.uniform(0.05, 0.4))
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=30)
        kills += 1
    time.sleep(1.2)  # every lease a killed worker held has run out
    with Engine(database_url) as sop:
        made = {c: sop.store.pending_timers(c)[0].attempts for c in cases if sop.case(c).state == "scoring"}
        left: list[str] = []

        def score(call: AutomaticCall) -> dict[str, Any]:
            left.append(call.key)
            raise ConnectionError("scoring service down")

        sop.register_handler("score", score)
        worker = Worker(sop, lease=timedelta(seconds=1), channels=[ConsoleChannel(write=lambda _line: None)])
        worker.tick()
        for case in cases:
            after = sop.case(case)
            failed = [r for r in sop.history(case) if r.event == AUTOMATIC_FAILED]
            assert after.state == "score_by_hand", case
            assert after.data["scoring_error"] == "ConnectionError: scoring service down"
            assert len(failed) == 1 and failed[0].detail["automatic"]["tries"] == 3
            assert not [r for r in sop.history(case) if r.event == AUTOMATIC_DONE]
            # The last worker made only the tries the killed ones had not kept.
            assert left.count(f"{case}:2") == 3 - made.get(case, 3)
        assert sop.verify().ok, sop.verify().findings
    calls = log.read_text(encoding="utf-8").split()
    for case in cases:
        # Three tries per case; a try is made again only when a kill landed during it (or before it was kept).
        assert 0 < calls.count(f"{case}:2") + left.count(f"{case}:2") <= 3 + kills
