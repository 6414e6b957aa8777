"""Schedules start cases on a calendar: each period exactly once, however many workers tick, on SQLite and
PostgreSQL; a period missed while no worker ran is started once when one returns; the period is in the
case's data and its start record, and `audit verify` accepts the system's start."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sopflow.engine.definition.model import Schedule, WorkingCalendar
from sopflow.engine.errors import GuardRefused
from sopflow.engine.runtime import Engine
from sopflow.engine.schedule import cron_problem, occurrences
from sopflow.engine.worker import ConsoleChannel, Worker
from tests.conftest import ROOT, Clock

TIMING = ROOT / "tests" / "fixtures" / "timing"
SHANGHAI = WorkingCalendar(
    timezone="Asia/Shanghai",
    holidays=("2026-10-01", "2026-10-02", "2026-10-05", "2026-10-06", "2026-10-07", "2027-04-30"),
    extra_working_days=("2026-10-10",),
)


@pytest.fixture
def start_clock() -> Clock:
    clock = Clock()
    clock.now = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
    return clock


@pytest.fixture
def engines(database_url: str, start_clock: Clock) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one database, as two worker processes would have."""
    first = Engine(database_url, clock=start_clock)
    second = Engine(database_url, clock=start_clock)
    try:
        first.deploy([TIMING])
        yield first, second
    finally:
        first.close()
        second.close()


def workers(engines: tuple[Engine, Engine]) -> list[Worker]:
    return [
        Worker(engine, name=f"w{i}", channels=[ConsoleChannel(write=lambda _line: None)])
        for i, engine in enumerate(engines)
    ]


def periods(engine: Engine) -> Counter[str]:
    return Counter(str(c.data["period"]) for c in engine.cases(definition="appraisal", limit=1000))


def month_ends(first: str, count: int) -> list[str]:
    """The ISO period labels (last day of the month, 17:00 Beijing) of `count` months from `first`."""
    year, month = map(int, first.split("-"))
    out = []
    for _ in range(count):
        following = datetime(year + month // 12, month % 12 + 1, 1)
        last = following - timedelta(days=1)
        out.append(f"{last:%Y-%m-%d}T17:00:00+08:00")
        year, month = following.year, following.month
    return out


def test_two_workers_over_14_months_start_each_monthly_appraisal_once(
    engines: tuple[Engine, Engine], start_clock: Clock
) -> None:
    w1, w2 = workers(engines)
    end = datetime(2027, 3, 1, 1, 0, tzinfo=UTC)
    while start_clock.now < end:
        # Both tick at every moment, in turn and (every fourth day) at once from two threads.
        if start_clock.now.day % 4 == 0:
            threads = [threading.Thread(target=w.tick) for w in (w1, w2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            w1.tick()
            w2.tick()
        start_clock.advance(hours=13)
    found = periods(engines[0])
    assert found == Counter(month_ends("2026-01", 14))
    # The case starts on the last working day: 31 January 2026 is a Saturday, so Friday the 30th.
    january = next(
        c for c in engines[0].cases(definition="appraisal") if c.data["period"].startswith("2026-01")
    )
    due = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)
    assert due <= january.created_at < due + timedelta(hours=13)  # the first tick after it was due
    assert january.data == {"kind": "monthly", "period": "2026-01-31T17:00:00+08:00"}
    first = engines[0].history(january.id)[0]
    assert (first.actor, first.event, first.detail["schedule"]) == ("$system", "start", "monthly")
    assert datetime.fromisoformat(first.detail["due_at"]) == due
    report = engines[0].verify()
    assert report.ok, report


def test_a_period_missed_while_no_worker_ran_starts_once_when_they_return(
    engines: tuple[Engine, Engine], start_clock: Clock
) -> None:
    w1, w2 = workers(engines)
    w1.tick()
    assert periods(engines[0]) == Counter()
    # No worker runs from 5 January to 10 April 2026: January, February and March are missed.
    start_clock.now = datetime(2026, 4, 10, 2, 0, tzinfo=UTC)
    threads = [threading.Thread(target=w.tick) for w in (w1, w2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert periods(engines[0]) == Counter(month_ends("2026-01", 3))
    for _ in range(3):
        w2.tick()
        w1.tick()
    assert periods(engines[0]) == Counter(month_ends("2026-01", 3))
    assert engines[0].verify().ok


def test_a_holiday_on_the_last_working_day_moves_the_period_earlier() -> None:
    schedule = Schedule("monthly", "0 17 L * *", (), working_day="previous")
    after = datetime(2027, 4, 1, tzinfo=UTC)
    (april,) = occurrences(schedule, SHANGHAI, after, datetime(2027, 5, 1, tzinfo=UTC))
    # 30 April 2027 is a Friday and a holiday: the appraisal starts on Thursday 29 April, 17:00 Beijing.
    assert april.due == datetime(2027, 4, 29, 9, 0, tzinfo=UTC)
    assert april.period == datetime(2027, 4, 30, 9, 0, tzinfo=UTC)


def test_the_first_working_day_of_a_quarter_skips_the_national_day_week() -> None:
    schedule = Schedule("quarterly", "0 9 1 1,4,7,10 *", (), working_day="next")
    found = list(
        occurrences(schedule, SHANGHAI, datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC))
    )
    # 1 July 2026 is a Wednesday; 1-7 October is the holiday (3-4 the weekend), 8 October a Thursday.
    assert [p.due for p in found] == [
        datetime(2026, 7, 1, 1, 0, tzinfo=UTC),
        datetime(2026, 10, 8, 1, 0, tzinfo=UTC),
    ]


def test_a_swapped_working_day_counts_as_a_working_day() -> None:
    schedule = Schedule("weekly", "0 9 * * sat", (), working_day="next")
    found = list(
        occurrences(schedule, SHANGHAI, datetime(2026, 10, 9, tzinfo=UTC), datetime(2026, 10, 11, tzinfo=UTC))
    )
    # Saturday 10 October 2026 is worked (调休): the period stays on it.
    assert [p.due for p in found] == [datetime(2026, 10, 10, 1, 0, tzinfo=UTC)]


def test_cron_expressions_croniter_refuses_are_named() -> None:
    assert cron_problem("0 17 L * *") is None
    assert "out of range" in (cron_problem("61 * * * *") or "")
    assert "five fields" in (cron_problem("0 17 * *") or "")


def test_a_schedule_shows_its_last_and_next_period(
    engines: tuple[Engine, Engine], start_clock: Clock
) -> None:
    from sopflow.engine.scheduler import Scheduler

    start_clock.now = datetime(2026, 2, 2, 1, 0, tzinfo=UTC)
    w1, _ = workers(engines)
    w1.tick()
    (status,) = Scheduler(engines[0]).status("appraisal", start_clock.now)
    assert (status.name, status.started, status.last_period) == ("monthly", 1, "2026-01-31T17:00:00+08:00")
    assert status.next_due == datetime(2026, 2, 27, 9, 0, tzinfo=UTC)


def test_periods_before_the_schedule_was_deployed_are_not_started(tmp_path: Path, start_clock: Clock) -> None:
    start_clock.now = datetime(2026, 6, 10, tzinfo=UTC)
    with Engine(f"sqlite:///{tmp_path / 'late.db'}", clock=start_clock) as engine:
        engine.deploy([TIMING])
        worker = Worker(engine, channels=[ConsoleChannel(write=lambda _line: None)])
        worker.tick()
        assert periods(engine) == Counter()
        start_clock.now = datetime(2026, 7, 1, tzinfo=UTC)
        worker.tick()
        assert periods(engine) == Counter(["2026-06-30T17:00:00+08:00"])


def test_tick_starts_due_periods_and_defs_show_tells_the_schedule(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sopflow.cli.main import cli

    db = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["--db", db, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    run("deploy", str(TIMING))
    deployed = datetime.now(UTC)
    later = deployed + timedelta(days=95)
    assert "schedule" in run("tick", "--now", later.isoformat())
    # 95 days hold three month ends, or four when the first comes right after the deployment.
    started = len(json.loads(run("--json", "list", "--definition", "appraisal")))
    assert started in (3, 4)
    shown = run("defs", "show", "appraisal")
    assert f"schedule monthly: `0 17 L * *`, moved to the previous working day; {started} started" in shown
    (schedule,) = json.loads(run("--json", "defs", "show", "appraisal"))["schedules"]
    assert (schedule["name"], schedule["started"], schedule["cron"]) == ("monthly", started, "0 17 L * *")
    assert run("tick", "--now", later.isoformat()).startswith("fired: nothing due")
    first = json.loads(run("--json", "list", "--definition", "appraisal"))[0]
    assert "schedule monthly, period " in run("--as", "ann", "show", str(first["id"]))
    diagram = run("diagram", str(TIMING / "appraisal.yaml"))
    assert "schedule monthly: 0 17 L * *, previous working day" in diagram


def test_the_seed_schedules_start_the_plans_and_the_survey_of_a_new_year(tmp_path: Path) -> None:
    clock = Clock()
    clock.now = datetime(2026, 12, 20, 2, 0, tzinfo=UTC)
    with Engine(f"sqlite:///{tmp_path / 'seeds.db'}", clock=clock) as engine:
        engine.deploy([ROOT / "definitions"])
        worker = Worker(engine, channels=[ConsoleChannel(write=lambda _line: None)])
        # December's month-end and year-end appraisals fall due before the new year's first working day.
        clock.now = datetime(2027, 1, 4, 0, 59, tzinfo=UTC)
        assert worker.tick().fired.get("schedule", 0) == 2
        appraisals = engine.cases(definition="performance-appraisal")
        assert sorted(c.data["period"] for c in appraisals) == ["monthly", "yearly"]
        # 1 January 2027 is a holiday in the org calendar (a Friday): the first working day is Monday 4.
        clock.now = datetime(2027, 1, 4, 1, 0, tzinfo=UTC)
        # Six group plans, the year's training needs survey, a quarterly review of each of 11 SOPs (and
        # whatever else the seeds schedule for the first working day of the year): each a case.
        started = worker.tick().fired["schedule"]
        assert started >= 18
        assert len(engine.cases(limit=1000)) == started + len(appraisals)
        reviews = engine.cases(definition="sop-revision")
        assert len({c.data["sop_name"] for c in reviews}) == 11
        assert {c.data["quarter"] for c in reviews} == {"2027-Q1"}
        # A scheduled review does not know the SOP's version: it is given when a revision is decided.
        review = reviews[0].id
        with pytest.raises(GuardRefused):
            engine.fire(review, "revision_needed", actor="chen.jing")
        engine.fire(review, "revision_needed", actor="chen.jing", payload={"sop_version": 3})
        assert engine.case(review).data["sop_version"] == 3
        plans = engine.cases(definition="operations-plan")
        assert sorted((c.data["group"], c.data["period"]) for c in plans) == sorted(
            (group, period)
            for group in ("内容运营组", "用户运营组", "活动运营组")
            for period in ("2027-Q1", "2027-01")
        )
        (survey,) = engine.cases(definition="training")
        assert survey.data == {"topic": "年度培训需求调查", "cycle": "annual", "period": "2027"}
        assert engine.verify().ok
        # Every period due was seen started: a tick with nothing new due reads no period, except of the
        # appraisal's schedules, which move to the previous working day (a later period may fall due
        # before an earlier one, so they are always looked at again).
        reads: list[str] = []
        original = engine.store.started_periods

        def counted(
            definition_id: str, schedule: str, since: datetime, until: datetime | None = None
        ) -> set[datetime]:
            reads.append(schedule)
            return original(definition_id, schedule, since, until)

        engine.store.started_periods = counted  # type: ignore[method-assign]
        clock.now = datetime(2027, 1, 20, 1, 0, tzinfo=UTC)
        assert worker.tick().fired.get("schedule", 0) == 0
        assert sorted(reads) == ["month-end", "year-end"]


def test_a_period_format_writes_the_quarter_and_a_percent_sign() -> None:
    from sopflow.engine.schedule import period_label

    moment = datetime(2026, 6, 30, 20, 0, tzinfo=UTC)  # 1 July 2026, 04:00 in Beijing
    assert period_label(moment, SHANGHAI) == "2026-07-01T04:00:00+08:00"
    assert period_label(moment, SHANGHAI, "%Y-Q%Q") == "2026-Q3"
    assert period_label(moment, SHANGHAI, "%Y-%m") == "2026-07"
    assert period_label(moment, SHANGHAI, "100%%Q") == "100%Q"


MINUTELY = """\
id: every-minute
version: 1
title: {zh: 每分钟, en: Every minute}
data:
  type: object
  properties:
    period: {type: string}
initial: open
states:
  open:
    title: {zh: 进行中, en: Open}
    owner: staff
    on:
      close: {to: closed}
  closed:
    title: {zh: 已关闭, en: Closed}
    final: true
schedules:
  minutely:
    cron: "* * * * *"
"""


def test_four_workers_catching_up_on_300_periods_start_each_once(database_url: str, tmp_path: Path) -> None:
    from sopflow.engine.scheduler import Scheduler

    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "every-minute.yaml").write_text(MINUTELY, encoding="utf-8")
    (folder / "org.yaml").write_text((TIMING / "org.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    moment = datetime(2026, 6, 1, tzinfo=UTC)
    deployed = moment - timedelta(minutes=300)
    engines = [Engine(database_url, clock=lambda: deployed) for _ in range(4)]
    try:
        engines[0].deploy([folder])
        counts: list[int] = []
        threads = [
            threading.Thread(target=lambda e=e: counts.append(Scheduler(e).start_due(moment)))
            for e in engines
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(counts) == 300
        cases = engines[0].cases(definition="every-minute", limit=1000)
        found = Counter(str(c.data["period"]) for c in cases)
        assert len(found) == 300
        assert set(found.values()) == {1}
    finally:
        for e in engines:
            e.close()
