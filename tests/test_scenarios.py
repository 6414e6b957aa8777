"""`sopflow test`: scenario files beside definitions, run on the real engine with a fake clock.

Every seed scenario file passes on SQLite and on PostgreSQL (the durable proof the walk files used to
give); a wrong scenario fails naming the step, its line and the difference; a broken scenario file is
reported at file:line:col and nothing runs; --json, --junit and --db behave as documented.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from click.testing import CliRunner, Result

from sopflow.cli.main import cli
from sopflow.engine.errors import DefinitionError
from sopflow.engine.runtime import Engine
from sopflow.engine.scenario.load import load_scenario_file
from sopflow.engine.scenario.run import run_files
from tests.conftest import DEFINITIONS, ROOT
from tests.helpers.walks import scenario_paths

EXAMPLES = ROOT / "docs" / "examples"


def sopflow(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """content-review and its org, copied where a test may write scenario files beside them."""
    for name in ("content-review.yaml", "org.yaml"):
        shutil.copy(DEFINITIONS / name, tmp_path / name)
    return tmp_path


def scenario(folder: Path, text: str, name: str = "content-review.test.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


SUBMIT = "{fire: submit, as: li.na, data: {material_url: 'https://cms.example.com/m/1', channel: 官网}"
HEAD = """scenarios:
  - name: submitted
    start: {as: li.na, data: {title: 春季活动, origin: original}}
    steps:
"""


# -- the seed scenarios ------------------------------------------------------------------------------


def test_every_seed_definition_has_a_scenario_file_covering_its_deadlines() -> None:
    defined = sorted(p for p in DEFINITIONS.glob("*.yaml") if not p.name.endswith(".test.yaml"))
    for path in defined:
        if path.name == "org.yaml":
            continue
        beside = path.with_name(f"{path.stem}.test.yaml")
        assert beside.is_file(), f"{path.name} has no scenario file"
        files, definition, _org = load_scenario_file(beside)
        fired = {
            t.split("/")[0]
            for s in files.scenarios
            for step in s.steps
            for t in step.expect.timers_fired or ()
        }
        assert {d.name for d in definition.deadlines} <= fired, f"{beside.name}: a deadline never fires"
        refused = [st for s in files.scenarios for st in s.steps if st.expect.refused]
        assert refused, f"{beside.name} shows no refusal"


def test_sopflow_test_definitions_passes() -> None:
    result = sopflow("test", str(DEFINITIONS))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(line.startswith("PASS  ") for line in lines[:-1])
    total = sum(len(load_scenario_file(p)[0].scenarios) for p in scenario_paths())
    assert lines[-1].startswith(f"{total} passed, 0 failed in ")


@pytest.mark.parametrize("path", scenario_paths(), ids=lambda p: p.name)
def test_seed_scenarios_pass_on_a_given_database(path: Path, database_url: str) -> None:
    """`sopflow test --db URL`: every scenario of a file on one SQLite or PostgreSQL database."""
    files, _definition, org = load_scenario_file(path)
    report = run_files([(files, org)], database=database_url, verify=True)
    failures = [f"{r.name}: {r.difference.render()}" for r in report.results if r.difference]
    assert failures == []
    with Engine(database_url) as sop:
        assert sop.store.count_cases() == 0  # the scenarios ran in scratch places of their own
    if database_url.startswith("postgresql"):
        import psycopg

        plain = database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain) as conn:
            left = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'sopflow_test_%'")
            assert left.fetchall() == []


# -- a wrong scenario fails, naming the step and the difference -------------------------------------


def test_a_wrong_state_fails_with_the_step_its_line_and_the_difference(folder: Path) -> None:
    scenario(folder, HEAD + f"      - {SUBMIT}, expect: {{state: collect}}}}\n")
    result = sopflow("test", str(folder))
    assert result.exit_code == 1
    assert "FAIL  " in result.output
    assert "step 1 (fire submit as li.na), line 5: state: expected collect, got screening" in result.output
    assert result.output.splitlines()[-1].startswith("0 passed, 1 failed")


def test_a_refusal_expected_and_not_met_fails_both_ways(folder: Path) -> None:
    scenario(
        folder,
        HEAD
        + f"      - {SUBMIT}, expect: {{refused: not-permitted}}}}\n"
        + "  - name: refused for real\n"
        + "    start: {as: li.na, data: {title: x, origin: original}}\n"
        + "    steps:\n"
        + "      - {fire: submit, as: li.na, data: {channel: 官网}}\n",
    )
    result = sopflow("test", str(folder / "content-review.test.yaml"))
    assert result.exit_code == 1
    assert (
        "step 1 (fire submit as li.na), line 5: refused: expected not-permitted, got accepted"
        in result.output
    )
    assert "line 9: refused: expected accepted, got invalid-data:" in result.output


def test_a_start_expected_to_be_refused_and_accepted_fails(folder: Path) -> None:
    scenario(
        folder,
        "scenarios:\n"
        "  - name: a start that is accepted\n"
        "    start: {as: li.na, data: {title: t, origin: original}, expect: {refused: invalid-data}}\n",
    )
    result = sopflow("test", str(folder / "content-review.test.yaml"))
    assert result.exit_code == 1, result.output
    assert "start (as li.na), line 3: refused: expected invalid-data, got accepted" in result.output


def test_data_timers_and_notifications_are_compared(folder: Path) -> None:
    scenario(
        folder,
        HEAD
        + f"      - {SUBMIT}, expect: {{data: {{title: 春季活动}}}}}}\n"
        + "      - after: 4h\n"
        + "        expect: {timers_fired: [publish-within-4h], notifications: []}\n",
    )
    result = sopflow("test", str(folder))
    assert result.exit_code == 1
    assert (
        'step 2 (after 4h), line 6: timers_fired: expected ["publish-within-4h"], '
        'got ["publish-within-4h", "publish-within-4h/1"]'
    ) in result.output


def test_a_case_that_a_refusal_leaves_alone_and_working_time(folder: Path) -> None:
    """Friday 17:00 plus two working hours is Monday 10:00: the 4-hour wall-clock deadline fired on the
    way, at 21:00 on Friday, with its first rung."""
    scenario(
        folder,
        """scenarios:
  - name: late on a Friday
    at: 2026-03-06 17:00
    start: {as: li.na, data: {title: 周五稿件, origin: original}}
    steps:
      - {fire: submit, as: li.na, data: {material_url: 'https://cms.example.com/m/9', channel: 官网}}
      - {fire: publish, as: li.na, expect: {refused: not-available, state: screening}}
      - after: {working: 2h}
        expect:
          timers_fired: [publish-within-4h, publish-within-4h/1, publish-within-4h/2, publish-within-4h/3]
          assignee: chen.jing
""",
    )
    result = sopflow("test", str(folder))
    assert result.exit_code == 0, result.output
    files, _definition, _org = load_scenario_file(folder / "content-review.test.yaml")
    assert files.scenarios[0].at.isoformat() == "2026-03-06T17:00:00+08:00"


# -- a broken scenario file ------------------------------------------------------------------------


def test_a_schema_mistake_is_reported_at_its_place_and_nothing_runs(folder: Path) -> None:
    path = scenario(
        folder,
        HEAD
        + f"      - {SUBMIT}}}\n"
        + "      - {after: 1h, fire: claim, as: li.na}\n"
        + "      - {fire: claim, as: li.na, expct: {state: screening}}\n"
        + "      - {fire: claim}\n",
    )
    result = sopflow("test", str(folder))
    assert result.exit_code == 2
    assert (
        f"{path}:6:9: error[schema]: `scenarios[0].steps[1]` must have `fire`, `after`, `suspend`, `resume` "
        "or `cancel`, not more than one of them" in result.output
    )
    assert f"{path}:7:34: error[unknown-key]: unknown key `expct` in `scenarios[0].steps[2]`" in result.output
    assert "hint: did you mean `expect`?" in result.output
    assert "PASS" not in result.output
    assert result.output.splitlines()[-1] == "2 error(s): no scenario was run"


def test_mistakes_of_meaning_are_all_reported_with_hints(folder: Path) -> None:
    path = scenario(
        folder,
        HEAD
        + "      - {fire: sumbit, as: li.na}\n"
        + "      - {fire: claim, as: nobody.here}\n"
        + "      - after: 4 hours\n"
        + "      - {fire: claim, as: li.na, expect: {state: screenin, timers_fired: [publish-within-5h]}}\n"
        + "      - {fire: claim}\n",
    )
    with pytest.raises(DefinitionError) as caught:
        load_scenario_file(path)
    found = [(p.line, p.col, p.code, p.hint) for p in caught.value.problems]
    assert found == [
        (5, 16, "unknown-event", "did you mean `submit`?"),
        (6, 27, "unknown-user", f"the users are listed in the org ({folder / 'org.yaml'})"),
        (7, 16, "bad-duration", "write it like 4h, 30m or 3h30m"),
        (8, 50, "unknown-state", "did you mean `screening`?"),
        (8, 75, "unknown-timer", "did you mean `publish-within-4h`?"),
        (9, 9, "missing-key", "write the user id, e.g. `as: li.na`"),
    ]
    assert caught.value.problems[0].message == (
        f"event `sumbit` is not in content-review@3 ({folder / 'content-review.yaml'})"
    )
    result = sopflow("test", str(path))
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == "6 error(s): no scenario was run"


def test_a_scenario_file_without_its_definition(folder: Path) -> None:
    path = scenario(folder, "definition: content-reveiw\n" + HEAD + f"      - {SUBMIT}}}\n", "cr.test.yaml")
    with pytest.raises(DefinitionError) as caught:
        load_scenario_file(path)
    (problem,) = caught.value.problems
    assert (problem.line, problem.col, problem.code) == (1, 13, "unknown-definition")
    result = sopflow("test", str(folder / "nothing-here.yaml"))
    assert result.exit_code == 2
    assert "no such file or folder" in result.output


def test_validate_and_deploy_leave_scenario_files_out(folder: Path, tmp_path: Path) -> None:
    scenario(folder, HEAD + f"      - {SUBMIT}}}\n")
    assert sopflow("validate", str(folder)).exit_code == 0
    given = sopflow("validate", str(folder / "content-review.test.yaml"))
    assert given.exit_code == 2
    assert "a scenario file, not a definition" in given.output
    db = f"sqlite:///{tmp_path / 'deploy.db'}"
    assert sopflow("--db", db, "deploy", str(folder)).exit_code == 0


# -- output for CI ---------------------------------------------------------------------------------


def test_junit_and_json(folder: Path, tmp_path: Path) -> None:
    scenario(
        folder,
        HEAD
        + f"      - {SUBMIT}, expect: {{state: screening}}}}\n"
        + "  - name: wrong\n"
        + "    start: {as: li.na, data: {title: x, origin: original}, expect: {state: screening}}\n",
    )
    report = tmp_path / "junit.xml"
    result = sopflow("test", str(folder), "--junit", str(report))
    assert result.exit_code == 1
    root = ET.parse(report).getroot()
    assert (root.tag, root.get("tests"), root.get("failures")) == ("testsuites", "2", "1")
    (failure,) = root.iter("failure")
    assert "start (as li.na), line 7: state: expected screening, got collect" in (
        failure.get("message") or ""
    )
    as_json = sopflow("--json", "test", str(folder))
    assert as_json.exit_code == 1
    data = json.loads(as_json.output)
    assert (data["passed"], data["failed"]) == (1, 1)
    assert data["results"][1]["difference"]["what"] == "state"


def test_a_given_database_is_left_as_it_was(folder: Path, tmp_path: Path) -> None:
    """Each scenario runs in a scratch place of its own beside the database named, removed afterwards: a
    second run on the same database gives the same results, and the database holds no case."""
    scenario(folder, HEAD + f"      - {SUBMIT}, expect: {{assignee: null}}}}\n" * 1)
    db = tmp_path / "work.db"
    for _ in range(2):
        result = sopflow("test", str(folder), "--db", f"sqlite:///{db}")
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "content-review.test.yaml",
        "content-review.yaml",
        "org.yaml",
    ]


def test_sopflow_db_in_the_environment_is_not_used(folder: Path, tmp_path: Path) -> None:
    scenario(folder, HEAD + f"      - {SUBMIT}}}\n")
    db = tmp_path / "work.db"
    result = CliRunner(env={"SOPFLOW_DB": f"sqlite:///{db}"}).invoke(cli, ["test", str(folder)])
    assert result.exit_code == 0, result.output
    assert not db.exists()


def test_the_language_reference_example_passes() -> None:
    result = sopflow("test", str(EXAMPLES / "takedown-request.test.yaml"))
    assert result.exit_code == 0, result.output


# -- simulate: goes on after a refusal, and moves the clock ---------------------------------------


def test_simulate_moves_the_clock_and_timers_fire_on_the_way() -> None:
    steps = [
        'submit={"material_url": "https://cms.example.com/m/1", "channel": "官网"}',
        "publish",
        "+4h",
        "claim@wang.fang",
        "+1h",
        "+working:3h",
    ]
    data = '{"title": "春季活动", "origin": "original"}'
    result = sopflow("--as", "li.na", "simulate", "content-review", *steps, "--data", data)
    assert result.exit_code == 1  # `publish` was refused, and the run went on
    assert "error: publish as li.na: REFUSED (not-available)" in result.output
    lines = result.output.splitlines()
    assert "+4h → 2026-03-02 13:00 CST: publish-within-4h, publish-within-4h/1" in lines
    assert "claim as wang.fang: screening → screening" in lines
    assert "+1h → 2026-03-02 14:00 CST: publish-within-4h/2" in lines
    assert "  notified chen.jing: case 1 was reassigned to you" in lines
    assert "+working:3h → 2026-03-02 17:00 CST: publish-within-4h/3" in lines
    as_json = json.loads(
        sopflow("--as", "li.na", "--json", "simulate", "content-review", *steps, "--data", data).output
    )
    assert as_json["steps"][3]["timers_fired"] == ["publish-within-4h", "publish-within-4h/1"]
    assert as_json["steps"][3]["notifications"][0]["to"] == "operations_manager"


def test_simulate_refuses_a_clock_step_that_is_not_one() -> None:
    result = sopflow("--as", "li.na", "simulate", "content-review", "+4 hours")
    assert result.exit_code == 2
    assert "`+4 hours` is not a clock step" in result.output


def test_the_failure_shown_in_the_language_reference_is_what_a_run_prints(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    shown = [
        line
        for line in doc.splitlines()
        if line.startswith(("PASS  docs/examples/", "FAIL  docs/", "      step"))
    ]
    folder = tmp_path / "docs" / "examples"
    shutil.copytree(EXAMPLES, folder)
    path = folder / "takedown-request.test.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace(
            "{refused: not-permitted, state: reviewing}", "{refused: invalid-data, state: reviewing}"
        )
    )

    def untimed(line: str) -> str:
        return line.rsplit("  (", 1)[0]

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        result = CliRunner().invoke(
            cli, ["test", "docs/examples/takedown-request.yaml"], catch_exceptions=False
        )
    assert result.exit_code == 1
    printed = result.output.splitlines()
    assert [untimed(line) for line in printed[:-1]] == [untimed(line) for line in shown]
    assert printed[-1].startswith("3 passed, 1 failed in ")


def test_every_seed_scenario_passes_in_memory_with_its_trail_verified() -> None:
    loaded = [load_scenario_file(p) for p in scenario_paths()]
    report = run_files([(files, org) for files, _definition, org in loaded], verify=True)
    assert [r.name for r in report.results if not r.passed] == []


def test_steps_that_cannot_be_are_refused_when_the_file_is_read(folder: Path) -> None:
    path = scenario(
        folder,
        """scenarios:
  - name: nothing after a refused start
    start: {as: li.na, data: {}, expect: {refused: invalid-data}}
    steps:
      - {after: 1h, as: li.na, expect: {refused: not-permitted}}
""",
    )
    with pytest.raises(DefinitionError) as caught:
        load_scenario_file(path)
    found = [(p.line, p.code) for p in caught.value.problems]
    assert found == [(5, "after-a-refused-start"), (5, "not-for-the-clock"), (5, "not-for-the-clock")]


def test_an_invalid_file_with_json_lists_its_problems(folder: Path) -> None:
    scenario(folder, "scenarios:\n  - name: x\n    start: {as: li.na}\n    stepz: []\n")
    result = sopflow("--json", "test", str(folder))
    assert result.exit_code == 2
    answer = json.loads(result.stdout)
    assert answer["ok"] is False
    assert [(p["line"], p["code"], p["hint"]) for p in answer["problems"]] == [
        (4, "unknown-key", "did you mean `steps`?")
    ]


def test_the_scenario_schema_and_the_model_agree() -> None:
    """What `expect` may say in a file is what the model holds, and every refusal it names is an error
    kind the engine raises."""
    from dataclasses import fields

    from sopflow.engine import errors
    from sopflow.engine.definition.schema import load_schema
    from sopflow.engine.scenario.model import Expect

    schema = load_schema("scenario")
    expect = schema["$defs"]["expect"]["properties"]
    assert set(expect) == {f.name for f in fields(Expect)} - {"assignee_given"}
    kinds = {
        cls.kind
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.SopflowError)
        and cls.exit_code == errors.EXIT_REFUSED
    }
    assert set(expect["refused"]["enum"]) <= kinds
    assert {"not-permitted", "guard-refused", "invalid-data", "not-available"} <= set(
        expect["refused"]["enum"]
    )
