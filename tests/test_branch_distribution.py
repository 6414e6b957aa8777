"""Work distribution inside parallel branches, on SQLite and PostgreSQL: a branch state given to the least
loaded member of a role (the load counting open cases and the branches each person holds, the branches
given in the same step included, under the role's wip_limit, what each held recorded and decided again by
`audit verify`), and a branch state its role's members claim. The fixture: tests/fixtures/distribution
(packers with wip_limit 2, checkers with wip_limit 1)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from sopflow.cli.main import cli
from sopflow.engine import Engine
from sopflow.engine.errors import NotAvailable, NotPermitted
from tests.conftest import ROOT, Clock, engine_on

DISTRIBUTION = ROOT / "tests" / "fixtures" / "distribution"


@pytest.fixture
def sop(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, DISTRIBUTION)


def _holders(sop: Engine, case: int) -> dict[str, str | None]:
    return {b.name: b.assignee for b in sop.branches(case)}


def test_the_items_of_one_entry_are_spread_over_the_least_loaded(sop: Engine) -> None:
    case = sop.start("packing", {"stores": ["s1", "s2", "s3"]}, actor="mia").case.id
    assert _holders(sop, case) == {"s1": "p1", "s2": "p2", "s3": "p3"}
    entered = sop.history(case)[0]
    assert entered.detail["branch_wip"] == {"held": {"p1": 0, "p2": 0, "p3": 0}, "limit": {"packer": 2}}
    assert sop.verify().ok, sop.verify().findings


def test_a_pick_counts_the_branches_other_cases_give_people(sop: Engine) -> None:
    first = sop.start("packing", {"stores": ["s1", "s2"]}, actor="mia").case.id
    assert _holders(sop, first) == {"s1": "p1", "s2": "p2"}
    # A one-state least_loaded pick sees the branches: p1 and p2 hold one each, p3 none.
    assert sop.start("sorting", {}, actor="mia").case.assignee == "p3"
    second = sop.start("packing", {"stores": ["t1"]}, actor="mia").case.id
    assert sop.history(second)[0].detail["branch_wip"]["held"] == {"p1": 1, "p2": 1, "p3": 1}
    assert _holders(sop, second) == {"t1": "p1"}
    # A branch that moves on to another role's state is no longer its packer's load.
    sop.fire(first, "s1.packed", actor="p1")
    sop.fire(first, "s2.packed", actor="p2")
    assert sop.start("sorting", {}, actor="mia").case.assignee == "p2"
    assert sop.verify().ok, sop.verify().findings


def test_the_wip_limit_passes_by_those_holding_it_and_notes_when_everyone_does(sop: Engine) -> None:
    stores = [f"s{i}" for i in range(1, 8)]
    case = sop.start("packing", {"stores": stores}, actor="mia").case.id
    held = _holders(sop, case)
    assert [held[s] for s in stores] == ["p1", "p2", "p3", "p1", "p2", "p3", "p1"]
    wip = sop.history(case)[0].detail["branch_wip"]
    assert wip["over_limit"] == ["p1"]  # the seventh: every packer held two
    assert sop.verify().ok, sop.verify().findings


def test_a_branch_state_is_claimed_once_by_a_member_under_their_wip_limit(sop: Engine) -> None:
    case = sop.start("packing", {"stores": ["s1", "s2"]}, actor="mia").case.id
    sop.fire(case, "s1.packed", actor="p1")
    sop.fire(case, "s2.packed", actor="p2")
    assert _holders(sop, case) == {"s1": None, "s2": None}
    assert sorted(e for t in sop.tasks("c2") for e in t.events) == ["s1.claim", "s2.claim"]
    with pytest.raises(NotAvailable, match="several branches"):
        sop.fire(case, "claim", actor="c1")
    with pytest.raises(NotPermitted, match="needs the role checker"):
        sop.fire(case, "s1.claim", actor="p1")
    claimed = sop.fire(case, "s1.claim", actor="c1")
    assert claimed.record.detail["claimed_by"] == "c1" and claimed.record.detail["held"] == 0
    assert _holders(sop, case)["s1"] == "c1"
    with pytest.raises(NotPermitted, match="already claimed by c1"):
        sop.fire(case, "s1.claim", actor="c2")
    with pytest.raises(NotPermitted, match="wip_limit 1"):
        sop.fire(case, "s2.claim", actor="c1")  # c1 holds s1 already
    assert "s1.checked" in [e for t in sop.tasks("c1") for e in t.events]
    sop.fire(case, "claim", actor="c2")  # the only branch still offered
    sop.fire(case, "checked", actor="c1")
    sop.fire(case, "checked", actor="c2")
    assert sop.case(case).state == "shipped"
    assert sop.verify().ok, sop.verify().findings


def test_verify_names_branches_given_to_other_people_than_the_recorded_loads_give(
    sop: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sopflow.engine import branches

    real = branches._Picker.assignee

    def everything_to_p1(self: branches._Picker, state: Any, data: Any) -> str | None:
        real(self, state, data)  # records what each held, as the right pick does
        return "p1"

    fair = sop.start("packing", {"stores": ["s1", "s2"]}, actor="mia").case.id
    monkeypatch.setattr(branches._Picker, "assignee", everything_to_p1)
    wrong = sop.start("packing", {"stores": ["t1", "t2"]}, actor="mia").case.id
    monkeypatch.undo()
    assert _holders(sop, wrong) == {"t1": "p1", "t2": "p1"}
    assert sop.verify(fair).ok
    report = sop.verify(wrong)
    assert [(f.case_id, f.seq) for f in report.findings] == [(wrong, 1)]


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=3))
def test_any_run_of_entries_keeps_the_packers_loads_within_one_of_each_other(
    sizes: list[int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = f"sqlite:///{tmp_path_factory.mktemp('spread') / 'x.db'}"
    with Engine(url) as sop:
        sop.deploy([DISTRIBUTION])
        for n in sizes:
            sop.start("packing", {"stores": [f"s{i}" for i in range(n)]}, actor="mia")
        loads = [sop.store.open_cases(p) for p in ("p1", "p2", "p3")]
        assert sum(loads) == sum(sizes)
        assert max(loads) - min(loads) <= 1
        assert sop.verify().ok


def test_simulate_and_diagram_show_how_a_branch_state_gives_its_work() -> None:
    runner = CliRunner()
    chart = runner.invoke(cli, ["diagram", str(DISTRIBUTION / "packing.yaml")])
    assert chart.exit_code == 0, chart.output
    assert (
        "for each of stores: pack (packer; least loaded packer) → check (checker; claimed by checker) → done"
        in chart.output
    )
    steps = ["s1.packed@p1", "s2.packed@p2", "s1.claim@c1", "s1.checked@c1"]
    packing = str(DISTRIBUTION / "packing.yaml")
    start = ["--as", "mia", "simulate", packing, "--data", '{"stores": ["s1", "s2"]}']
    done = runner.invoke(cli, [*start, *steps])
    assert done.exit_code == 0, done.output
    assert "branch s1: pack (assignee: p1)" in done.output
    assert "branch s2: pack (assignee: p2)" in done.output
    assert "branch s1: check (assignee: c1)" in done.output


# -- a deadline per item: `branch: each` ------------------------------------------------------------


def _tick(sop: Engine) -> None:
    from sopflow.engine.worker import ConsoleChannel, Worker

    Worker(sop, channels=[ConsoleChannel(write=lambda _line: None)]).tick()


def test_each_item_has_a_deadline_of_its_own_that_ends_with_its_branch(sop: Engine, clock: Clock) -> None:
    case = sop.start("visits", {"stores": ["north", "south", "east"]}, actor="mia").case.id
    running = {d.name: d.title for d in sop.deadlines(case)}
    assert sorted(running) == ["visit-in-2h@east", "visit-in-2h@north", "visit-in-2h@south"]
    assert running["visit-in-2h@north"] is not None  # the deadline's title
    sop.fire(case, "north.visited", actor="p1")
    assert sorted(d.name for d in sop.deadlines(case)) == ["visit-in-2h@east", "visit-in-2h@south"]
    clock.advance(hours=1)
    sop.fire(case, "south.visited", actor="p2")
    clock.advance(hours=1, minutes=1)
    _tick(sop)
    breaches = [r.detail["deadline"] for r in sop.history(case) if r.event == "deadline_breached"]
    assert breaches == ["visit-in-2h@east"]  # only the late item's
    clock.advance(hours=1)
    _tick(sop)
    rungs = [r.detail["deadline"] for r in sop.history(case) if r.event == "escalate"]
    assert rungs == ["visit-in-2h@east"]
    assert sop.case(case).state == "visiting"  # the other items' work goes on
    assert sop.verify().ok, sop.verify().findings
    sop.fire(case, "east.visited", actor="p3")
    assert sop.case(case).state == "reported"
    assert sop.deadlines(case) == []
    assert sop.verify().ok, sop.verify().findings


def test_leaving_the_state_ends_every_item_deadline(sop: Engine, clock: Clock) -> None:
    case = sop.start("visits", {"stores": ["north", "south"]}, actor="mia").case.id
    sop.fire(case, "north.visited", actor="p1")
    sop.fire(case, "abandon", actor="mia")
    assert sop.deadlines(case) == []
    clock.advance(hours=5)
    _tick(sop)
    assert not [r for r in sop.history(case) if r.event == "deadline_breached"]
    assert sop.verify().ok, sop.verify().findings


def test_an_item_deadline_removed_is_named_by_verify(sop: Engine) -> None:
    from tests.helpers.tamper import run_sql

    case = sop.start("visits", {"stores": ["north", "south"]}, actor="mia").case.id
    pending = sorted(t.name for t in sop.store.pending_timers(case))
    assert pending == ["visit-in-2h@north", "visit-in-2h@south"]
    assert sop.verify(case).ok
    run_sql(sop, f"DELETE FROM timers WHERE name = 'visit-in-2h@south' AND case_id = {case}")
    report = sop.verify(case)
    assert not report.ok
    assert "deadline `visit-in-2h@south`" in report.findings[0].problem


# -- the remaining branches run to their end: `remaining: finish` -------------------------------------


def test_the_first_done_moves_the_case_on_and_the_others_run_to_their_end(sop: Engine) -> None:
    case = sop.start("sourcing", {}, actor="mia").case.id
    joined = sop.fire(case, "a.quoted", actor="p1")
    assert joined.case.state == "deciding"
    assert joined.record.detail["join"] == {
        "rule": "first", "needed": 1, "done": ["a"], "cancelled": [], "remaining": ["b", "c"],
    }  # fmt: skip
    running = {b.name: (b.state, b.after_join) for b in sop.branches(case)}
    assert running == {"b": ("waiting", True), "c": ("drafting", True)}
    assert "b.quoted" in [e for t in sop.tasks("p2") for e in t.events]
    assert [e for t in sop.tasks("c1") for e in t.events] == ["c.drafted"]
    late = sop.fire(case, "b.quoted", actor="p2")
    assert (late.record.from_state, late.record.to_state) == ("deciding", "deciding")
    assert late.record.detail["branch"] == "b" and "join" not in late.record.detail
    with pytest.raises(NotAvailable, match="done"):
        sop.fire(case, "b.quoted", actor="p2")
    with pytest.raises(NotAvailable):
        sop.fire(case, "a.quoted", actor="p1")  # done before the join
    sop.fire(case, "c.drafted", actor="c1")
    sop.fire(case, "quoted", actor="c1")  # the only open branch with it
    assert sop.branches(case) == []
    sop.fire(case, "decide", actor="mia")
    history = sop.history(case)
    assert len([r for r in history if "join" in r.detail]) == 1
    assert sop.verify().ok, sop.verify().findings


def test_a_branch_running_on_keeps_its_deadline_until_it_is_done(sop: Engine, clock: Clock) -> None:
    case = sop.start("sourcing", {}, actor="mia").case.id
    sop.fire(case, "b.quoted", actor="p2")
    assert [d.name for d in sop.deadlines(case)] == ["c-in-2h"]
    clock.advance(hours=2, minutes=1)
    _tick(sop)
    assert [r.detail["deadline"] for r in sop.history(case) if r.event == "deadline_breached"] == ["c-in-2h"]
    sop.fire(case, "c.drafted", actor="c1")
    sop.fire(case, "c.quoted", actor="c1")
    assert sop.deadlines(case) == []
    assert sop.verify().ok, sop.verify().findings


def test_the_case_closing_ends_the_branches_running_on(sop: Engine) -> None:
    case = sop.start("sourcing", {}, actor="mia").case.id
    sop.fire(case, "c.drafted", actor="c1")
    sop.fire(case, "a.quoted", actor="p1")
    sop.fire(case, "decide", actor="mia")
    assert sop.branches(case) == [] and sop.deadlines(case) == []
    with pytest.raises(NotAvailable, match="closed"):
        sop.fire(case, "b.quoted", actor="p2")
    assert sop.verify().ok, sop.verify().findings


_SOURCING = [
    ("a.quoted", "p1"), ("b.quoted", "p2"), ("c.drafted", "c1"), ("c.quoted", "c1"), ("decide", "mia"),
]  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(order=st.lists(st.sampled_from(_SOURCING), min_size=1, max_size=7))
def test_any_interleaving_joins_once_and_the_rest_finish_until_the_case_closes(
    order: list[tuple[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from sopflow.engine.errors import SopflowError

    url = f"sqlite:///{tmp_path_factory.mktemp('finish') / 'x.db'}"
    with Engine(url) as sop:
        sop.deploy([DISTRIBUTION])
        case = sop.start("sourcing", {}, actor="mia").case.id
        done: set[str] = set()
        for event, actor in order:
            branch = event.split(".")[0]
            before = sop.case(case).state
            try:
                sop.fire(case, event, actor=actor)
            except SopflowError:
                # Refused only when it could not be taken: its branch done (or not there yet), before the
                # join (decide), or the case closed.
                assert event in done or before == "decided" or (event == "decide" and before == "asking") or (
                    event == "c.quoted" and "c.drafted" not in done
                )
                continue
            done.add(event)
            if branch in "abc" and event != "c.drafted":
                assert sop.case(case).state in ("deciding", "decided")  # the first quote joins
        joins = [r for r in sop.history(case) if "join" in r.detail]
        quoted = [e for e in done if e.endswith("quoted")]
        assert len(joins) == (1 if quoted else 0)
        assert sop.verify().ok, sop.verify().findings


def test_simulate_and_diagram_show_the_branches_running_on() -> None:
    runner = CliRunner()
    sourcing = str(DISTRIBUTION / "sourcing.yaml")
    chart = runner.invoke(cli, ["diagram", sourcing])
    assert "join: first of 3 branches, the rest finish" in chart.output
    done = runner.invoke(cli, ["--as", "mia", "simulate", sourcing, "a.quoted@p1", "b.quoted@p2"])
    assert done.exit_code == 0, done.output
    after_join = done.output.split("a.quoted")[1]
    assert "branch b: waiting (assignee: p1)" in after_join and "branch c: drafting (checker)" in after_join
    assert "branch c: drafting (checker)" in done.output.split("b.quoted")[1]


def test_a_suspension_pauses_each_item_deadline_with_the_time_it_had_left(sop: Engine, clock: Clock) -> None:
    case = sop.start("visits", {"stores": ["north", "south"]}, actor="mia").case.id
    clock.advance(hours=1)
    sop.fire(case, "north.visited", actor="p1")
    sop.suspend(case, actor="root", reason="the stores are closed for the holiday")
    clock.advance(hours=3)
    _tick(sop)
    assert not [r for r in sop.history(case) if r.event == "deadline_breached"]
    sop.resume(case, actor="root")
    assert [d.name for d in sop.deadlines(case)] == ["visit-in-2h@south"]
    clock.advance(minutes=59)
    _tick(sop)
    assert not [r for r in sop.history(case) if r.event == "deadline_breached"]
    clock.advance(minutes=2)
    _tick(sop)
    assert [r.detail["deadline"] for r in sop.history(case) if r.event == "deadline_breached"] == [
        "visit-in-2h@south"
    ]
    assert sop.verify().ok, sop.verify().findings


def test_a_branch_running_on_after_the_join_still_counts_in_its_holders_load(sop: Engine) -> None:
    case = sop.start("sourcing", {}, actor="mia").case.id
    assert {b.name: b.assignee for b in sop.branches(case)}["b"] == "p1"
    sop.fire(case, "a.quoted", actor="p2")
    assert sop.case(case).state == "deciding"
    assert sop.store.open_cases("p1") == 1  # b, running on after the join
    assert sop.start("sorting", {}, actor="mia").case.assignee == "p2"
    sop.fire(case, "b.quoted", actor="p1")
    assert sop.store.open_cases("p1") == 0
    sop.fire(case, "decide", actor="mia")
    assert sop.verify().ok, sop.verify().findings
