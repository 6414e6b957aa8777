"""Reports, baselines and comparisons on a history where every figure is known by construction
(tests/insight_history.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sopflow.engine.errors import NotFound, UsageError
from sopflow.engine.insight import stats
from sopflow.engine.runtime import Engine
from sopflow.engine.store.insight import Scope, samples
from tests.insight_history import CYCLES, FIXTURE, REVIEW_WALL, REVIEW_WORKING, Clock, H, build


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sop(database_url: str, clock: Clock) -> Iterator[Engine]:
    engine = Engine(database_url, clock=clock)
    engine.deploy([FIXTURE])
    try:
        yield engine
    finally:
        engine.close()


def rank(values: list[float], share: float) -> float:
    """The nearest-rank percentile."""
    return sorted(values)[math.ceil(share * len(values)) - 1]


def test_report_figures_are_the_ones_built(sop: Engine, clock: Clock) -> None:
    build(sop, clock)
    (process,) = sop.report("article").processes
    steps = {s.key: s for s in process.steps}
    review = steps["review"]
    assert review.times.count == 6
    assert review.times.mean == pytest.approx(sum(REVIEW_WALL) / 6)
    assert review.times.median == pytest.approx(rank(REVIEW_WALL, 0.5)) == H
    assert review.times.p90 == pytest.approx(rank(REVIEW_WALL, 0.9)) == 40 * H
    assert review.times.max == 40 * H
    assert review.times.working_mean == pytest.approx(sum(REVIEW_WORKING) / 6)
    assert review.times.working_p90 == pytest.approx(2 * H)
    assert (review.sendbacks, review.rejections, review.refused) == (1, 1, 1)
    # the second submit of case 2 goes forward again: not a send-back
    assert steps["draft"].sendbacks == 0
    assert steps["draft"].times.count == 6
    assert steps["draft"].times.mean == pytest.approx((5 * H + 0.5 * H) / 6)
    assert (steps["published"].errors, steps["published"].complaints) == (1, 1)
    assert process.cycle is not None
    assert process.cycle.count == 3
    assert process.cycle.median == pytest.approx(rank(CYCLES, 0.5)) == 4 * H
    assert process.cycle.max == 22 * H
    (deadline,) = process.deadlines
    # spans: case 1, case 2 twice (restarted on re-entry), cases 3, 5 and 6; case 2's second breached
    # and escalated to rung 2
    assert (deadline.spans, deadline.met, deadline.breached, deadline.rungs) == (6, 5, 1, (0, 1, 0))
    assert deadline.compliance == pytest.approx(5 / 6)
    (week,) = process.weeks
    assert (week.week, week.spans, week.met) == ("2026-03-02", 6, 5)
    (month,) = process.months
    assert (month.month, month.errors, month.complaints, month.scores) == ("2026-03", 1, 1, 2)
    assert month.satisfaction == 50.0  # CSAT: one 5 and one 2
    assert month.error_rate == pytest.approx(1 / 5)
    people = {w.who: w for w in process.people}
    assert people["ed"].done == 8  # six reviews and two ratings
    assert people["ed"].time_put_in == pytest.approx(sum(REVIEW_WORKING) + 1.5 * H + 2 * H)
    roles = {w.who: w for w in process.roles}
    assert roles["writer"].open == 3  # case 4 in draft, cases 5 and 6 in published
    backlog = {b.state: b for b in process.backlog}
    assert backlog["draft"].open == 1
    assert backlog["draft"].ages == (0, 0, 0, 1, 0)  # started Tuesday 09:00, three days ago
    assert backlog["published"].ages == (0, 0, 2, 0, 0)
    flow = {(f.week, f.state): f.cumulative for f in process.flow}
    assert flow[("2026-03-02", "review")] == 6


def test_report_by_person_role_version_and_week(sop: Engine, clock: Clock) -> None:
    build(sop, clock)
    by_person = {s.key: s for s in sop.report("article", by="person").processes[0].steps}
    assert by_person["ed"].times.count == 8
    assert by_person["wu"].refused == 1
    by_version = sop.report("article", by="version").processes[0].steps
    assert [s.key for s in by_version] == ["1"]
    by_week = sop.report("article", by="week").processes[0].steps
    assert [s.key for s in by_week] == ["2026-03-02"]
    with pytest.raises(UsageError):
        sop.report("article", by="colour")


def test_since_and_until_bound_the_records(sop: Engine, clock: Clock) -> None:
    build(sop, clock)
    monday = sop.report(
        "article", since=datetime(2026, 3, 2, tzinfo=UTC), until=datetime(2026, 3, 3, tzinfo=UTC)
    ).processes[0]
    review = next(s for s in monday.steps if s.key == "review")
    assert review.times.count == 2  # case 1 and case 2's send-back; case 2's second visit ends Tuesday


def test_baselines_are_versioned_and_flag_worse_steps(sop: Engine, clock: Clock) -> None:
    build(sop, clock)
    first = sop.set_baseline("article", "review", 1.5 * H, source="industry report 2026", actor="ed")
    second = sop.set_baseline("article", "review", 0.5 * H, source="industry report 2027", actor="ed")
    assert second.id > first.id
    assert [b.seconds for b in sop.baselines("article")] == [1.5 * H, 0.5 * H]  # never overwritten
    review = next(s for s in sop.report("article").processes[0].steps if s.key == "review")
    assert review.baseline == 0.5 * H
    assert review.change == pytest.approx(1.0)  # median 1h against 30m
    assert review.flagged  # more than the definition's 20 %
    sop.set_baseline("article", "review", 0.9 * H, source="tolerant", actor="ed")
    review = next(s for s in sop.report("article").processes[0].steps if s.key == "review")
    assert review.change == pytest.approx(1 / 0.9 - 1) and review.flagged is False  # +11 % ≤ 20 %
    with pytest.raises(NotFound, match="no step `reveiw`"):
        sop.set_baseline("article", "reveiw", H, source="x", actor="ed")
    with pytest.raises(UsageError):
        sop.set_baseline("article", "review", H, source=" ", actor="ed")


def test_baseline_update_records_last_months_own_medians_once(sop: Engine, clock: Clock) -> None:
    build(sop, clock)
    clock.now = datetime(2026, 4, 1, 3, 0, tzinfo=UTC)
    added = sop.update_baselines()
    own = {b.step: b for b in added}
    assert own["review"].seconds == H and own["review"].period == "2026-03"
    assert own[""].seconds == 4 * H  # the whole process: the median cycle time
    assert sop.update_baselines() == []  # the month is recorded once
    with pytest.raises(UsageError, match="not a month"):
        sop.update_baselines("March")


def test_check_finds_a_derived_row_that_differs_from_the_trail(sop: Engine, clock: Clock) -> None:
    ids = build(sop, clock)
    sop.report("article")
    assert sop.report_check() == []
    from sqlalchemy import update

    from sopflow.engine.store.tables import insight_steps

    with sop.store.engine.begin() as conn:
        conn.execute(
            update(insight_steps)
            .where(insight_steps.c.case_id == ids["c1"], insight_steps.c.state == "review")
            .values(wall_seconds=60.0)
        )
    ((case_id, problem),) = sop.report_check()
    assert case_id == ids["c1"] and "wall_seconds" in problem
    (finding,) = sop.verify().findings  # audit verify names it too
    assert finding.case_id == ids["c1"] and "report figures differ from its trail" in finding.problem


def test_refresh_derives_only_what_grew(sop: Engine, clock: Clock) -> None:
    from sopflow.engine.insight.refresh import refresh

    ids = build(sop, clock)
    assert refresh(sop) == 6
    assert refresh(sop) == 0
    sop.fire(ids["c4"], "submit", actor="xu")
    assert refresh(sop) == 1


def test_compare_two_versions(sop: Engine, clock: Clock, tmp_path: Path) -> None:
    """Version 2 drops nothing but is faster at review: 8 cases each, every review of version 2 quicker
    than every one of version 1, so the exact U test gives p = 2/C(16,8)."""
    text = (FIXTURE / "article.yaml").read_text(encoding="utf-8").replace("version: 1", "version: 2", 1)
    folder = tmp_path / "v2"
    folder.mkdir()
    (folder / "article.yaml").write_text(text, encoding="utf-8")
    (folder / "org.yaml").write_text((FIXTURE / "org.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    for version, minutes in ((1, 120), (2, 30)):
        if version == 2:
            sop.deploy([folder])
        for i in range(8):
            clock.at(9, 9)
            cid = sop.start("article", {"title": f"v{version}-{i}"}, actor="wu").case.id
            clock.at(9, 10)
            sop.fire(cid, "submit", actor="wu")
            clock.now += timedelta(minutes=minutes + i)
            sop.fire(cid, "reject_article" if version == 1 and i < 2 else "approve", actor="ed")
    c = sop.compare("article", 1, 2)
    review = next(s for s in c.steps if s.step == "review")
    assert (review.n1, review.n2) == (8, 8)
    assert review.median1 == pytest.approx(123.5 * 60) and review.median2 == pytest.approx(33.5 * 60)
    assert review.exact and review.p_value == pytest.approx(2 / math.comb(16, 8))
    assert review.significant and review.ratio is not None and review.ratio < 0.5
    assert review.ratio_ci is not None and review.ratio_ci[1] < 1
    rejection = next(r for r in c.rates if r.name == "rejection")
    assert (rejection.hits1, rejection.cases1, rejection.hits2, rejection.cases2) == (2, 8, 0, 8)
    assert rejection.p_value == pytest.approx(stats.fisher_exact(2, 6, 0, 8))
    assert not rejection.significant
    assert c.verdict.startswith("Version 2 is faster at review (median −73 %".replace("−", "-"))
    assert "the difference in rejection rate is not significant with 16 cases" in c.verdict
    assert samples(sop.store, Scope("article", versions=(2,)), "review")
    with pytest.raises(UsageError):
        sop.compare("article", 1, 1)


def test_reports_show_only_what_the_viewer_may_see(sop: Engine, clock: Clock, tmp_path: Path) -> None:
    """Under a permission matrix a writer sees their own cases only; without one, everyone sees all."""
    build(sop, clock)
    assert sop.report("article", viewer="wu").processes[0].steps == sop.report("article").processes[0].steps
    matrix = (
        "access:\n"
        "  writer:\n    - {actions: [view, start, modify], scope: own}\n"
        "  editor:\n    - {actions: [view, start, modify], scope: all}\n"
        "  admin:\n    - {actions: [view, export, start, modify, administer], scope: all}\n"
    )
    (tmp_path / "org.yaml").write_text((FIXTURE / "org.yaml").read_text(encoding="utf-8") + matrix, "utf-8")
    (tmp_path / "article.yaml").write_text((FIXTURE / "article.yaml").read_text(encoding="utf-8"), "utf-8")
    sop.deploy([tmp_path])
    mine = {s.key: s for s in sop.report("article", viewer="wu").processes[0].steps}
    assert mine["review"].times.count == 4  # cases 1, 3, 5 and 6: not xu's case 2
    everything = {s.key: s for s in sop.report("article", viewer="ed").processes[0].steps}
    assert everything["review"].times.count == 6


def test_unknown_definition_is_named(sop: Engine) -> None:
    with pytest.raises(NotFound):
        sop.report("artcle")


def test_the_worker_records_last_months_baselines_once_a_month(sop: Engine, clock: Clock) -> None:
    import threading

    from sopflow.engine.insight.baseline import MonthlyUpdate

    build(sop, clock)
    monthly = MonthlyUpdate(sop)
    clock.now = datetime(2026, 4, 1, 0, 5, tzinfo=UTC)
    added = monthly.run_due(clock.now)
    assert added is not None and {b.period for b in added} == {"2026-03"}
    assert monthly.run_due(clock.now + timedelta(days=3)) is None  # the same month: nothing to do
    clock.now = datetime(2026, 5, 1, tzinfo=UTC)
    assert monthly.run_due(clock.now) == []  # April had no records
    stop = threading.Event()
    again = MonthlyUpdate(sop)
    thread = threading.Thread(target=again.run, args=(stop, 0.01))
    thread.start()
    try:
        for _ in range(500):
            if again.done == "2026-04":
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(5)
    assert again.done == "2026-04"
    assert len(sop.baselines("article")) == len(added)  # recorded once, however often it runs


def test_readers_refreshing_at_once_agree(database_url: str, sop: Engine, clock: Clock) -> None:
    """Two reports deriving the same new cases at the same moment: neither fails, the rows are right."""
    import threading

    from sopflow.engine.insight.refresh import refresh

    build(sop, clock)
    errors: list[BaseException] = []
    other = Engine(database_url, clock=clock)
    barrier = threading.Barrier(2)

    def derive(engine: Engine) -> None:
        try:
            barrier.wait(5)
            refresh(engine)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=derive, args=(e,)) for e in (sop, other)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        other.close()
    assert errors == []
    assert sop.report_check() == []
    assert sum(s.times.count for s in sop.report("article").processes[0].steps if s.key == "review") == 6


def test_nps_is_promoters_less_detractors(sop: Engine, clock: Clock, tmp_path: Path) -> None:
    text = (
        (FIXTURE / "article.yaml")
        .read_text(encoding="utf-8")
        .replace("version: 1", "version: 2", 1)
        .replace("scale: csat", "scale: nps")
        .replace("maximum: 5", "maximum: 10")
    )
    (tmp_path / "article.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "org.yaml").write_text((FIXTURE / "org.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    sop.deploy([tmp_path])
    for score in (10, 9, 7, 3):  # two promoters, one passive, one detractor
        cid = sop.start("article", {"title": "n"}, actor="wu").case.id
        sop.fire(cid, "submit", actor="wu")
        sop.fire(cid, "approve", actor="ed")
        sop.fire(cid, "rate", actor="ed", payload={"csat": score})
    (process,) = sop.report("article").processes
    assert process.satisfaction_scale == "nps"
    (month,) = process.months
    assert (month.scores, month.satisfaction) == (4, 25.0)  # 50 % promoters − 25 % detractors
