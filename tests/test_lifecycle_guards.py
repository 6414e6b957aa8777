"""Migrations that must not go wrong, on both databases: two migrations racing move each case exactly once,
a case whose branches run on after their join stays, a refused dry run is logged, a bad `--state` or a
doubled `--map`/`--default` is refused, a run where a case failed exits 1; and `defs diff` names the
branches and the payload rules that changed."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sopflow.cli.main import cli
from sopflow.engine.errors import Conflict, InvalidData, NotPermitted
from sopflow.engine.runtime import Engine
from sopflow.engine.store import lifecycle as store_lifecycle
from tests.conftest import ROOT, Clock
from tests.helpers.faults import clean, sopflow, spawn
from tests.test_lifecycle import FIXTURE, MAP, V1

EXAMPLES = ROOT / "docs" / "examples"
SQ1 = [EXAMPLES / "org.yaml", EXAMPLES / "supplier-quotes.yaml"]
PACKED = 120


def supplier_quotes_2(tmp_path: Path) -> Path:
    """supplier-quotes with the `east` branch, its deadline and `east` among the choices gone."""
    text = (EXAMPLES / "supplier-quotes.yaml").read_text(encoding="utf-8")
    east = text.index("        east:\n")
    text = text[:east] + text[text.index("      join: first\n") :]
    text = text[: text.index("\ndeadlines:\n")] + "\n"
    text = text.replace("enum: [north, south, east]", "enum: [north, south]").replace(
        "\nversion: 1\n", "\nversion: 2\n", 1
    )
    path = tmp_path / "supplier-quotes-2.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def sop(database_url: str, clock: Clock) -> Iterator[Engine]:
    engine = Engine(database_url, clock=clock)
    try:
        engine.deploy(V1)
        yield engine
    finally:
        engine.close()


def packed(sop: Engine, count: int) -> list[int]:
    ids = [sop.start("order", {"item": "pen"}, actor="mia").case.id for _ in range(count)]
    for case_id in ids:
        sop.fire(case_id, "accept", actor="mia")
    sop.deploy([FIXTURE])
    return ids


def migrations(sop: Engine, case_id: int) -> list[Any]:
    return [r for r in sop.history(case_id) if r.event == "migrate_case"]


def test_a_case_another_migration_moved_meanwhile_is_skipped_not_moved_twice(
    sop: Engine, database_url: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    (case_id,) = packed(sop, 1)
    real = store_lifecycle.case_ids
    raced: list[int] = []

    def racing(*args: Any) -> list[int]:
        listed = real(*args)
        if not raced:  # another run moves the case between this run's list of cases and its decision
            raced.append(0)
            with Engine(database_url, clock=clock) as other:
                report = other.migrate("order", 1, 2, actor="mia", state_map=MAP, defaults={"channel": "web"})
                raced.append(report.moved)
        return listed

    monkeypatch.setattr(store_lifecycle, "case_ids", racing)
    report = sop.migrate("order", 1, 2, actor="root", state_map=MAP, defaults={"channel": "shop"})
    assert raced == [0, 1]
    assert [(c.outcome, c.reason) for c in report.cases] == [("skipped", "it is already on version 2")]
    (record,) = migrations(sop, case_id)
    assert record.actor == "mia" and sop.case(case_id).data["channel"] == "web"
    assert sop.verify().ok


def test_two_migrations_run_at_once_by_real_processes_move_each_case_once(database_url: str) -> None:
    with Engine(database_url) as setup:
        setup.deploy(V1)
        ids = packed(setup, PACKED)
    args = ("sopflow", "--db", database_url, "--json", "migrate", "order", "--from", "1", "--to", "2")
    args += ("--map", "packing=pack")
    runs = [
        spawn(*args, "--default", "channel=web", "--as", "root"),
        spawn(*args, "--default", "channel=shop", "--as", "mia"),
    ]
    outputs = [p.communicate(timeout=300) for p in runs]
    reports = []
    for process, (out, err) in zip(runs, outputs, strict=True):
        assert process.returncode == 0, err
        clean(err)
        reports.append(json.loads(out))
    assert sum(r["moved"] for r in reports) == PACKED
    assert all(r["failed"] == 0 for r in reports)
    with Engine(database_url) as check:
        counts = Counter(len(migrations(check, i)) for i in ids)
        assert counts == {1: PACKED}
        skipped = [c for r in reports for c in r["cases"] if c["outcome"] == "skipped"]
        assert all(c["reason"] == "it is already on version 2" for c in skipped)
        report = check.verify()
        assert report.ok, report.findings


def test_a_case_whose_branches_run_on_after_the_join_stays_with_the_reason(
    database_url: str, clock: Clock, tmp_path: Path
) -> None:
    with Engine(database_url, clock=clock) as sop:
        sop.deploy(SQ1)
        case_id = sop.start("supplier-quotes", {}, actor="li.lei").case.id
        sop.fire(case_id, "north.quoted", actor="qian.yu", payload={"price": 1200})
        assert sop.case(case_id).state == "choosing"
        sop.deploy([supplier_quotes_2(tmp_path)])
        reason = (
            "its branch(es) `south`, `east` run on after their join, started under supplier-quotes@1: "
            "migrate it once they are done"
        )
        for dry_run in (True, False):
            (outcome,) = sop.migrate("supplier-quotes", 1, 2, actor="li.lei", dry_run=dry_run).cases
            assert (outcome.outcome, outcome.reason) == ("skipped", reason)
        assert sop.case(case_id).definition_version == 1
        sop.fire(case_id, "east.quoted", actor="qian.yu", payload={"price": 990})
        sop.fire(case_id, "south.quoted", actor="qian.yu", payload={"price": 1000})
        (outcome,) = sop.migrate("supplier-quotes", 1, 2, actor="li.lei").cases
        assert (outcome.outcome, outcome.reason) == ("moved", "stays in `choosing`")
        assert sop.verify().ok


def test_a_refused_dry_run_is_logged_and_an_unknown_state_is_refused(sop: Engine) -> None:
    packed(sop, 1)
    with pytest.raises(NotPermitted):
        sop.migrate("order", 1, 2, actor="fay", dry_run=True)
    with pytest.raises(NotPermitted):
        sop.migrate("order", 1, 2, actor="fay")
    log = [(a.action, a.actor, a.accepted, dict(a.detail)) for a in sop.lifecycle_log("order")]
    assert log == [("migrate", "fay", False, {"dry_run": True}), ("migrate", "fay", False, {})]
    for dry_run in (True, False):
        with pytest.raises(InvalidData, match=r"--state nosuch: order@1 has no state `nosuch`"):
            sop.migrate("order", 1, 2, actor="root", where={"state": "nosuch"}, dry_run=dry_run)


def test_the_diff_names_branches_and_payload_rules_that_changed(sqlite_url: str, tmp_path: Path) -> None:
    with Engine(sqlite_url) as sop:
        sop.deploy(SQ1)
        sop.deploy([supplier_quotes_2(tmp_path)])
        words = [c.words for c in sop.diff("supplier-quotes", 1, 2).changes]
        assert "state `asking`: branch `east` is gone" in words
        assert (
            "`choose` in `choosing`: the payload's field `supplier` is now one of north, south "
            "(was one of north, south, east)"
        ) in words
        marks = sop.diff("supplier-quotes", 1, 2).marked_states()
        assert marks["asking"] == "changed" and marks["choosing"] == "changed"
        back = [c.words for c in sop.diff("supplier-quotes", 2, 1).changes]
        assert "state `asking`: new branch `east`" in back
    runner = CliRunner()
    out = runner.invoke(cli, ["--db", sqlite_url, "defs", "diff", "supplier-quotes", "1", "2"]).output
    assert "~ state `asking`: branch `east` is gone" in out
    chart = runner.invoke(cli, ["--db", sqlite_url, "diagram", "supplier-quotes", "--diff", "1", "2"])
    assert chart.exit_code == 0 and "class asking,choosing changed" in chart.output
    done = sopflow("--db", sqlite_url, "defs", "diff", "supplier-quotes", "1", "2")
    assert done.returncode == 0 and "~ state `asking`: branch `east` is gone" in done.stdout


def test_the_cli_logs_a_refused_dry_run_and_refuses_doubled_or_unknown_options(
    sqlite_url: str, tmp_path: Path
) -> None:
    with Engine(sqlite_url) as setup:
        setup.deploy(V1)
        packed(setup, 1)
    runner = CliRunner()
    base = ["--db", sqlite_url, "migrate", "order", "--from", "1", "--to", "2"]

    def invoke(*args: str) -> Any:
        return runner.invoke(cli, [*base, *args])

    refused = invoke("--dry-run", "--as", "fay")
    assert refused.exit_code == 1 and "fay may not migrate cases of order" in refused.output
    log = runner.invoke(cli, ["--db", sqlite_url, "trial", "log", "order"]).output
    assert "migrate (dry run)" in log and "fay" in log
    unknown = invoke("--state", "nosuch", "--dry-run", "--as", "root")
    assert unknown.exit_code == 1 and "order@1 has no state `nosuch`" in unknown.output
    twice = invoke("--map", "packing=pack", "--map", "packing=quality_check", "--dry-run", "--as", "root")
    assert twice.exit_code == 2 and "--map names `packing` twice (pack, quality_check)" in twice.output
    doubled = invoke("--default", "channel=web", "--default", "channel=shop", "--dry-run", "--as", "root")
    assert doubled.exit_code == 2 and "--default names `channel` twice (web, shop)" in doubled.output
    args = ("--db", sqlite_url, "migrate", "order", "--from", "1", "--to", "2", "--as", "root")
    real = sopflow(*args, "--state", "nosuch")
    assert real.returncode == 1 and "order@1 has no state `nosuch`" in real.stderr
    clean(real.stderr)
    real = sopflow(*args, "--map", "packing=pack", "--map", "packing=x")
    assert real.returncode == 2 and "--map names `packing` twice (pack, x)" in real.stderr
    clean(real.stderr)
    real = sopflow(*args[:-2], "--as", "fay", "--dry-run")
    assert real.returncode == 1
    assert [a.detail for a in Engine(sqlite_url).lifecycle_log("order")][-1] == {"dry_run": True}


def test_a_migration_where_a_case_failed_exits_1_with_the_counts(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Engine(database_url) as setup:
        setup.deploy(V1)
        first, second = packed(setup, 2)
    real = store_lifecycle.move_case

    def flaky(store: Any, case_id: int, *args: Any, **kwargs: Any) -> Any:
        if case_id == first:
            raise Conflict(f"case {case_id} kept changing while it was being migrated", hint="run it again")
        return real(store, case_id, *args, **kwargs)

    monkeypatch.setattr(store_lifecycle, "move_case", flaky)
    args = ["--db", database_url, "migrate", "order", "--from", "1", "--to", "2", "--map", "packing=pack"]
    args += ["--default", "channel=web", "--as", "root"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert f"case {first}: failed: conflict: case {first} kept changing" in result.output
    assert "order 1 → 2: 1 moved, 0 skipped, 1 failed" in result.output
    assert "1 case(s) failed to migrate: run the migration again" in result.output
    monkeypatch.setattr(store_lifecycle, "move_case", real)
    again = sopflow(*args)
    assert again.returncode == 0 and "1 moved, 0 skipped, 0 failed" in again.stdout, again.stderr
    with Engine(database_url) as check:
        assert {check.case(i).definition_version for i in (first, second)} == {2}


def test_trial_status_counts_only_the_cases_the_trial_split(
    sop: Engine, clock: Clock, sqlite_url: str
) -> None:
    sop.deploy([FIXTURE])
    sop.trial_start("order", {1: 50, 2: 50}, actor="root")
    data = {"item": "pen", "channel": "web"}
    split = Counter(
        sop.start("order", data, actor="mia", key=f"t{n}").case.definition_version for n in range(6)
    )
    sop.start("order", data, actor="mia", version=2)  # a version named: not the trial's
    clock.advance(minutes=1)
    sop.trial_stop("order", actor="root")
    clock.advance(minutes=1)
    for _ in range(4):  # after the trial: the newest version, outside it
        assert sop.start("order", data, actor="mia").case.definition_version == 2
    status = sop.trial_status("order")
    assert [(f.version, f.started) for f in status.versions] == [(1, split[1]), (2, split[2])]


def test_trial_status_in_the_cli_counts_only_the_trial(sqlite_url: str) -> None:
    with Engine(sqlite_url) as setup:
        setup.deploy(V1)
        setup.deploy([FIXTURE])
        setup.trial_start("order", {1: 50, 2: 50}, actor="root")
        split = Counter(
            setup.start(
                "order", {"item": "p", "channel": "web"}, actor="mia", key=f"k{n}"
            ).case.definition_version
            for n in range(4)
        )
        setup.trial_stop("order", actor="root")
        for _ in range(5):
            setup.start("order", {"item": "p", "channel": "web"}, actor="mia")
    runner = CliRunner()
    out = runner.invoke(cli, ["--db", sqlite_url, "--json", "trial", "status", "order"])
    assert out.exit_code == 0, out.output
    real = sopflow("--db", sqlite_url, "--json", "trial", "status", "order")
    assert real.returncode == 0, real.stderr
    for text in (out.output, real.stdout):
        found = {v["version"]: v["started"] for v in json.loads(text)["versions"]}
        assert found == {1: split[1], 2: split[2]}


def test_unknown_versions_a_case_for_diff_and_a_bad_split_get_useful_answers(sqlite_url: str) -> None:
    with Engine(sqlite_url) as setup:
        setup.deploy(V1)
        setup.deploy([FIXTURE])
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli, ["--db", sqlite_url, *args])

    for args in (
        ("defs", "diff", "order", "1", "9"),
        ("compare", "order", "1", "9"),
        ("diagram", "order", "--diff", "1", "9"),
        ("migrate", "order", "--from", "1", "--to", "9", "--as", "root"),
    ):
        found = run(*args)
        assert found.exit_code == 1, (args, found.output)
        assert "definition `order@9` is not deployed" in found.output
        assert "deployed versions: 1, 2" in found.output and "did you mean" not in found.output
    case = run("diagram", "1", "--diff", "1", "2")
    assert (
        case.exit_code == 2
        and "--diff compares two versions of a definition; 1 is a case number" in case.output
    )
    twice = run("trial", "start", "order", "--versions", "2=50,2=50", "--as", "root")
    assert twice.exit_code == 2 and "--versions names version 2 twice" in twice.output
    negative = run("trial", "start", "order", "--versions", "1=-10,2=110", "--as", "root")
    assert negative.exit_code == 2 and "`1=-10` is not VERSION=WEIGHT" in negative.output
    real = sopflow("--db", sqlite_url, "defs", "diff", "order", "1", "9")
    assert real.returncode == 1 and "deployed versions: 1, 2" in real.stderr
    clean(real.stderr)
    real = sopflow("--db", sqlite_url, "trial", "start", "order", "--versions", "2=50,2=50", "--as", "root")
    assert real.returncode == 2 and "--versions names version 2 twice" in real.stderr
    clean(real.stderr)
