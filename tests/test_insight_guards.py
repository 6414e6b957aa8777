"""What the reports, baselines and comparisons refuse or hide: people as tokens to a desensitised reader,
figures only of what a person may view, baselines only by an administrator or the process owner, never
too long, never of an unfinished month and tamper-evident, periods that end before they start, derived
rows no case explains, and a migration that handles nothing. On SQLite and PostgreSQL, through the API,
click's CliRunner and a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from sopflow.cli.main import cli
from sopflow.engine.errors import NotFound, NotPermitted, UsageError
from sopflow.engine.privacy import Desensitiser
from sopflow.engine.runtime import Engine
from tests.insight_history import FIXTURE, Clock, H, build

SOPFLOW = Path(sys.executable).parent / "sopflow"
KEY = b"k" * 32
GRANTS = """
  analyst: {title: {zh: 分析师, en: Analyst}, department: office}
  visitor: {title: {zh: 访客, en: Visitor}, department: office}
access:
  admin:
    - {actions: [view, export, start, modify, administer], scope: all}
  writer:
    - {actions: [view, start, modify], scope: all}
  editor:
    - {actions: [view, start, modify, administer], scope: all}
  analyst:
    - {actions: [view, export], scope: all_desensitised}
"""


def org_with_grants(folder: Path) -> Path:
    """The fixture's org with an analyst (all cases, desensitised), a visitor (nothing) and a matrix."""
    source = (FIXTURE / "org.yaml").read_text(encoding="utf-8")
    source = source.replace(
        "  admin: {title:", GRANTS.split("access:", maxsplit=1)[0].lstrip("\n") + "  admin: {title:"
    )
    source = source.replace(
        "  root: {name: Root, roles: [admin]}",
        "  root: {name: Root, roles: [admin]}\n  ana: {name: Ana, roles: [analyst], department: office}\n"
        "  vic: {name: Vic, roles: [visitor], department: office}",
    )
    path = folder / "org.yaml"
    path.write_text(source + "access:" + GRANTS.split("access:")[1], encoding="utf-8")
    return path


def article_v2(folder: Path) -> Path:
    """The article process, version 2, with `review` renamed `checking`."""
    source = (FIXTURE / "article.yaml").read_text(encoding="utf-8")
    source = source.replace("version: 1", "version: 2").replace("review:", "checking:")
    source = source.replace("to: review", "to: checking").replace("from: review", "from: checking")
    path = folder / "article.yaml"
    path.write_text(source, encoding="utf-8")
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sop(database_url: str, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    key = tmp_path / "privacy.key"
    key.write_bytes(KEY)
    monkeypatch.setenv("SOPFLOW_PRIVACY_KEY_FILE", str(key))
    engine = Engine(database_url, clock=clock)
    engine.deploy([FIXTURE])
    build(engine, clock)
    engine.deploy([org_with_grants(tmp_path)])
    try:
        yield engine
    finally:
        engine.close()


def run(url: str, *args: str, user: str | None = "ed") -> tuple[int, str]:
    who = ["--as", user] if user else []
    result = CliRunner().invoke(cli, ["--db", url, *who, *args])
    return result.exit_code, result.output


def process(url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SOPFLOW), "--db", url, *args], capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def refusals(sop: Engine, actor: str) -> list[str]:
    return [e.target for e in sop.access_log(actor) if e.outcome == "refused"]


# -- 5: people as tokens to a desensitised reader ----------


def test_a_desensitised_reader_sees_people_as_the_tokens_an_export_gives(sop: Engine, tmp_path: Path) -> None:
    tokens = Desensitiser(sop_key(tmp_path), sop.clock().date())
    ed = tokens.person("ed")
    assert ed is not None and ed != "ed"
    by_person = sop.report("article", by="person", viewer="ana").processes[0]
    keys = {s.key for s in by_person.steps}
    assert ed in keys and not keys & {"ed", "wu", "xu", "root"}
    people = {w.who for w in by_person.people}
    assert ed in people and tokens.person("wu") in people and not people & {"ed", "wu", "xu", "root"}
    # the same person, the same token as in a desensitised export: an analyst still joins the two
    export = tmp_path / "e.jsonl"
    with export.open("wb") as out:
        sop.export(out, "jsonl", desensitise_key=sop_key(tmp_path), reader="ana")
    assert ed in export.read_text(encoding="utf-8")
    # a reader with the plain view still sees the ids
    assert "ed" in {s.key for s in sop.report("article", by="person", viewer="wu").processes[0].steps}
    url = str(sop.store.engine.url.render_as_string(hide_password=False))
    code, out = run(url, "--json", "report", "--by", "person", "--definition", "article", user="ana")
    assert code == 0, out
    (found,) = json.loads(out)["processes"]
    shown = {s["key"] for s in found["steps"]} | {w["who"] for w in found["people"]}
    assert ed in shown and not shown & {"ed", "wu", "xu", "root"}
    done = process(url, "--as", "ana", "report", "--definition", "article")
    assert done.returncode == 0, done.stderr
    assert ed in done.stdout and " ed " not in done.stdout and "\ned " not in done.stdout


def sop_key(tmp_path: Path) -> bytes:
    from sopflow.engine.privacy import load_key

    return load_key(tmp_path / "privacy.key")


# -- 6: compare and trial status honour the viewer ----------


def test_compare_and_trial_status_refuse_a_person_who_may_view_none_of_the_cases(
    sop: Engine, tmp_path: Path
) -> None:
    sop.deploy([article_v2(tmp_path)])
    with pytest.raises(NotPermitted, match="vic may not read the figures of `article`"):
        sop.compare("article", 1, 2, viewer="vic")
    with pytest.raises(NotPermitted, match="vic may not read the figures"):
        sop.trial_status("article", viewer="vic")
    assert refusals(sop, "vic") == ["definition article", "definition article"]
    # a desensitised view gets the figures: they are aggregates
    assert sop.compare("article", 1, 2, viewer="ana").cycle.n1 == 3
    assert sop.compare("article", 1, 2).cycle.n1 == 3
    url = str(sop.store.engine.url.render_as_string(hide_password=False))
    code, out = run(url, "compare", "article", "1", "2", user="vic")
    assert code == 1 and "may not read the figures" in out and "Traceback" not in out
    code, out = run(url, "trial", "status", "article", user="vic")
    assert code == 1 and "may not read the figures" in out
    done = process(url, "--as", "vic", "compare", "article", "1", "2")
    assert done.returncode == 1 and "may not read the figures" in done.stderr
    done = process(url, "--as", "ana", "compare", "article", "1", "2")
    assert done.returncode == 0 and "(cycle time)" in done.stdout


# -- 7, 8, 10: what a baseline may be, who may record it, and of which month ----------


def test_a_baseline_too_long_is_refused_before_anything_is_kept(sop: Engine) -> None:
    url = str(sop.store.engine.url.render_as_string(hide_password=False))
    code, out = run(url, "baseline", "set", "article", "review", "99999999999999999999h", "--source", "x")
    assert code == 2 and "too long" in out and "Traceback" not in out
    done = process(url, "--as", "ed", "baseline", "set", "article", "review", "400d", "--source", "x")
    assert done.returncode == 2 and "at most 366d" in done.stderr
    with pytest.raises(UsageError, match="too long"):
        sop.set_baseline("article", "review", 1e30, source="x", actor="ed")
    assert sop.baselines() == []
    code, out = run(url, "baseline", "list")
    assert code == 0
    from sopflow.cli.commands.insight import span

    assert span(1e30) and span(3 * H) == "3h00m"  # a figure no timedelta holds is still shown


def test_only_an_administrator_or_the_process_owner_records_a_baseline(sop: Engine) -> None:
    with pytest.raises(NotPermitted, match="ana may not set a baseline of article"):
        sop.set_baseline("article", "review", H, source="x", actor="ana")
    with pytest.raises(NotPermitted):
        sop.set_baseline("article", None, H, source="x", actor="nobody.x")
    with pytest.raises(NotPermitted):
        sop.update_baselines("2026-02", actor="ana")
    assert sop.baselines() == []
    assert refusals(sop, "ana") == ["definition article", "definition article"]
    assert refusals(sop, "nobody.x") == ["definition article"]
    # the owner's role (writer owns the first state), a role above it, an administrator
    for person in ("wu", "ed", "root"):
        sop.set_baseline("article", "review", H, source="industry report", actor=person)
    assert [b.created_by for b in sop.baselines()] == ["wu", "ed", "root"]
    url = str(sop.store.engine.url.render_as_string(hide_password=False))
    code, out = run(url, "baseline", "set", "article", "2h", "--source", "x", user="nobody.x")
    assert code == 1 and "Traceback" not in out
    done = process(url, "--as", "ana", "baseline", "set", "article", "2h", "--source", "x")
    assert done.returncode == 1 and "ana may not set a baseline" in done.stderr
    assert len(sop.baselines()) == 3


def test_a_month_that_has_not_ended_is_not_recorded(sop: Engine, clock: Clock) -> None:
    # the clock stands on 2026-03-06: March has not ended, April is to come
    for month in ("2026-03", "2026-04", "2999-12"):
        with pytest.raises(UsageError, match=f"{month} has not ended"):
            sop.update_baselines(month)
    assert sop.baselines() == []
    clock.now = datetime(2026, 4, 1, 0, 0, tzinfo=UTC)
    assert {b.period for b in sop.update_baselines()} == {"2026-03"}  # the worker's: the month just ended
    url = str(sop.store.engine.url.render_as_string(hide_password=False))
    code, out = run(url, "baseline", "update", "--month", "2999-12")
    assert code == 2 and "has not ended" in out and "the last complete month is" in out
    done = process(url, "baseline", "update", "--month", "2999-12")
    assert done.returncode == 2 and "has not ended" in done.stderr


# -- 9: baselines are append-only and chained ----------


def _bypass(sop: Engine, statement: str) -> None:
    with sop.store.engine.begin() as conn:
        if sop.store.dialect == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS insight_baselines_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS insight_baselines_no_delete"))
        else:
            conn.execute(text("ALTER TABLE insight_baselines DISABLE TRIGGER USER"))
        conn.execute(text(statement))


def test_baselines_cannot_be_rewritten_and_verify_names_an_edited_or_removed_one(
    sop: Engine, tmp_path: Path
) -> None:
    for source in ("report 2025", "report 2026", "report 2027"):
        sop.set_baseline("article", "review", H, source=source, actor="ed")
    assert sop.verify().ok
    for statement in ("UPDATE insight_baselines SET seconds = 60", "DELETE FROM insight_baselines"):
        with pytest.raises(Exception, match="append-only"), sop.store.engine.begin() as conn:
            conn.execute(text(statement))
    anchor = sop.anchor(KEY)
    first, second, third = (b.id for b in sop.baselines())
    _bypass(sop, f"UPDATE insight_baselines SET seconds = 60, created_by = 'wu' WHERE id = {second}")
    found = sop.verify().findings
    assert [f.subject for f in found] == [f"baseline {second}"]
    assert "changed after it was kept" in found[0].problem
    _bypass(sop, f"DELETE FROM insight_baselines WHERE id = {first}")
    assert f"baseline {second}" in {f.subject for f in sop.verify().findings}
    assert "one before was removed" in sop.verify().findings[0].problem
    _bypass(sop, f"DELETE FROM insight_baselines WHERE id IN ({second}, {third})")
    assert sop.verify().ok  # an empty chain is a chain: the anchor holds what was there
    found = sop.verify(anchors=[anchor]).findings
    assert [f.subject for f in found] == ["baselines"] and "3 of them, 0 remain" in found[0].problem


# -- 11, 12: periods and files ----------


def test_a_period_that_ends_before_it_starts_is_refused(sop: Engine, tmp_path: Path) -> None:
    late, early = datetime(2027, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(UsageError, match="--since is not before --until"):
        sop.report("article", since=late, until=early)
    sop.deploy([article_v2(tmp_path)])
    with pytest.raises(UsageError, match="--since is not before --until"):
        sop.compare("article", 1, 2, since=late, until=early)
    url = str(sop.store.engine.url.render_as_string(hide_password=False))
    period = ["--since", "2027-01-01T00:00:00Z", "--until", "2026-01-01T00:00:00Z"]
    for args in (["report", *period], ["compare", "article", "1", "2", *period]):
        code, out = run(url, *args)
        assert code == 2 and "--since is not before --until" in out, out
        done = process(url, *args)
        assert done.returncode == 2 and "--since is not before --until" in done.stderr


def test_an_html_report_into_a_missing_folder_is_refused_whole(sop: Engine, tmp_path: Path) -> None:
    url = str(sop.store.engine.url.render_as_string(hide_password=False))
    target = tmp_path / "nowhere" / "r.html"
    code, out = run(url, "report", "--html", str(target))
    assert code == 2 and "the folder" in out and "does not exist" in out and "Traceback" not in out
    done = process(url, "report", "--html", str(target))
    assert done.returncode == 2 and "does not exist" in done.stderr and "internal error" not in done.stderr
    assert not (tmp_path / "nowhere").exists()


# -- 13: derived rows no case explains ----------


def test_derived_rows_of_a_case_that_does_not_exist_are_named_and_never_counted(sop: Engine) -> None:
    before = next(s for s in sop.report("article").processes[0].steps if s.key == "review")
    columns = (
        "seq, definition_id, definition_version, state, event, actor, role, accepted, ends_visit, kind, at, "
        "week, month, entered_at, wall_seconds, working_seconds, paused_seconds, score"
    )
    with sop.store.engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO insight_steps (case_id, {columns}) SELECT 99, {columns} FROM insight_steps "
                 "WHERE case_id = 1")
        )  # fmt: skip
    after = next(s for s in sop.report("article").processes[0].steps if s.key == "review")
    assert after.times == before.times
    assert sop.report_check() == [(99, "insight_steps holds rows of a case that does not exist")]
    found = [f for f in sop.verify().findings if f.case_id == 99]
    assert len(found) == 1 and "does not exist" in found[0].problem
    url = str(sop.store.engine.url.render_as_string(hide_password=False))
    code, out = run(url, "report", "--check", user=None)
    assert code == 1
    assert "case 99: insight_steps holds rows of a case that does not exist" in out


# -- 22: a migration handles nothing ----------


def test_a_migration_neither_ends_the_visit_nor_credits_its_migrator(
    sop: Engine, clock: Clock, tmp_path: Path
) -> None:
    sop.deploy([article_v2(tmp_path)])
    clock.at(9, 9)
    case = sop.start("article", {"title": "g"}, actor="wu", version=1).case.id
    clock.at(9, 10)
    sop.fire(case, "submit", actor="wu")
    clock.at(9, 11)
    moved = sop.migrate("article", 1, 2, actor="root", state_map={"review": "checking"})
    assert any(c.case_id == case and c.outcome == "moved" for c in moved.cases)
    clock.at(9, 13)
    sop.fire(case, "approve", actor="ed")  # the review began at 10:00: 3h, whatever its name now
    report = sop.report("article", since=datetime(2026, 3, 9, tzinfo=UTC)).processes[0]
    steps = {s.key: s for s in report.steps}
    assert "review" not in steps or steps["review"].times.count == 0
    assert steps["checking"].times.count == 1 and steps["checking"].times.max == 3 * H
    assert "root" not in {w.who for w in report.people if w.done}
    assert sop.report_check() == []
    assert sop.verify().ok


def test_the_demos_report_shows_real_handling_times(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{tmp_path / 'demo.db'}", "demo"])
    assert result.exit_code == 0, result.output
    assert "audit trail intact: 2 case(s)" in result.output
    assert "collect 35m, screening 1h05m, manual_review 2h10m, tagging 30m, preview 35m" in result.output
    assert "major_reform_approval 4h52m" in result.output
    assert " 0m" not in result.output.split("== report")[1]


def test_a_baselines_figure_source_step_and_month_are_checked(sop: Engine) -> None:
    for seconds in (float("inf"), 1e300, float("nan")):
        with pytest.raises(UsageError):
            sop.set_baseline("article", "review", seconds, source="x", actor="ed")
    with pytest.raises(UsageError, match="final state"):
        sop.set_baseline("article", "archived", H, source="x", actor="ed")
    for source in ("a" * 70000, "x\udc80", "two\nlines"):
        with pytest.raises(UsageError, match="one line of text"):
            sop.set_baseline("article", "review", H, source=source, actor="ed")
    with pytest.raises(UsageError, match="not a month"):
        sop.update_baselines("2026-1")
    with pytest.raises(NotFound):
        sop.baselines("nosuch")
    assert sop.baselines() == []
    url = str(sop.store.engine.url.render_as_string(hide_password=False))
    code, out = run(url, "baseline", "list", "nosuch")
    assert code == 1 and "nosuch" in out
    code, out = run(url, "baseline", "update", "--month", "2026-1")
    assert code == 2 and "not a month" in out
    done = process(url, "--as", "ed", "baseline", "set", "article", "archived", "1h", "--source", "x")
    assert done.returncode == 2 and "final state" in done.stderr


def test_a_stored_infinite_baseline_never_breaks_a_report(sop: Engine) -> None:
    sop.set_baseline("article", "review", H, source="x", actor="ed")
    with sop.store.engine.begin() as conn:
        if sop.store.dialect == "sqlite":
            conn.execute(text("DROP TRIGGER insight_baselines_no_update"))
        else:
            conn.execute(text("ALTER TABLE insight_baselines DISABLE TRIGGER USER"))
        conn.execute(text("UPDATE insight_baselines SET seconds = :inf"), {"inf": float("inf")})
    url = str(sop.store.engine.url.render_as_string(hide_password=False))
    code, out = run(url, "--json", "report", "--definition", "article")
    assert code == 0, out
    review = next(s for s in json.loads(out)["processes"][0]["steps"] if s["key"] == "review")
    assert review["baseline"] is None and review["change"] is None
    code, out = run(url, "baseline", "list")
    assert code == 0 and "Traceback" not in out


def test_an_html_report_writes_through_a_symlink_and_never_replaces_a_device(
    sop: Engine, tmp_path: Path
) -> None:
    url = str(sop.store.engine.url.render_as_string(hide_password=False))
    target = tmp_path / "target.html"
    target.write_text("old", encoding="utf-8")
    link = tmp_path / "link.html"
    link.symlink_to(target)
    code, out = run(url, "report", "--html", str(link))
    assert code == 0, out
    assert link.is_symlink() and "<html" in target.read_text(encoding="utf-8").lower()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, out = run(url, "report", "--html", str(fifo))
    assert code == 2 and "is not a regular file" in out
    done = process(url, "report", "--html", str(fifo))
    assert done.returncode == 2 and "is not a regular file" in done.stderr
    assert fifo.exists() and not fifo.is_file()


def test_the_migration_chains_the_baselines_recorded_before(database_url: str) -> None:
    import sqlalchemy as sa

    from sopflow.engine.store import database

    engine = database.create(database_url)
    try:
        database.upgrade(engine, "0012")
        at = datetime(2026, 3, 2, 9, 0)
        rows = [
            {"definition_id": "article", "step": "review", "seconds": 3600.0 * n, "kind": "benchmark",
             "source": f"report {n}", "period": None, "created_at": at, "created_by": "ed"}
            for n in (1, 2)
        ]  # fmt: skip
        old = sa.table("insight_baselines", *(sa.column(name) for name in rows[0]))
        with engine.begin() as conn:
            conn.execute(sa.insert(old), rows)
        assert database.upgrade(engine) == database.SCHEMA_REVISION
    finally:
        engine.dispose()
    with Engine(database_url) as sop:
        assert [b.source for b in sop.baselines()] == ["report 1", "report 2"]
        assert sop.verify().ok
        with pytest.raises(Exception, match="append-only"), sop.store.engine.begin() as conn:
            conn.execute(text("UPDATE insight_baselines SET seconds = 1"))
