"""The seed definitions' own schedules start their cases when the rulebooks say, on SQLite and PostgreSQL.

The monthly appraisal starts at 17:00 on the last working day of the month (003 §四(二), §四(三)1) with the
month as its period label, and a risk identification round on the first working day of the quarter
(003 §六(一)1, the cadence an assumption); each once, however often the workers tick, by the system.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from sopflow.engine.runtime import Engine
from sopflow.engine.worker import ConsoleChannel, Worker
from tests.conftest import DEFINITIONS, Clock


@pytest.fixture
def clock() -> Clock:
    found = Clock()
    found.now = datetime(2026, 3, 31, 8, 0, tzinfo=UTC)  # Tuesday 31 March 2026, 16:00 in Beijing
    return found


@pytest.fixture
def seeds(database_url: str, clock: Clock) -> Iterator[Engine]:
    engine = Engine(database_url, clock=clock)
    try:
        engine.deploy([DEFINITIONS])
        yield engine
    finally:
        engine.close()


def tick_until(engine: Engine, clock: Clock, end: datetime) -> None:
    worker = Worker(engine, name="w", channels=[ConsoleChannel(write=lambda _line: None)])
    while clock.now < end:
        worker.tick()
        worker.tick()  # a second tick of the same moment starts nothing again
        clock.advance(minutes=30)


def test_the_month_end_appraisal_and_the_quarterly_risk_round_start_once(seeds: Engine, clock: Clock) -> None:
    tick_until(seeds, clock, datetime(2026, 3, 31, 9, 0, tzinfo=UTC))
    assert seeds.cases(definition="performance-appraisal") == []  # not before 17:00
    tick_until(seeds, clock, datetime(2026, 4, 1, 4, 0, tzinfo=UTC))
    [appraisal] = seeds.cases(definition="performance-appraisal")
    assert appraisal.data == {"period": "monthly", "period_label": "2026-03"}
    assert appraisal.state == "scheme_setup"
    due = datetime(2026, 3, 31, 9, 0, tzinfo=UTC)
    assert due <= appraisal.created_at < due + timedelta(minutes=30)
    start = seeds.history(appraisal.id)[0]
    assert (start.actor, start.detail["schedule"]) == ("$system", "month-end")
    [risk] = seeds.cases(definition="risk-management")
    assert risk.data == {"title": "季度定期风险识别", "period": "2026-Q2"}
    assert seeds.history(risk.id)[0].detail["schedule"] == "quarterly-identification"
    assert seeds.verify().ok
