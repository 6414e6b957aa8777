"""The permission matrix, on SQLite and PostgreSQL: every seed role × every action × a case inside and
outside its scope (no leak, every refusal in the access log); an analyst's export is desensitised, with the
same token for the same person in two exports; the SQL filter and the Python check agree on random scopes;
the access log is a hash chain `audit verify` checks; the CLI says "not found" to a person of another
department exactly as for a case that does not exist."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from sopflow.cli.main import cli
from sopflow.engine import access
from sopflow.engine.definition.model import ACCESS_ACTIONS, Org
from sopflow.engine.definition.validate import validate_paths
from sopflow.engine.errors import NotFound, SopflowError
from sopflow.engine.privacy import token
from sopflow.engine.runtime import Engine
from sopflow.engine.store.access import admitting
from sopflow.engine.store.records import CaseQuery, CaseRow, Scope, ScopePart
from tests.conftest import DEFINITIONS, ROOT, Clock, engine_on
from tests.test_cli_subprocess import SOPFLOW, _env

ACCESS = ROOT / "tests" / "fixtures" / "access"
KEY = b"0123456789abcdef0123456789abcdef"
REVIEW = {"title": "春季活动", "origin": "original"}
INCIDENT = {"incident_type": "system_outage", "summary": "App首页无法加载"}


@pytest.fixture
def seed(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, DEFINITIONS)


def _log(sop: Engine) -> list[Any]:
    return sop.access_log()


def _allowed(org: Org, user: str, action: str, row: CaseRow, steps: dict[str, dict[str, str | None]]) -> bool:
    """What the matrix says, worked out here from the org file's grants, independently of engine.access."""
    person = org.users[user]
    for grant in org.access or ():
        if grant.role not in person.roles or action not in grant.actions:
            continue
        if grant.definitions is not None and row.definition_id not in grant.definitions:
            continue
        involved = {row.starter, row.assignee, row.submitter} - {None}
        if grant.scope in ("all", "all_desensitised") or user in involved:
            return True
        if grant.scope == "department":
            mates = {u.id for u in org.users.values() if u.department == person.department}
            owner = steps[row.definition_id].get(row.state)
            if involved & mates or (owner in org.roles and org.roles[owner].department == person.department):
                return True
    return False


def _one_member_per_role(org: Org) -> dict[str, str]:
    return {role: members[0] for role in org.roles if (members := org.members(role))}


def _refusal(sop: Engine, before: int, user: str, action: str) -> None:
    after = _log(sop)
    assert len(after) == before + 1, f"{user} {action}: the refusal was not recorded"
    assert (after[-1].actor, after[-1].action, after[-1].outcome) == (user, action, "refused")


def _hidden(exc: SopflowError, case_id: int) -> None:
    """Told exactly what a case that does not exist is told."""
    assert type(exc) is access.OutOfScope
    assert isinstance(exc, NotFound) and exc.exit_code == 1 and exc.kind == "not-found"
    assert (exc.message, exc.hint) == (f"case {case_id} does not exist", "`sopflow list` shows the cases")


def test_every_seed_role_and_action_on_a_case_inside_and_outside_its_scope(seed: Engine) -> None:
    org = seed.org()
    steps = {d.id: {s.name: s.owner for s in d.states.values()} for d in seed.definitions()}
    ops = seed.start("content-review", REVIEW, actor="li.na").case.id  # operations
    other = seed.start("emergency-response", INCIDENT, actor="du.juan").case.id  # customer service
    rows = {ops: seed.store.case(ops), other: seed.store.case(other)}
    checked = {True: 0, False: 0}
    for role, user in sorted(_one_member_per_role(org).items()):
        for action in ACCESS_ACTIONS:
            for case_id, row in rows.items():
                if action == "start":
                    expected = any(
                        action in g.actions and g.role in org.users[user].roles
                        and (g.definitions is None or row.definition_id in g.definitions)
                        for g in org.access or ()
                    )  # fmt: skip
                else:
                    expected = _allowed(org, user, action, row, steps)
                checked[expected] += 1
                before = len(_log(seed))
                try:
                    done = _act(seed, user, action, case_id, row)
                except access.REFUSALS as exc:
                    assert not expected, f"{role} ({user}) was refused {action} on case {case_id}: {exc}"
                    _refusal(seed, before, user, action)
                    if action in ("view", "modify", "administer") and not _allowed(
                        org, user, "view", row, steps
                    ):
                        _hidden(exc, case_id)  # no leak: as for a case that does not exist
                    continue
                if action == "export":  # an export is recorded whatever it holds
                    assert done == expected, f"{role} ({user}) export holds case {case_id}: {done}"
                    last = _log(seed)[-1]
                    assert (last.actor, last.action, last.outcome) == (user, "export", "granted")
                    continue
                assert expected, (
                    f"{role} ({user}) may {action} case {case_id}, which the matrix does not grant"
                )
                assert len(_log(seed)) == before, "nothing refused, nothing recorded"
    assert checked[True] > 20 and checked[False] > 20, checked
    assert seed.verify().ok


def _act(sop: Engine, user: str, action: str, case_id: int, row: CaseRow) -> bool:
    """Take `action` on the case as `user`: whether the case was in what they got. A refusal by the
    permission matrix is raised; one by the process's own rules is no concern here and is swallowed."""
    try:
        if action == "view":
            sop.case(case_id, viewer=user)
            sop.history(case_id, viewer=user)
            listed = [c.id for c in sop.cases(viewer=user, limit=500)]
            assert case_id in listed, f"{user} may view case {case_id} but the list leaves it out"
        elif action == "export":
            out = io.BytesIO()
            sop.export(out, "jsonl", definition=row.definition_id, reader=user, desensitise_key=KEY)
            return case_id in [json.loads(line)["case"] for line in out.getvalue().splitlines()]
        elif action == "start":
            data = REVIEW if row.definition_id == "content-review" else INCIDENT
            sop.start(row.definition_id, data, actor=user)
        elif action == "modify":
            sop.fire(case_id, "no_such_event_here", actor=user)
        else:
            sop.suspend(case_id, actor=user, reason="walk")
            sop.resume(case_id, actor=user)
    except access.REFUSALS:
        raise
    except SopflowError:
        pass
    return True


def test_a_list_never_holds_a_case_outside_the_viewers_scope(seed: Engine) -> None:
    ops = seed.start("content-review", REVIEW, actor="li.na").case.id
    other = seed.start("emergency-response", INCIDENT, actor="du.juan").case.id
    # Operations staff see an incident customer service reported: it waits at a step operations owns.
    assert [c.id for c in seed.cases(viewer="wang.fang")] == [ops, other]
    assert [c.id for c in seed.cases(viewer="dong.xue")] == []  # HR sees only appraisals
    assert [c.id for c in seed.cases(viewer="du.juan")] == [other]
    assert [c.id for c in seed.cases()] == [ops, other]  # the operator sees everything
    with pytest.raises(NotFound) as hidden:
        seed.history(ops, viewer="du.juan")
    with pytest.raises(NotFound) as missing:
        seed.history(10**9)
    assert str(hidden.value) == str(missing.value).replace(str(10**9), str(ops))
    assert [t.case.id for t in seed.tasks("du.juan")] == []


def test_overdue_cases_are_only_those_the_viewer_may_view(seed: Engine, clock: Clock) -> None:
    from sopflow.engine.worker import Worker

    case_id = seed.start("content-review", REVIEW, actor="li.na").case.id
    seed.fire(case_id, "submit", actor="li.na", payload={"material_url": "https://cms.example.com/m/1"})
    clock.advance(hours=5)
    Worker(seed, name="test").tick()
    assert [r.case_id for r in seed.overdue()] == [case_id]
    assert [r.case_id for r in seed.overdue(viewer="wang.fang")] == [case_id]
    assert seed.overdue(viewer="du.juan") == []


def test_a_specialist_may_not_start_what_the_matrix_does_not_grant(seed: Engine) -> None:
    data = {"title": "x", "tier": "major_reform", "description": "d", "supporting_data": []}
    before = len(_log(seed))
    with pytest.raises(access.AccessDenied, match=r"li\.na may not start a `tiered-approval` case"):
        seed.start("tiered-approval", data, actor="li.na")
    _refusal(seed, before, "li.na", "start")
    assert seed.cases() == []


# -- desensitised views and exports ------------------------------------------------------------------

PERSON = {
    "title": "社区服务日",
    "applicant_name": "张三丰",
    "phone": "13800138000",
    "id_number": "110105194912310021",
    "address": "广东省深圳市南山区科技园路1号",
    "age": 33,
    "story": "我住在深圳南山，电话13800138000",
}
RAW = ("张三丰", "13800138000", "110105194912310021", "深圳", "南山", '"age":33', '"age": 33', "alice")


@pytest.fixture
def office(
    database_url: str, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    key = tmp_path / "privacy.key"
    key.write_bytes(KEY)
    monkeypatch.setenv("SOPFLOW_PRIVACY_KEY_FILE", str(key))
    yield from engine_on(database_url, clock, ACCESS)


def test_an_analysts_export_is_desensitised_and_tokens_join_across_exports(office: Engine) -> None:
    for _ in range(2):
        office.start("volunteer", dict(PERSON), actor="alice")
    exports = []
    for fmt in ("jsonl", "jsonl", "csv", "xes"):
        out = io.BytesIO()
        report = office.export(out, fmt, reader="ana")
        assert report.desensitised and report.cases == 2
        exports.append(out.getvalue().decode("utf-8"))
    for exported in exports:
        leaked = [raw for raw in RAW if raw in exported]
        assert not leaked, leaked
    first, second = ([json.loads(line) for line in e.splitlines()] for e in exports[:2])
    assert first[0]["data"]["phone"] == second[0]["data"]["phone"] == token(KEY, "phone", "13800138000")
    assert first[0]["data"]["applicant_name"] == first[1]["data"]["applicant_name"], "one person, one token"
    assert first[0]["data"]["address"] == "广东省" and first[0]["data"]["age"] == "25-34"
    logged = [e for e in office.access_log() if e.action == "export"]
    assert [(e.actor, e.records, e.detail["desensitised"]) for e in logged] == [("ana", 2, True)] * 4


def test_an_analyst_reads_a_case_desensitised_and_the_manager_reads_it_plain(office: Engine) -> None:
    case_id = office.start("volunteer", dict(PERSON), actor="alice").case.id
    seen = office.case(case_id, viewer="ana")
    assert seen.data["address"] == "广东省" and "story" not in seen.data
    assert seen.starter == token(KEY, "person", "alice")
    history = office.history(case_id, viewer="ana")
    assert history[0].actor == token(KEY, "person", "alice") and history[0].hash == ""
    assert not [raw for raw in RAW if raw in json.dumps([r.body() for r in history], ensure_ascii=False)]
    assert office.case(case_id, viewer="mia").data == PERSON
    assert office.cases(viewer="ana")[0].data["phone"] == token(KEY, "phone", "13800138000")


def test_own_and_department_scopes(office: Engine) -> None:
    mine = office.start("volunteer", dict(PERSON), actor="alice").case.id
    theirs = office.start("volunteer", dict(PERSON), actor="bob").case.id  # bob is in the field department
    assert [c.id for c in office.cases(viewer="alice")] == [mine]
    assert [c.id for c in office.cases(viewer="bob")] == [theirs]
    assert [c.id for c in office.cases(viewer="mia")] == [mine]
    with pytest.raises(NotFound):
        office.case(theirs, viewer="mia")
    with pytest.raises(NotFound):
        office.fire(theirs, "submit", actor="alice")
    with pytest.raises(access.AccessDenied, match="may not administer"):
        office.cancel(mine, actor="mia", reason="no")
    out = io.BytesIO()
    with pytest.raises(access.AccessDenied, match="alice may not export"):
        office.export(out, "jsonl", reader="alice")
    logged = [(e.actor, e.action) for e in office.access_log()]
    assert logged == [("mia", "view"), ("alice", "modify"), ("mia", "administer"), ("alice", "export")]
    office.fire(theirs, "submit", actor="bob")  # now it waits at review, a step the office owns
    assert [c.id for c in office.cases(viewer="mia")] == [mine, theirs]
    assert [t.case.id for t in office.tasks("mia")] == [theirs]
    office.fire(theirs, "accept", actor="mia")


# -- the SQL filter and the Python check say the same ---------------------------------------------------

PEOPLE = ("alice", "bob", "mia", "ana", "$system")
DEFS = ("volunteer", "other")


@pytest.fixture
def rows(database_url: str, clock: Clock) -> Iterator[tuple[Engine, list[CaseRow]]]:
    sop = Engine(database_url, clock=clock)
    try:
        sop.deploy([ACCESS])
        insert = text(
            "INSERT INTO cases (id, definition_id, definition_version, state, open, data, version, starter, "
            "assignee, submitter, entered_seq, entered_at, created_at, updated_at, audit_seq, last_hash) "
            "VALUES (:id, :d, 1, :st, :o, '{}', 1, :s, :a, :b, 1, :t, :t, :t, 1, :h)"
        )
        n = 0
        with sop.store.engine.begin() as conn:
            for definition in DEFS:
                for starter in PEOPLE:
                    for assignee in (None, "alice", "mia"):
                        n += 1
                        values = {
                            "id": n, "d": definition, "st": "review" if n % 3 else "draft", "o": True,
                            "s": starter, "a": assignee, "b": "bob" if n % 4 == 0 else None,
                            "t": clock.now.replace(tzinfo=None), "h": "0" * 64,
                        }  # fmt: skip
                        conn.execute(insert, values)
        found = [sop.store.case(i) for i in range(1, n + 1)]
        yield sop, found
    finally:
        sop.close()


PARTS = st.builds(
    ScopePart,
    definitions=st.none() | st.lists(st.sampled_from(DEFS), unique=True).map(tuple),
    people=st.none() | st.lists(st.sampled_from(PEOPLE[:4]), unique=True).map(tuple),
    steps=st.lists(st.tuples(st.sampled_from(DEFS), st.sampled_from(("draft", "review"))), unique=True).map(
        tuple
    ),
    desensitised=st.booleans(),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(PARTS, max_size=3))
def test_the_sql_filter_admits_exactly_what_the_python_check_admits(
    rows: tuple[Engine, list[CaseRow]], parts: list[ScopePart]
) -> None:
    sop, all_rows = rows
    scope = Scope(tuple(parts))
    listed = {r.id for r in sop.store.cases(CaseQuery(scope=scope, limit=500))}
    checked = {
        r.id
        for r in all_rows
        if admitting(scope, r.definition_id, r.state, r.starter, r.assignee, r.submitter)
    }
    assert listed == checked
    from sqlalchemy import select

    from sopflow.engine.store.access import scope_clause
    from sopflow.engine.store.tables import cases

    with sop.store.engine.connect() as conn:
        core = {int(i) for i in conn.execute(select(cases.c.id).where(scope_clause(scope))).scalars()}
    assert core == checked


DELEGATIONS = st.lists(
    st.tuples(
        st.sampled_from(("mia", "alice", "ana", "root")), st.sampled_from(("manager", "employee", "analyst"))
    ),
    max_size=3,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delegate=st.sampled_from(("bob", "alice", "mia")), grants=DELEGATIONS)
def test_a_stand_in_reaches_the_delegators_department_in_sql_and_python_alike(
    rows: tuple[Engine, list[CaseRow]], delegate: str, grants: list[tuple[str, str]]
) -> None:
    """A role delegated with a `department` grant covers the delegator's department (not the stand-in's):
    the SQL filter and the Python check agree on every case, and each case of the delegator's department
    (started, held or submitted by a member) is within reach."""
    from sopflow.engine.access import owned_steps, scope_of
    from sopflow.engine.step import actor_from_org

    sop, all_rows = rows
    org = sop.org()
    delegated: dict[str, str] = {}
    for delegator, role in grants:
        if role in org.users[delegator].roles and delegator != delegate:
            delegated.setdefault(role, delegator)
    actor = actor_from_org(org, delegate, delegated)
    definitions = [sop.definition(d.id) for d in sop.definitions()]
    scope = scope_of(
        org, actor, "view", lambda dep: tuple(s for d in definitions for s in owned_steps(d, org, dep))
    )
    listed = {r.id for r in sop.store.cases(CaseQuery(scope=scope, limit=500))}
    checked = {
        r.id
        for r in all_rows
        if admitting(scope, r.definition_id, r.state, r.starter, r.assignee, r.submitter)
    }
    assert listed == checked
    if actor.delegated.get("manager") == "mia":  # mia's department grant, handed to the stand-in
        office = {u.id for u in org.users.values() if u.department == "office"}
        assert {r.id for r in all_rows if {r.starter, r.assignee, r.submitter} & office} <= listed


def test_a_stand_in_from_another_department_works_the_absent_managers_queue(
    office: Engine, clock: Clock
) -> None:
    case = office.start("volunteer", dict(PERSON), actor="alice").case.id  # alice: office
    with pytest.raises(NotFound):
        office.case(case, viewer="bob")  # bob: field, an employee
    office.delegate("mia", "bob", actor="mia", ends_at=clock.now + timedelta(days=3))
    assert office.case(case, viewer="bob").starter == "alice"
    assert case in {c.id for c in office.cases(viewer="bob")}
    # The command line reads the real clock: a delegation made there, running now.
    url, runner = office.store.url, CliRunner()
    until = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    made = runner.invoke(cli, ["--db", url, "--as", "mia", "delegate", "bob", "--until", until])
    assert made.exit_code == 0, made.output
    shown = runner.invoke(cli, ["--db", url, "--as", "bob", "show", str(case)])
    assert shown.exit_code == 0 and "alice" in shown.output, shown.output
    done = subprocess.run(
        [SOPFLOW, "--db", url, "--as", "bob", "list"], env=_env(), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert str(case) in [line.split()[0] for line in done.stdout.splitlines() if line.strip()], done.stdout


# -- the access log is a hash chain that audit verify checks -------------------------------------------


def test_verify_names_an_access_log_row_edited_behind_the_engines_back(office: Engine) -> None:
    mine = office.start("volunteer", dict(PERSON), actor="alice").case.id
    for _ in range(3):
        with pytest.raises(NotFound):
            office.case(mine, viewer="bob")
    assert office.verify().ok
    with pytest.raises(Exception, match="append-only"), office.store.engine.begin() as conn:
        conn.execute(text("UPDATE access_log SET actor = 'mia' WHERE seq = 2"))
    with office.store.engine.begin() as conn:
        if office.store.dialect == "sqlite":
            conn.execute(text("DROP TRIGGER access_log_no_update"))
        else:
            conn.execute(text("ALTER TABLE access_log DISABLE TRIGGER USER"))
        conn.execute(text("UPDATE access_log SET actor = 'mia' WHERE seq = 2"))
    report = office.verify()
    assert [f.subject for f in report.findings] == ["access log row 2"]
    assert "changed after it was written" in report.findings[0].problem


def test_concurrent_refusals_chain_one_after_the_other(office: Engine) -> None:
    import threading

    def refuse(n: int) -> None:
        for i in range(10):
            access.refused(office, access.OutOfScope(n * 100 + i, "bob", "view"))

    threads = [threading.Thread(target=refuse, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log = office.access_log()
    assert [e.seq for e in log] == list(range(1, 41))
    assert sorted(e.target for e in log) == sorted(f"case {n * 100 + i}" for n in range(4) for i in range(10))
    assert office.verify().ok


# -- the checker ------------------------------------------------------------------------------------------


def test_the_checker_places_unknown_roles_actions_and_scopes(tmp_path: Path) -> None:
    original = (ACCESS / "org.yaml").read_text(encoding="utf-8")
    renamed = original.replace(
        "  analyst:\n    - {actions: [view, export]", "  analist:\n    - {actions: [view, export]"
    )
    (tmp_path / "org.yaml").write_text(renamed, encoding="utf-8")
    found = {(p.code, p.line, p.col) for p in validate_paths([tmp_path / "org.yaml"]).problems}
    lines = renamed.splitlines()
    analist = next(i for i, line in enumerate(lines, 1) if line.startswith("  analist:"))
    analyst = next(i for i, line in enumerate(lines, 1) if line.startswith("  analyst:"))
    volunteer = next(i for i, line in enumerate(lines, 1) if "definitions: [volunteer]" in line)
    col = lines[volunteer - 1].index("volunteer") + 1
    # Alone in its folder, the org's grant of `volunteer` names a definition that is not there.
    assert found == {
        ("unknown-role", analist, 3), ("no-access", analyst, 3), ("grant-unknown-definition", volunteer, col)
    }  # fmt: skip
    misspelt = original.replace("[view, export], scope: all_desensitised", "[view, exprt], scope: mine")
    (tmp_path / "org.yaml").write_text(misspelt, encoding="utf-8")
    problems = validate_paths([tmp_path / "org.yaml"]).problems
    line = next(i for i, text_ in enumerate(misspelt.splitlines(), 1) if "exprt" in text_)
    assert {(p.code, p.line) for p in problems} == {("schema", line)}
    assert len(problems) == 2  # the action and the scope, each at its own column


# -- the CLI --------------------------------------------------------------------------------------------


def _cli(runner: CliRunner, url: str, *args: str) -> Any:
    return runner.invoke(cli, ["--db", url, *args], catch_exceptions=False)


def test_the_cli_says_not_found_to_a_specialist_of_another_department(
    database_url: str, clock: Clock
) -> None:
    runner = CliRunner()
    assert _cli(runner, database_url, "deploy", str(DEFINITIONS)).exit_code == 0
    for _ in range(3):
        started = _cli(
            runner, database_url, "--as", "li.na", "start", "content-review", "--data", json.dumps(REVIEW)
        )
        assert started.exit_code == 0, started.output
    hidden = _cli(runner, database_url, "--as", "du.juan", "show", "3")
    missing = _cli(runner, database_url, "--as", "du.juan", "show", "4")
    assert hidden.exit_code == missing.exit_code == 1
    assert hidden.output == missing.output.replace("case 4", "case 3")
    assert "case 3 does not exist" in hidden.output
    assert _cli(runner, database_url, "--as", "wang.fang", "show", "3").exit_code == 0
    listed = _cli(runner, database_url, "--as", "du.juan", "--json", "list")
    assert json.loads(listed.output) == []
    assert _cli(runner, database_url, "--as", "du.juan", "history", "3").exit_code == 1
    log = _cli(runner, database_url, "--json", "audit", "access")
    assert [(r["actor"], r["action"], r["target"]) for r in json.loads(log.output)] == [
        ("du.juan", "view", "case 3"), ("du.juan", "view", "case 3")
    ]  # fmt: skip
    assert (
        "du.juan  view    case 3" in _cli(runner, database_url, "--as", "han.bing", "audit", "access").output
    )
    refused = _cli(runner, database_url, "--as", "li.na", "audit", "access")
    assert refused.exit_code == 1 and "li.na may not read the access log" in refused.output


def test_the_cli_in_a_subprocess_says_not_found(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    env = {**os.environ, "SOPFLOW_DB": url}
    env.pop("SOPFLOW_USER", None)
    sopflow = [str(Path(sys.executable).parent / "sopflow")]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*sopflow, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    assert run("deploy", str(DEFINITIONS)).returncode == 0
    for _ in range(3):
        assert run("--as", "li.na", "start", "content-review", "--data", json.dumps(REVIEW)).returncode == 0
    hidden, missing = run("--as", "du.juan", "show", "3"), run("--as", "du.juan", "show", "4")
    assert hidden.returncode == missing.returncode == 1
    assert hidden.stderr == missing.stderr.replace("case 4", "case 3") and "does not exist" in hidden.stderr
    assert run("show", "3").returncode == 0  # the operator sees every case
