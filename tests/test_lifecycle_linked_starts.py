"""Trials and adoption reach the cases a schedule or a sub-process state starts, on both databases: an
adopted version is the one they start on, and a running trial splits them by a key of their own (the
schedule's occurrence; the parent case and its state), so a retried start lands on the same version."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sopflow.engine.audit import iso
from sopflow.engine.lifecycle.trials import pick
from sopflow.engine.runtime import Engine
from sopflow.engine.worker import ConsoleChannel, Worker
from tests.conftest import ROOT, Clock

FIXTURES = ROOT / "tests" / "fixtures"
SPLIT = {1: 50, 2: 50}


def second_version(source: Path, tmp_path: Path) -> Path:
    text = source.read_text(encoding="utf-8").replace("\nversion: 1\n", "\nversion: 2\n", 1)
    path = tmp_path / f"{source.stem}-2.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def timing(database_url: str, tmp_path: Path) -> Iterator[tuple[Engine, Clock]]:
    clock = Clock()
    clock.now = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
    engine = Engine(database_url, clock=clock)
    try:
        engine.deploy([FIXTURES / "timing"])
        engine.deploy([second_version(FIXTURES / "timing" / "appraisal.yaml", tmp_path)])
        yield engine, clock
    finally:
        engine.close()


def test_schedule_started_cases_follow_the_adopted_version_and_the_trial_split(
    timing: tuple[Engine, Clock],
) -> None:
    sop, clock = timing
    worker = Worker(sop, name="w", channels=[ConsoleChannel(write=lambda _line: None)])
    sop.adopt("appraisal", 1, actor="root")
    clock.now = datetime(2026, 4, 10, 2, 0, tzinfo=UTC)
    worker.tick()
    adopted = sop.cases(definition="appraisal", limit=100)
    assert len(adopted) == 3 and {c.definition_version for c in adopted} == {1}
    sop.trial_start("appraisal", SPLIT, actor="root")
    clock.now = datetime(2027, 4, 10, 2, 0, tzinfo=UTC)
    worker.tick()
    tried = [c for c in sop.cases(definition="appraisal", limit=100) if c.id not in {a.id for a in adopted}]
    assert len(tried) == 12
    for case in tried:
        start = sop.history(case.id)[0]
        key = f"schedule:monthly:{iso(datetime.fromisoformat(start.detail['period']))}"
        assert case.definition_version == pick("appraisal", key, SPLIT)[0]
        assert start.detail["trial"]["versions"] == {"1": 50, "2": 50}
    assert {c.definition_version for c in tried} == {1, 2}
    worker.tick()  # a period is started once, on the version it landed on
    assert len(sop.cases(definition="appraisal", limit=100)) == 15
    assert sop.verify().ok


def test_sub_process_cases_follow_the_adopted_version_and_the_trial_split(
    database_url: str, clock: Clock, tmp_path: Path
) -> None:
    nested = FIXTURES / "nested"
    with Engine(database_url, clock=clock) as sop:
        sop.deploy([nested])
        sop.deploy([second_version(nested / "quote.yaml", tmp_path), nested / "sign-off.yaml"])

        def child_of(amount: float) -> tuple[int, int, dict[str, object]]:
            parent = sop.start("purchase", {"item": "desk", "amount": amount}, actor="alice").case.id
            sop.fire(parent, "request", actor="alice")
            (child,) = sop.links(parent)[1]
            found = sop.case(child.case_id)
            return parent, found.definition_version, dict(sop.history(found.id)[0].detail)

        assert child_of(100)[1] == 2  # no trial, no adoption: the newest version
        sop.adopt("quote", 1, actor="root")
        assert [child_of(100)[1] for _ in range(3)] == [1, 1, 1]
        sop.trial_start("quote", SPLIT, actor="root")
        seen = set()
        for n in range(12):
            parent, version, detail = child_of(100 + n)
            assert version == pick("quote", f"sub-process:{parent}:quoting", SPLIT)[0]
            assert detail["trial"] == {
                "versions": {"1": 50, "2": 50},
                "bucket": pick("quote", f"sub-process:{parent}:quoting", SPLIT)[1],
            }
            seen.add(version)
        assert seen == {1, 2}
        assert sop.verify().ok
