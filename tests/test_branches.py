"""Parallel branches on SQLite and PostgreSQL: a parallel state starts its branches on entry, each branch's
steps are the case's own audited steps (`BRANCH.EVENT`), with their owner, assignee, guard and payload; the
step that completes the join moves the case on, exactly once, and names the branches it cancelled; a
branch's deadline ends with its branch; `show`, `tasks` and `audit verify` see every branch. The fixtures:
launch (materials, venue, staffing, join all) and quotes (join at least two of three) in
tests/fixtures/branches."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sopflow.engine import Engine
from sopflow.engine.errors import GuardRefused, InvalidData, NotAvailable, NotPermitted
from sopflow.engine.worker import ConsoleChannel, Worker
from tests.conftest import DEFINITIONS, ROOT, Clock, engine_on

BRANCHES = ROOT / "tests" / "fixtures" / "branches"


@pytest.fixture
def sop(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, BRANCHES)


def _preparing(sop: Engine) -> int:
    case = sop.start("launch", {"title": "spring", "venue_lead": "max"}, actor="alice").case
    sop.fire(case.id, "plan", actor="alice")
    return case.id


def test_entering_the_state_starts_every_branch_with_its_owner_and_assignee(sop: Engine) -> None:
    case = _preparing(sop)
    assert sop.case(case).state == "preparing"
    shown = {b.name: (b.state, b.owner, b.assignee, b.done) for b in sop.branches(case)}
    assert shown == {
        "materials": ("ordering", "finance", None, False),
        "venue": ("booking", "manager", "max", False),
        "staffing": ("staffing", "employee", None, False),
    }
    assert sop.history(case)[-1].detail["branches"]["venue"] == {"state": "booking", "assignee": "max"}


def test_each_branch_step_is_one_audited_step_and_the_join_fires_once(sop: Engine) -> None:
    case = _preparing(sop)
    done = sop.fire(case, "ordered", actor="fay", payload={"budget": 300})
    assert (done.record.event, done.record.from_state, done.record.to_state) == (
        "materials.ordered",
        "preparing",
        "preparing",
    )
    assert done.record.detail["branch"] == "materials"
    assert sop.case(case).data["budget"] == 300
    sop.fire(case, "venue.booked", actor="max")
    sop.fire(case, "received", actor="bob")
    assert sop.case(case).state == "preparing"
    last = sop.fire(case, "staffed", actor="bob")
    assert sop.case(case).state == "ready"
    assert last.record.to_state == "ready"
    assert last.record.detail["join"] == {
        "rule": "all",
        "needed": 3,
        "done": ["materials", "venue", "staffing"],
        "cancelled": [],
    }
    assert [r.detail.get("join") is not None for r in sop.history(case)].count(True) == 1
    assert sop.branches(case) == []
    assert sop.verify().ok, sop.verify().findings


def test_a_branch_step_is_refused_for_the_wrong_person_its_guard_and_when_done(sop: Engine) -> None:
    case = _preparing(sop)
    with pytest.raises(NotPermitted, match="needs finance"):
        sop.fire(case, "materials.ordered", actor="bob", payload={"budget": 1})
    with pytest.raises(GuardRefused, match="Order the materials first"):
        sop.fire(case, "venue.booked", actor="max")
    with pytest.raises(InvalidData):
        sop.fire(case, "ordered", actor="fay", payload={})
    sop.fire(case, "ordered", actor="fay", payload={"budget": 1})
    with pytest.raises(NotPermitted):  # bob is neither the venue's assignee nor a manager
        sop.fire(case, "venue.booked", actor="bob")
    sop.fire(case, "venue.booked", actor="max")
    with pytest.raises(NotAvailable, match="branch `venue` of `preparing` is done"):
        sop.fire(case, "venue.booked", actor="max")
    with pytest.raises(NotAvailable, match="no branch `nowhere`"):
        sop.fire(case, "nowhere.booked", actor="max")
    with pytest.raises(NotAvailable, match=r"events here now: materials\.received, staffing\.staffed"):
        sop.fire(case, "booked", actor="max")
    refused = [r for r in sop.history(case) if r.outcome == "refused"]
    assert len(refused) == 3  # not permitted (twice), guard refused: each audited, naming the branch
    assert all(r.detail.get("branch") in ("materials", "venue") for r in refused)
    assert sop.verify().ok, sop.verify().findings


def test_an_event_several_open_branches_have_must_name_its_branch(sop: Engine) -> None:
    case = sop.start("quotes", {}, actor="fay").case
    with pytest.raises(NotAvailable, match=r"name the branch: `north\.quoted`"):
        sop.fire(case.id, "quoted", actor="fay", payload={"price": 5})
    sop.fire(case.id, "north.quoted", actor="fay", payload={"price": 5})
    assert sop.case(case.id).state == "asking"
    # Only south offers `quoted` now: the bare event is inferred.
    joined = sop.fire(case.id, "quoted", actor="fay", payload={"price": 4})
    assert joined.record.event == "south.quoted"
    assert sop.case(case.id).state == "chosen"
    assert joined.record.detail["join"]["cancelled"] == ["east"]
    assert sop.verify().ok, sop.verify().findings


def test_the_state_own_events_still_leave_it_and_end_its_branches(sop: Engine) -> None:
    case = _preparing(sop)
    sop.fire(case, "ordered", actor="fay", payload={"budget": 1})
    sop.fire(case, "abandon", actor="mia")
    assert sop.case(case).state == "abandoned"
    assert sop.deadlines(case) == []
    assert sop.verify().ok, sop.verify().findings


def test_show_and_tasks_list_each_branch_for_whom_may_act(sop: Engine) -> None:
    case = _preparing(sop)
    options = {o.event: o.allowed for o in sop.options(case, "fay")}
    assert options["materials.ordered"] is True
    assert options["staffing.staffed"] is False
    assert [t.events for t in sop.tasks("fay")] == [("materials.ordered",)]
    assert [t.events for t in sop.tasks("bob")] == [("staffing.staffed",)]
    sop.fire(case, "staffed", actor="bob")
    assert sop.tasks("bob") == []


def test_a_branch_deadline_runs_with_its_branch_and_ends_when_the_branch_is_done(
    sop: Engine, clock: Clock
) -> None:
    case = _preparing(sop)
    assert [d.name for d in sop.deadlines(case)] == ["venue-in-2h"]
    sop.fire(case, "ordered", actor="fay", payload={"budget": 1})
    sop.fire(case, "venue.booked", actor="max")
    assert sop.deadlines(case) == []
    clock.advance(hours=3)
    Worker(sop, channels=[ConsoleChannel(write=lambda _line: None)]).tick()
    assert all(r.event != "deadline_breached" for r in sop.history(case))
    assert sop.verify().ok, sop.verify().findings


def test_a_branch_deadline_breach_escalates_on_its_own(sop: Engine, clock: Clock) -> None:
    case = _preparing(sop)
    sop.fire(case, "staffed", actor="bob")
    clock.advance(hours=2, minutes=1)
    Worker(sop, channels=[ConsoleChannel(write=lambda _line: None)]).tick()
    breached = [r for r in sop.history(case) if r.actor == "$system"]
    assert breached and breached[0].detail["deadline"] == "venue-in-2h"
    assert sop.case(case).state == "preparing"  # the other branches go on
    assert sop.verify().ok, sop.verify().findings


# -- property: random interleavings of branch events ------------------------------------------------

_FANOUT = {"a": ["a1", "a2"], "b": ["b1"], "c": ["c1"]}
"""fanout.yaml: branch → its events in order; the join needs two branches done."""


@settings(max_examples=30, deadline=None)
@given(order=st.lists(st.sampled_from(["a.a1", "a.a2", "b.b1", "c.c1", "a1", "b1"]), min_size=1, max_size=8))
def test_any_interleaving_joins_exactly_once_and_only_when_its_rule_is_met(
    order: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = f"sqlite:///{tmp_path_factory.mktemp('p') / 'p.db'}"
    with Engine(url, clock=Clock()) as sop:
        sop.deploy([BRANCHES])
        case = sop.start("fanout", {}, actor="bob").case.id
        taken = dict.fromkeys(_FANOUT, 0)
        for event in order:
            branch, _, bare = event.rpartition(".")
            branch = branch or bare[0]
            done = sum(taken[n] == len(events) for n, events in _FANOUT.items())
            expected_ok = (
                done < 2 and taken[branch] < len(_FANOUT[branch]) and _FANOUT[branch][taken[branch]] == bare
            )
            if expected_ok:
                sop.fire(case, event, actor="bob")
                taken[branch] += 1
            else:
                with pytest.raises(NotAvailable):
                    sop.fire(case, event, actor="bob")
            done = sum(taken[n] == len(events) for n, events in _FANOUT.items())
            assert (sop.case(case).state == "joined") == (done >= 2)
        joins = [r for r in sop.history(case) if "join" in r.detail]
        assert len(joins) == (1 if sum(taken[n] == len(e) for n, e in _FANOUT.items()) >= 2 else 0)
        assert sop.verify().ok, sop.verify().findings


# -- crashes and races ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_killed_at_random_moments_never_joins_twice(database_url: str) -> None:
    import random
    import signal

    from tests.test_concurrency import _spawn

    rng = random.Random(20261206)
    kills = 20
    for _ in range(kills):
        worker = _spawn("tests.helpers.branch_worker", database_url, str(BRANCHES))
        assert worker.stdout is not None
        line = worker.stdout.readline().strip()
        assert line == "ready", worker.stderr.read() if worker.stderr else line
        time.sleep(rng.uniform(0.0, 0.15))
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=30)
    with Engine(database_url) as sop:
        report = sop.verify()
        assert report.ok, report.findings
        joined = 0
        for case_id in sop.store.iter_case_ids():
            history = sop.history(case_id)
            joins = [r for r in history if "join" in r.detail]
            case = sop.case(case_id)
            assert len(joins) == (1 if case.state == "joined" else 0)
            assert case.state == history[-1].to_state
            joined += len(joins)
        assert joined > 0


@pytest.mark.slow
def test_people_finishing_branches_at_once_join_the_case_once(database_url: str, clock: Clock) -> None:
    import threading

    with Engine(database_url, clock=clock) as setup:
        setup.deploy([BRANCHES])
        cases = [setup.start("fanout", {}, actor="bob").case.id for _ in range(5)]
    engines = [Engine(database_url, clock=clock) for _ in range(3)]
    errors: list[Exception] = []

    def finish(sop: Engine, event: str) -> None:
        for case_id in cases:
            try:
                sop.fire(case_id, event, actor="bob")
            except NotAvailable as exc:  # the join came first and closed the case
                errors.append(exc)

    threads = [
        threading.Thread(target=finish, args=(sop, event))
        for sop, event in zip(engines, ["a.a1", "b.b1", "c.c1"], strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sop = engines[0]
    for case_id in cases:
        history = sop.history(case_id)
        assert len([r for r in history if "join" in r.detail]) == 1
        assert sop.case(case_id).state == "joined"
    assert sop.verify().ok
    for e in engines:
        e.close()


# -- one task per item ------------------------------------------------------------------------------


def test_one_task_per_item_each_person_their_own_collected_and_joined_by_share(sop: Engine) -> None:
    case = sop.start("reviews", {"reviewers": ["b1", "b2", "b3", "b4"]}, actor="mia").case.id
    assert {b.name: b.assignee for b in sop.branches(case)} == {
        "b1": "b1",
        "b2": "b2",
        "b3": "b3",
        "b4": "b4",
    }
    assert [t.events for t in sop.tasks("b2")] == [("b2.review",)]
    with pytest.raises(NotAvailable, match="several branches"):  # b5 holds none of them
        sop.fire(case, "review", actor="b5", payload={"score": 3})
    with pytest.raises(NotPermitted):  # b2's branch is b2's
        sop.fire(case, "b1.review", actor="b2", payload={"score": 3})
    first = sop.fire(case, "review", actor="b2", payload={"score": 4})  # inferred: b2's own
    assert first.record.event == "b2.review"
    sop.fire(case, "b1.review", actor="b1", payload={"score": 2})
    assert sop.case(case).state == "reviewing"  # 2 of 4 done; 60 % needs 3
    joined = sop.fire(case, "review", actor="b4", payload={"score": 5})
    after = sop.case(case)
    assert after.state == "deciding"
    assert after.data["reviews"] == {"b1": {"score": 2}, "b2": {"score": 4}, "b4": {"score": 5}}
    assert joined.record.detail["join"] == {
        "rule": "share",
        "needed": 3,
        "done": ["b1", "b2", "b4"],
        "cancelled": ["b3"],
    }
    assert sop.verify().ok, sop.verify().findings


def test_one_task_per_item_needs_a_list_to_run_on(sop: Engine) -> None:
    with pytest.raises(InvalidData, match="at least one item"):
        sop.start("reviews", {"reviewers": []}, actor="mia")
    with pytest.raises(InvalidData, match="twice"):
        sop.start("reviews", {"reviewers": ["b1", "b1"]}, actor="mia")


def test_one_task_per_item_refuses_an_item_that_is_no_person_and_writes_nothing(sop: Engine) -> None:
    """A mistyped id in a list of people (`items: {format: user}`) would leave a branch nobody can act on
    and a join waiting for ever: the start that gives it is refused, naming the item, and no case begins."""
    with pytest.raises(InvalidData) as refused:
        sop.start("reviews", {"reviewers": ["b1", "nobody"]}, actor="mia")
    assert refused.value.message == (
        "data field `reviewers` (item 2) names 'nobody', who is not a person of the org `nested-co`"
    )
    assert refused.value.hint == "give a user id from the org"
    assert sop.cases() == []


def test_a_case_started_before_lists_were_checked_still_verifies(
    sop: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records written when a list of people took any item were allowed then: `audit verify` does not
    call them changed now that a start with such an item is refused."""
    from types import MappingProxyType

    from sopflow.engine.definition.model import Definition

    with monkeypatch.context() as before_the_check:
        before_the_check.setattr(Definition, "user_lists", lambda _self: MappingProxyType({}))
        case = sop.start("reviews", {"reviewers": ["b1", "nobody"]}, actor="mia").case.id
    with pytest.raises(InvalidData, match="'nobody', who is not a person"):
        sop.start("reviews", {"reviewers": ["b1", "nobody"]}, actor="mia")
    sop.fire(case, "review", actor="b1", payload={"score": 3})
    assert sop.verify().ok, sop.verify().findings


def test_a_list_of_people_bound_to_a_role_refuses_a_member_without_it(
    database_url: str, clock: Clock, tmp_path: Path
) -> None:
    folder = tmp_path / "bound"
    folder.mkdir()
    text = (BRANCHES / "reviews.yaml").read_text(encoding="utf-8")
    text = text.replace(
        "items: {type: string, format: user}", "items: {type: string, format: user, role: board}"
    )
    (folder / "reviews.yaml").write_text(text, encoding="utf-8")
    (folder / "org.yaml").write_text((BRANCHES / "org.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    for sop in engine_on(database_url, clock, folder):
        with pytest.raises(
            InvalidData, match=r"`reviewers` \(item 2\) names mia, who does not hold the role board"
        ):
            sop.start("reviews", {"reviewers": ["b1", "mia"]}, actor="mia")
        assert sop.cases() == []
        case = sop.start("reviews", {"reviewers": ["b1", "b2"]}, actor="mia").case.id
        assert {b.assignee for b in sop.branches(case)} == {"b1", "b2"}


def test_a_step_that_names_a_team_checks_each_member(database_url: str, clock: Clock) -> None:
    """The seed appraisal names its team after the start (`name_team` copies the list into the data): a
    member who is not in the org is refused there, nothing written, and a correct list is taken."""
    for sop in engine_on(database_url, clock, DEFINITIONS):
        case = sop.start(
            "performance-appraisal", {"period": "monthly", "period_label": "2026-03"}, actor="chen.jing"
        ).case.id
        before = (sop.history(case), sop.case(case).data)
        with pytest.raises(InvalidData, match=r"`team` \(item 2\) names 'liu.fng', who is not a person"):
            sop.fire(
                case,
                "name_team",
                actor="chen.jing",
                payload={"team": ["zhang.wei", "liu.fng"], "superior": "xu.ming"},
            )
        assert (sop.history(case), sop.case(case).data) == before
        sop.fire(
            case,
            "name_team",
            actor="chen.jing",
            payload={"team": ["zhang.wei", "liu.fang"], "superior": "xu.ming"},
        )
        assert sop.case(case).data["team"] == ["zhang.wei", "liu.fang"]


def test_one_task_per_item_joins_at_least_n_items_and_refuses_fewer(
    database_url: str, clock: Clock, tmp_path: Path
) -> None:
    """`join: {at_least: N}` over items: the checker cannot count them (they are known when the state is
    entered) and accepts it; entering with fewer than N items is refused, as an empty list is."""
    from sopflow.engine.definition.validate import validate_paths

    folder = tmp_path / "at-least"
    folder.mkdir()
    text = (BRANCHES / "reviews.yaml").read_text(encoding="utf-8")
    (folder / "reviews.yaml").write_text(
        text.replace("join: {share: 0.6}", "join: {at_least: 2}"), encoding="utf-8"
    )
    (folder / "org.yaml").write_text((BRANCHES / "org.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    assert validate_paths([folder]).problems == ()
    for sop in engine_on(database_url, clock, folder):
        with pytest.raises(InvalidData, match=r"`reviewers` holds 1 item\(s\), but the join needs 2 done"):
            sop.start("reviews", {"reviewers": ["b1"]}, actor="mia")
        assert sop.cases() == []
        case = sop.start("reviews", {"reviewers": ["b1", "b2", "b3"]}, actor="mia").case.id
        sop.fire(case, "review", actor="b3", payload={"score": 3})
        assert sop.case(case).state == "reviewing"
        joined = sop.fire(case, "review", actor="b1", payload={"score": 4})
        assert joined.case.state == "deciding"
        assert joined.record.detail["join"]["needed"] == 2
        assert sop.verify().ok, sop.verify().findings


@settings(max_examples=25, deadline=None)
@given(
    reviewers=st.lists(
        st.sampled_from(["b1", "b2", "b3", "mia", "nobody", "b1x", "B2"]), min_size=1, max_size=4, unique=True
    )
)
def test_a_case_over_people_starts_only_when_every_item_is_one_and_then_each_branch_has_them(
    reviewers: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = f"sqlite:///{tmp_path_factory.mktemp('p') / 'p.db'}"
    with Engine(url, clock=Clock()) as sop:
        sop.deploy([BRANCHES])
        users = set(sop.org().users)
        if all(r in users for r in reviewers):
            case = sop.start("reviews", {"reviewers": reviewers}, actor="mia").case.id
            assert {b.name: b.assignee for b in sop.branches(case)} == {r: r for r in reviewers}
        else:
            with pytest.raises(InvalidData, match="is not a person of the org"):
                sop.start("reviews", {"reviewers": reviewers}, actor="mia")
            assert sop.cases() == []


def test_simulate_and_diagram_show_each_branch() -> None:
    from click.testing import CliRunner

    from sopflow.cli.main import cli

    runner = CliRunner()
    start = [
        "--as",
        "alice",
        "simulate",
        str(BRANCHES / "launch.yaml"),
        "--data",
        '{"title": "t", "venue_lead": "max"}',
    ]
    steps = ["plan@alice", 'materials.ordered@fay={"budget": 3}', "venue.booked@max"]
    done = runner.invoke(cli, [*start, *steps])
    assert done.exit_code == 0, done.output
    assert "branch venue: booking (assignee: max)" in done.output
    assert "branch materials: receiving (employee)" in done.output
    assert "branch venue: done (branch done)" in done.output
    chart = runner.invoke(cli, ["diagram", str(BRANCHES / "reviews.yaml")])
    assert "for each of reviewers: open (board) → reviewed" in chart.output
    assert "join: 60% of the reviewers" in chart.output


@settings(max_examples=20, deadline=None)
@given(
    order=st.lists(st.sampled_from(["b1", "b2", "b3", "b4", "b5"]), min_size=1, max_size=7),
    size=st.integers(min_value=1, max_value=5),
)
def test_any_order_of_reviewers_joins_once_when_the_share_is_met(
    order: list[str], size: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import math

    reviewers = ["b1", "b2", "b3", "b4", "b5"][:size]
    needed = max(1, math.ceil(0.6 * size - 1e-9))
    url = f"sqlite:///{tmp_path_factory.mktemp('s') / 's.db'}"
    with Engine(url, clock=Clock()) as sop:
        sop.deploy([BRANCHES])
        case = sop.start("reviews", {"reviewers": reviewers}, actor="mia").case.id
        reviewed: set[str] = set()
        for person in order:
            open_now = len(reviewed) < needed
            if open_now and person in reviewers and person not in reviewed:
                sop.fire(case, "review", actor=person, payload={"score": 3})
                reviewed.add(person)
            else:
                with pytest.raises((NotAvailable, NotPermitted)):
                    sop.fire(case, "review", actor=person, payload={"score": 3})
            assert (sop.case(case).state == "deciding") == (len(reviewed) >= needed)
        joins = [r for r in sop.history(case) if "join" in r.detail]
        assert len(joins) == (1 if len(reviewed) >= needed else 0)
        assert set(sop.case(case).data.get("reviews", {})) == reviewed
        assert sop.verify().ok, sop.verify().findings


def test_the_cli_fires_a_named_branch_and_shows_each_branch(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sopflow.cli.main import cli

    runner = CliRunner()
    db = ["--db", f"sqlite:///{tmp_path / 'cli.db'}"]
    assert runner.invoke(cli, [*db, "db", "upgrade"]).exit_code == 0
    assert runner.invoke(cli, [*db, "deploy", str(BRANCHES)]).exit_code == 0
    started = runner.invoke(cli, [*db, "--as", "fay", "start", "quotes", "--data", "{}"])
    assert started.exit_code == 0, started.output
    ambiguous = runner.invoke(cli, [*db, "--as", "fay", "fire", "1", "quoted", "--data", '{"price": 5}'])
    assert ambiguous.exit_code == 1 and "--branch north" in ambiguous.output
    named = runner.invoke(
        cli, [*db, "--as", "fay", "fire", "1", "quoted", "--branch", "south", "--data", '{"price": 5}']
    )
    assert named.exit_code == 0, named.output
    shown = runner.invoke(cli, [*db, "--as", "fay", "--json", "show", "1"])
    branches = {b["branch"]: b["state"] for b in json.loads(shown.output)["branches"]}
    assert branches == {"north": "waiting", "south": "quoted", "east": "waiting"}


def test_the_cli_refuses_a_list_holding_someone_not_in_the_org(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sopflow.cli.main import cli

    runner = CliRunner()
    db = ["--db", f"sqlite:///{tmp_path / 'cli.db'}"]
    assert runner.invoke(cli, [*db, "deploy", str(BRANCHES)]).exit_code == 0
    started = runner.invoke(
        cli, [*db, "--as", "mia", "start", "reviews", "--data", '{"reviewers": ["b1", "bl"]}']
    )
    assert started.exit_code == 1, started.output
    assert started.stderr.startswith("error: data field `reviewers` (item 2) names 'bl', who is not a person")
    assert "hint: give a user id from the org" in started.stderr and "Traceback" not in started.output
    listed = runner.invoke(cli, [*db, "--json", "list"])
    assert json.loads(listed.stdout) == []


def test_the_first_branch_done_joins_and_cancels_the_other(sop: Engine) -> None:
    case = sop.start("race", {}, actor="bob").case.id
    done = sop.fire(case, "south.answered", actor="fay")
    assert sop.case(case).state == "answered"
    assert done.record.detail["join"] == {
        "rule": "first",
        "needed": 1,
        "done": ["south"],
        "cancelled": ["north"],
    }
    with pytest.raises(NotAvailable):
        sop.fire(case, "north.answered", actor="bob")
    assert sop.verify().ok, sop.verify().findings
