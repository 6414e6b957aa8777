"""The SOP lifecycle on both databases: diffs, trials and adoption, and the migration of running cases.

The fixture's `order` has two versions: version 2 renames `packing` to `pack` (with a shorter timeout),
drops `packing_late`, adds `quality_check`, shortens the deadline from 5 to 3 days, adds the required field
`channel` and caps `qty` at 100.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from sopflow.cli.main import cli
from sopflow.engine.errors import Conflict, InvalidData, NotPermitted
from sopflow.engine.runtime import Engine
from tests.conftest import ROOT, Clock

FIXTURE = ROOT / "tests" / "fixtures" / "lifecycle"
V1 = [FIXTURE / "org.yaml", FIXTURE / "order-1.yaml"]
MAP = {"packing": "pack", "packing_late": "quality_check"}


@pytest.fixture
def sop(database_url: str, clock: Clock) -> Iterator[Engine]:
    engine = Engine(database_url, clock=clock)
    try:
        engine.deploy(V1)
        yield engine
    finally:
        engine.close()


def every_state(sop: Engine, clock: Clock) -> dict[str, int]:
    """A case of version 1 in each of its states (and one whose data version 2 refuses)."""

    def start(**data: object) -> int:
        return sop.start("order", {"item": "pen", **data}, actor="mia").case.id

    ids = {"intake": start(qty=3)}
    ids["too_many"] = start(qty=300)
    ids["packing"] = start(qty=2)
    sop.fire(ids["packing"], "accept", actor="mia")
    ids["packing_late"] = start()
    sop.fire(ids["packing_late"], "accept", actor="mia")
    sop.fire(ids["packing_late"], "running_late", actor="mia")
    ids["shipping"] = start(qty=1)
    sop.fire(ids["shipping"], "accept", actor="mia")
    sop.fire(ids["shipping"], "packed", actor=sop.case(ids["shipping"]).assignee or "")
    ids["signoff"] = start(qty=1)
    sop.fire(ids["signoff"], "accept", actor="mia")
    sop.fire(ids["signoff"], "packed", actor=sop.case(ids["signoff"]).assignee or "")
    sop.fire(ids["signoff"], "shipped", actor="alice")
    sop.fire(ids["signoff"], "approve", actor="mia")  # the manager's vote, before the move
    ids["rejected"] = start()
    sop.fire(ids["rejected"], "reject", actor="mia")
    clock.advance(hours=2)
    return ids


def test_the_diff_says_what_changed_in_words(sop: Engine) -> None:
    sop.deploy([FIXTURE])
    words = [c.words for c in sop.diff("order", 1, 2).changes]
    assert "new state `pack` (owned by employee, times out after 1d)" in words
    assert "state `packing_late` is gone (it was owned by manager)" in words
    assert "`accept` in `intake` now goes to `pack` (was `packing`)" in words
    assert "new required data field `channel` (one of web, shop)" in words
    assert any(w.startswith("deadline `ship-within-5d`: from `intake`") and "within 3d" in w for w in words)
    assert sop.diff("order", 1, 1).changes == ()
    marks = sop.diff("order", 1, 2).marked_states()
    assert marks == {
        "pack": "added",
        "quality_check": "added",
        "packing": "removed",
        "packing_late": "removed",
        "intake": "changed",
    }


def test_a_trial_splits_a_thousand_starts_and_a_retry_keeps_its_version(sop: Engine) -> None:
    sop.deploy([FIXTURE])
    with pytest.raises(NotPermitted):
        sop.trial_start("order", {1: 50, 2: 50}, actor="fay")
    sop.trial_start("order", {1: 50, 2: 50}, actor="root")
    with pytest.raises(Conflict, match="runs already"):
        sop.trial_start("order", {1: 50, 2: 50}, actor="root")
    versions: dict[str, int] = {}
    for n in range(1000):
        result = sop.start("order", {"item": "pen", "channel": "web"}, actor="mia", key=f"order-{n}")
        versions[f"order-{n}"] = result.case.definition_version
        assert result.record.detail["trial"]["versions"] == {"1": 50, "2": 50}
    counts = Counter(versions.values())
    # Binomial(1000, 0.5) has a standard deviation of 15.8: 5 of them either side.
    assert 420 <= counts[1] <= 580 and counts[1] + counts[2] == 1000
    for key in list(versions)[::50]:  # retried: the same case, on the version it first landed on
        again = sop.start("order", {"item": "pen", "channel": "web"}, actor="mia", key=key)
        assert again.replayed and again.case.definition_version == versions[key]
    status = sop.trial_status("order")
    assert [(f.version, f.started) for f in status.versions] == [(1, counts[1]), (2, counts[2])]
    sop.adopt("order", 1, actor="mia")  # the process owner (the first state's owner role)
    assert all(sop.start("order", {"item": "x"}, actor="mia").case.definition_version == 1 for _ in range(5))
    with pytest.raises(Conflict, match="no trial"):
        sop.trial_stop("order", actor="root")
    sop.trial_start("order", {1: 1, 2: 3}, actor="root")
    sop.trial_stop("order", actor="root")
    assert sop.start("order", {"item": "x", "channel": "web"}, actor="mia").case.definition_version == 2
    log = [(a.action, a.actor, a.accepted) for a in sop.lifecycle_log("order")]
    assert log == [
        ("trial_start", "fay", False),
        ("trial_start", "root", True),
        ("adopt", "mia", True),
        ("trial_start", "root", True),
        ("trial_stop", "root", True),
    ]


def test_a_migration_moves_every_state_refuses_bad_data_and_verifies(sop: Engine, clock: Clock) -> None:
    ids = every_state(sop, clock)
    sop.deploy([FIXTURE])
    with pytest.raises(InvalidData, match="has no state `nowhere`"):
        sop.migrate("order", 1, 2, actor="root", state_map={"packing": "nowhere"})
    dry = sop.migrate("order", 1, 2, actor="root", state_map=MAP, defaults={"channel": "web"}, dry_run=True)
    assert all(sop.case(i).definition_version == 1 for i in ids.values())
    report = sop.migrate("order", 1, 2, actor="root", state_map=MAP, defaults={"channel": "web"})
    by_case = {c.case_id: c for c in report.cases}
    assert [(c.case_id, c.to_state, c.reason) for c in dry.cases] == [
        (c.case_id, c.to_state, c.reason) for c in report.cases
    ]
    moved = {name: by_case[i].to_state for name, i in ids.items() if by_case[i].outcome == "moved"}
    assert moved == {
        "intake": "intake",
        "packing": "pack",
        "packing_late": "quality_check",
        "shipping": "shipping",
        "signoff": "signoff",
    }
    assert (report.moved, report.skipped, report.failed) == (5, 2, 0)
    assert "qty: 300 is greater than the maximum of 100" in by_case[ids["too_many"]].reason
    assert "closed" in by_case[ids["rejected"]].reason
    assert sop.case(ids["too_many"]).definition_version == 1
    pack = sop.case(ids["packing"])
    assert (pack.definition_version, pack.state, pack.data["channel"]) == (2, "pack", "web")
    last = sop.history(pack.id)[-1]
    assert (last.event, last.reason) == ("migrate_case", "migrated from version 1 to 2 by root")
    # Its timeout is recalculated (1 day from entering the state), the deadline from its span's start.
    due = {d.name: d.due_at for d in sop.deadlines(pack.id)}
    assert due["ship-within-5d"] == sop.case(pack.id).created_at.replace(day=5)
    assert sop.verify().ok, sop.verify().findings
    # The migrated cases go on under version 2: the vote given before the move still counts.
    sop.fire(ids["signoff"], "approve", actor="fay")
    assert sop.case(ids["signoff"]).state == "delivered"
    sop.fire(pack.id, "packed", actor=pack.assignee or "")
    assert sop.case(pack.id).state == "quality_check"
    assert sop.verify().ok, sop.verify().findings
    # Back where the reverse map is valid: the migration is undone by one more record.
    back = sop.migrate(
        "order", 2, 1, actor="mia", state_map={"pack": "packing", "quality_check": "packing_late"}
    )
    assert {sop.case(i).state for i in (ids["packing"], ids["packing_late"])} == {"packing_late"}
    assert back.moved == 4 and sop.case(ids["intake"]).definition_version == 1
    assert sop.verify().ok, sop.verify().findings


def test_a_migration_needs_the_process_owner_and_a_forged_version_is_found(
    sop: Engine, clock: Clock, database_url: str
) -> None:
    ids = every_state(sop, clock)
    sop.deploy([FIXTURE])
    with pytest.raises(NotPermitted, match="process owner"):
        sop.migrate("order", 1, 2, actor="fay", defaults={"channel": "web"})
    assert [(a.action, a.accepted) for a in sop.lifecycle_log("order")] == [("migrate", False)]
    sop.migrate("order", 1, 2, actor="mia", state_map=MAP, defaults={"channel": "web"})
    db = create_engine(database_url)
    try:
        with db.begin() as conn:
            conn.execute(text("UPDATE cases SET definition_version = 1 WHERE id = :i"), {"i": ids["intake"]})
    finally:
        db.dispose()
    findings = sop.verify().findings
    assert [f.case_id for f in findings] == [ids["intake"]]
    assert "runs on order@1, its records give order@2" in findings[0].problem


def test_the_cli_diffs_draws_trials_adopts_and_migrates(sqlite_url: str, tmp_path: Path) -> None:
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["--db", sqlite_url, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    run("deploy", *map(str, V1))
    run("start", "order", "--as", "mia", "--data", '{"item": "pen", "qty": 2}')
    run("fire", "1", "accept", "--as", "mia")
    run("deploy", str(FIXTURE))
    assert "~ `accept` in `intake` now goes to `pack` (was `packing`)" in run(
        "defs", "diff", "order", "1", "2"
    )
    chart = run("diagram", "order", "--diff", "1", "2")
    assert "class pack,quality_check added" in chart and "class packing,packing_late removed" in chart
    assert 'fillcolor="#fee2e2"' in run("diagram", "order", "--diff", "1", "2", "--format", "dot")
    assert "version 1 50, version 2 50" in run(
        "trial", "start", "order", "--versions", "1=50,2=50", "--as", "root"
    )
    assert "trial 1=50, 2=50" in run("trial", "status", "order")
    assert "order@2 adopted" in run("adopt", "order", "2", "--as", "root")
    dry = run(
        "migrate", "order", "--from", "1", "--to", "2", "--map", "packing=pack", "--dry-run", "--as", "root"
    )
    assert "case 1: skipped: its data is not valid under order@2: 'channel' is a required property" in dry
    out = run(
        "migrate", "order", "--from", "1", "--to", "2", "--map", "packing=pack", "--default", "channel=web",
        "--as", "root",
    )  # fmt: skip
    assert "case 1: moved: moves from `packing` to `pack`" in out and "1 moved, 0 skipped, 0 failed" in out
    assert "audit trail intact" in run("audit", "verify", "--all")
    log = run("trial", "log", "order")
    assert "trial_start  1=50, 2=50" in log and "migrate" in log and "root" in log


def test_trial_status_gives_the_comparison_verdict_when_version_2_is_faster(
    sop: Engine, clock: Clock
) -> None:
    pytest.importorskip("sopflow.engine.insight.compare", reason="the insight engine's compare is not here")
    sop.deploy([FIXTURE])
    sop.trial_start("order", {1: 50, 2: 50}, actor="root")
    for n in range(40):  # one after the other: version 1 takes 5 hours to decide, version 2 one hour
        clock.advance(minutes=1)
        case = sop.start("order", {"item": "pen", "channel": "web"}, actor="mia", key=f"k{n}").case
        clock.advance(hours=5 if case.definition_version == 1 else 1)
        sop.fire(case.id, "reject", actor="mia")
    status = sop.trial_status("order")
    assert all(f.closed == f.started > 5 for f in status.versions)
    one, two = (f.median_cycle_seconds for f in status.versions)
    assert one is not None and two is not None and two < one
    assert status.comparison is not None
    assert status.comparison.verdict.startswith("Version 2 is faster overall (cycle time)")


def test_the_commands_run_as_a_real_process(sqlite_url: str) -> None:
    import json

    from tests.helpers.faults import clean, sopflow

    with Engine(sqlite_url) as setup:
        setup.deploy(V1)
        setup.start("order", {"item": "pen", "qty": 300}, actor="mia")
        setup.deploy([FIXTURE])
    diff = sopflow("--db", sqlite_url, "--json", "defs", "diff", "order", "1", "2")
    assert diff.returncode == 0, diff.stderr
    assert {"kind": "added", "subject": "state", "name": "pack"}.items() <= json.loads(diff.stdout)[
        "changes"
    ][0].items()
    args = ("--db", sqlite_url, "migrate", "order", "--from", "1", "--to", "2", "--default", "channel=web")
    dry = sopflow(*args, "--dry-run", "--json", "--as", "root")
    assert dry.returncode == 0, dry.stderr
    (case,) = json.loads(dry.stdout)["cases"]
    assert (case["outcome"], case["reason"]) == (
        "skipped", "its data is not valid under order@2: qty: 300 is greater than the maximum of 100",
    )  # fmt: skip
    refused = sopflow(*args, "--as", "fay")
    assert refused.returncode == 1 and "fay may not migrate cases of order" in refused.stderr
    clean(refused.stderr)


def test_verify_decides_each_migration_record_again(sop: Engine, clock: Clock) -> None:
    from sopflow.engine.lifecycle.migrate import _view
    from sopflow.engine.lifecycle.plan import plan_case
    from sopflow.engine.store import CaseRow
    from sopflow.engine.store import lifecycle as store_lifecycle
    from sopflow.engine.store.lifecycle import CaseMove, PendingTimer

    moved_wrong, by_finance = (sop.start("order", {"item": "pen"}, actor="mia").case.id for _ in range(2))
    sop.deploy([FIXTURE])
    old, new = sop.definition("order", 1), sop.compiled("order", 2)

    def forge(case_id: int, actor: str, role: str, to_state: str) -> None:
        def decide(row: CaseRow, timers: Sequence[PendingTimer]) -> CaseMove:
            plan = plan_case(_view(row, timers, False), old, new, sop.org(), defaults={"channel": "web"})
            record = sop.audit_record(
                row, new, clock(), actor=actor, role=role, event="migrate_case", to_state=to_state,
                accepted=True, data_change=plan.data_change, detail=plan.detail(1, 2),
            )  # fmt: skip
            return CaseMove(record, 2, to_state, True, dict(plan.data), None, plan.cancel, plan.start)

        store_lifecycle.move_case(sop.store, case_id, decide, now=clock())

    forge(moved_wrong, "root", "admin", "quality_check")
    forge(by_finance, "fay", "finance", "intake")
    problems = {f.case_id: f.problem for f in sop.verify().findings}
    assert problems == {
        moved_wrong: "it moves to `quality_check`, the rules give `intake`",
        by_finance: "it was not allowed: fay may not migrate cases of order: it needs the process owner's "
        "role `manager` (or a role above it) or an administrator",
    }


def test_a_parent_migrated_after_its_sub_process_keeps_its_links_verified(
    database_url: str, clock: Clock, tmp_path: Path
) -> None:
    nested = ROOT / "tests" / "fixtures" / "nested"
    text = (nested / "purchase.yaml").read_text(encoding="utf-8")
    renamed = text.replace("\nversion: 1\n", "\nversion: 2\n").replace("quoting", "get_quote")
    (tmp_path / "purchase-2.yaml").write_text(renamed, encoding="utf-8")
    for name in ("quote.yaml", "sign-off.yaml"):
        (tmp_path / name).write_text((nested / name).read_text(encoding="utf-8"), encoding="utf-8")
    with Engine(database_url, clock=clock) as sop:
        sop.deploy([nested])
        parent = sop.start("purchase", {"item": "desk", "amount": 300}, actor="alice").case.id
        sop.fire(parent, "request", actor="alice")
        ((child, *_),) = [[c.case_id for c in sop.links(parent)[1]]]
        sop.fire(child, "decline", actor="fay")  # the child closes: the parent is back in draft
        assert sop.case(parent).state == "draft"
        sop.deploy([tmp_path / "purchase-2.yaml", tmp_path / "quote.yaml", tmp_path / "sign-off.yaml"])
        assert sop.migrate("purchase", 1, 2, actor="root").moved == 1
        # Its earlier record entered `quoting`, a sub-process state of version 1 that version 2 renamed.
        assert sop.verify().ok, sop.verify().findings


def test_cases_in_a_parallel_state_waiting_on_a_child_or_suspended_stay_with_the_reason(
    database_url: str, clock: Clock, tmp_path: Path
) -> None:
    fixtures = ROOT / "tests" / "fixtures"
    for folder, name in (("branches", "fanout"), ("nested", "purchase")):
        text = (fixtures / folder / f"{name}.yaml").read_text(encoding="utf-8")
        (tmp_path / f"{name}-2.yaml").write_text(
            text.replace("\nversion: 1\n", "\nversion: 2\n", 1), encoding="utf-8"
        )
    with Engine(database_url, clock=clock) as sop:
        sop.deploy([fixtures / "nested"])
        sop.deploy([fixtures / "branches" / "fanout.yaml"])
        split = sop.start("fanout", {}, actor="bob").case.id
        waiting = sop.start("purchase", {"item": "desk", "amount": 300}, actor="alice").case.id
        sop.fire(waiting, "request", actor="alice")
        held = sop.start("purchase", {"item": "chair", "amount": 80}, actor="alice").case.id
        sop.suspend(held, actor="root", reason="waiting for the supplier")
        sop.deploy([tmp_path / "fanout-2.yaml"])
        sop.deploy(
            [
                tmp_path / "purchase-2.yaml",
                fixtures / "nested" / "quote.yaml",
                fixtures / "nested" / "sign-off.yaml",
            ]
        )
        fanout = sop.migrate("fanout", 1, 2, actor="root")
        purchase = {c.case_id: c for c in sop.migrate("purchase", 1, 2, actor="root").cases}
        assert [(c.case_id, c.outcome, c.reason) for c in fanout.cases] == [
            (split, "skipped", "it is in the parallel state `split`, whose branches started under fanout@1")
        ]
        assert (purchase[waiting].outcome, purchase[waiting].reason) == (
            "skipped", "it waits in `quoting` on a sub-process case started under purchase@1",
        )  # fmt: skip
        assert (purchase[held].outcome, purchase[held].reason) == (
            "skipped", "it is suspended (its timers paused): resume it first",
        )  # fmt: skip
        assert sop.verify().ok


def test_a_case_whose_work_the_system_is_doing_stays(sqlite_url: str, clock: Clock, tmp_path: Path) -> None:
    automatic = ROOT / "tests" / "fixtures" / "automatic"
    text = (automatic / "scoring.yaml").read_text(encoding="utf-8")
    (tmp_path / "scoring-2.yaml").write_text(
        text.replace("\nversion: 1\n", "\nversion: 2\n", 1), encoding="utf-8"
    )
    with Engine(sqlite_url, clock=clock) as sop:
        sop.deploy([automatic])
        case = sop.start("scoring", {"name": "x"}, actor="alice").case.id
        sop.fire(case, "submit", actor="alice")
        sop.deploy([tmp_path / "scoring-2.yaml"])
        (outcome,) = sop.migrate("scoring", 1, 2, actor="root").cases
        assert (outcome.outcome, outcome.reason) == (
            "skipped", "the system is doing its work in `scoring`: migrate it once it has left",
        )  # fmt: skip
