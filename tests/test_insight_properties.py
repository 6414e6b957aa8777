"""Property: whatever history a case has, and however often the figures are refreshed while it grows,
the derived table equals a recomputation from the audit trail, and a closed case's visits add up to its
life less the time it was suspended."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sopflow.engine.insight.derive import moment
from sopflow.engine.insight.refresh import refresh
from sopflow.engine.runtime import Engine
from sopflow.engine.store.insight import derived_of
from tests.insight_history import FIXTURE, Clock

MOVES = {
    "draft": [("submit", "wu", None)],
    "review": [("approve", "ed", None), ("send_back", "ed", None), ("reject_article", "ed", None),
               ("approve", "wu", None)],  # the last is refused
    "published": [("correct", "wu", None), ("complain", "ed", None), ("rate", "ed", {"csat": 4})],
}  # fmt: skip

step = st.tuples(
    st.integers(0, 3),  # which move of the state
    st.integers(1, 4000),  # minutes before it
    st.sampled_from(["none", "suspend", "refresh", "cancel", "suspend and cancel"]),  # what comes before it
)


@pytest.fixture(scope="module")
def sop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Clock]]:
    clock = Clock()
    engine = Engine(f"sqlite:///{tmp_path_factory.mktemp('prop') / 'p.db'}", clock=clock)
    engine.deploy([FIXTURE])
    try:
        yield engine, clock
    finally:
        engine.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(step, min_size=1, max_size=12))
def test_derived_rows_equal_the_trail(sop: tuple[Engine, Clock], steps: list[tuple[int, int, str]]) -> None:
    engine, clock = sop
    clock.now += timedelta(days=1)
    cid = engine.start("article", {"title": "p"}, actor="wu").case.id
    paused = 0.0
    for which, minutes, before in steps:
        case = engine.case(cid)
        if not case.open:
            break
        if before == "refresh":
            refresh(engine)
        elif before.startswith("suspend"):
            engine.suspend(cid, actor="root", reason="p")
            clock.now += timedelta(minutes=minutes // 2)
            paused += minutes // 2 * 60
            if before == "suspend":
                engine.resume(cid, actor="root")
        if before.endswith("cancel"):
            engine.cancel(cid, actor="root", reason="p")  # closes the case where it stands
            break
        clock.now += timedelta(minutes=minutes)
        moves = MOVES[case.state]
        event, actor, payload = moves[which % len(moves)]
        try:
            engine.fire(cid, event, actor=actor, payload=payload)
        except Exception as exc:  # a refused attempt is recorded and is part of the history
            assert type(exc).__name__ == "NotPermitted"
    refresh(engine)
    assert engine.report_check() == []
    rows, _spans = derived_of(engine.store, [cid])
    history = engine.history(cid)
    assert [r["seq"] for r in rows] == [h.seq for h in history if h.from_state is not None]
    if not engine.case(cid).open:
        life = (moment(history[-1].at) - moment(history[0].at)).total_seconds()
        visits = sum(r["wall_seconds"] for r in rows if r["ends_visit"])
        assert visits == pytest.approx(life - paused, abs=1e-3)
    assert all(r["working_seconds"] <= r["wall_seconds"] + 1e-6 for r in rows if r["ends_visit"])
