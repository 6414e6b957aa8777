"""The `sopflow` command line, through click's test runner on a fresh SQLite file per test.

Each test checks what a person at the terminal relies on: the exit code (0 done, 1 refused, 2 a usage or
configuration problem, 3 an internal error), the words of the answer, the shape of `--json` output, and
that every error comes as one `error:` line with a `hint:` line and never a traceback.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sopflow.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "definitions"
MINI = ROOT / "tests" / "fixtures" / "mini"
BAD = ROOT / "tests" / "bad"

# Variables a developer's shell may set; every run starts without them unless a test sets them.
CLEAN_ENV: dict[str, str | None] = {"SOPFLOW_DB": None, "SOPFLOW_USER": None, "SOPFLOW_DEBUG": None}

CONTENT = {"title": "春季活动预告", "origin": "user_submission", "contributor": "用户小王"}
SUBMIT = {"material_url": "https://cms.example.com/m/1001", "channel": "公众号"}
SCREENED = {"topic_compliant": True, "typo_free": True, "note": "无错别字"}
REVIEWED = {"copyright_status": "user_authorised", "comment": "已授权"}
PUBLISHED = {"layout_confirmed": True, "links_valid": True, "published_url": "https://mp.example.com/a/1"}
# The content-review main path (tests/walks/content-review.yaml): (user, event, payload, state after).
MAIN_PATH: list[tuple[str, str, dict[str, Any], str]] = [
    ("li.na", "submit", SUBMIT, "screening"),
    ("wang.fang", "claim", {}, "screening"),
    ("wang.fang", "pass_screening", SCREENED, "manual_review"),
    ("chen.jing", "pass_review", REVIEWED, "tagging"),
    ("li.na", "tag", {"category": "entertainment"}, "preview"),
    ("chen.jing", "publish", PUBLISHED, "published"),
]
REFORM = {
    "title": "上线会员积分商城",
    "tier": "major_reform",
    "description": "新增积分兑换功能",
    "supporting_data": [{"metric": "conversion_rate", "value": 0.021, "source": "交易记录"}],
}


@dataclass
class Sop:
    """Runs `sopflow --db URL ...` in-process and checks what every run must satisfy."""

    db: str
    runner: CliRunner

    def __call__(
        self,
        *args: str,
        user: str | None = None,
        as_json: bool = False,
        db: str | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> Result:
        head = ["--db", db or self.db]
        if user is not None:
            head += ["--as", user]
        if as_json:
            head.append("--json")
        result = self.runner.invoke(
            cli, [*head, *args], env={**CLEAN_ENV, **(env or {})}, catch_exceptions=False
        )
        assert "Traceback" not in result.output, result.output
        if result.exit_code not in (0, 3) and not as_json:
            assert result.stderr.strip(), f"exit {result.exit_code} without a word on stderr"
        return result

    def ok(self, *args: str, user: str | None = None, as_json: bool = False) -> Result:
        result = self(*args, user=user, as_json=as_json)
        assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str, user: str | None = None) -> Any:
        return json.loads(self.ok(*args, user=user, as_json=True).stdout)

    def start(self, definition: str, user: str, data: Mapping[str, Any], *extra: str) -> int:
        answer = self.json("start", definition, "--data", json.dumps(data), *extra, user=user)
        return int(answer["case"]["id"])

    def fire(self, case: int, event: str, user: str, payload: Mapping[str, Any] | None = None) -> Result:
        args = ["fire", str(case), event] + (["--data", json.dumps(payload)] if payload else [])
        return self(*args, user=user)

    def walk(self, case: int, steps: Sequence[tuple[str, str, dict[str, Any], str]]) -> None:
        for user, event, payload, state in steps:
            result = self.fire(case, event, user, payload)
            assert result.exit_code == 0, result.output
            assert f"is now in {state}" in result.stdout


def refused(result: Result, code: int, *words: str) -> None:
    """The run ended with `code`, one `error:` line naming what went wrong, and a hint."""
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("error: "), result.stderr
    assert "hint: " in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "x.db"


@pytest.fixture
def sop(db_path: Path) -> Sop:
    return Sop(f"sqlite:///{db_path}", CliRunner())


@pytest.fixture
def deployed(sop: Sop) -> Sop:
    """The org with content-review and tiered-approval deployed."""
    sop.ok(
        "deploy",
        str(DEFINITIONS / "org.yaml"),
        str(DEFINITIONS / "content-review.yaml"),
        str(DEFINITIONS / "tiered-approval.yaml"),
    )
    return sop


@pytest.fixture
def submitted(deployed: Sop) -> int:
    """A content-review case submitted for screening (its 4-hour deadline is running), not yet claimed."""
    case = deployed.start("content-review", "li.na", CONTENT)
    deployed.walk(case, MAIN_PATH[:1])
    return case


def future(days: int = 30) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


# -- validate ---------------------------------------------------------------------------------------------


def test_validate_a_clean_folder_prints_a_summary(sop: Sop) -> None:
    result = sop.ok("validate", str(DEFINITIONS))
    assert re.search(r"^\d+ file\(s\) checked: 0 error\(s\), \d+ warning\(s\)$", result.stdout, re.MULTILINE)


def test_validate_reports_warnings_but_passes(sop: Sop) -> None:
    result = sop.ok("validate", str(MINI / "expense.yaml"), str(MINI / "org.yaml"))
    assert re.search(r"expense\.yaml:\d+:\d+: warning\[no-owner\]: working state `joint`", result.stdout)
    assert "2 file(s) checked: 0 error(s), 1 warning(s)" in result.stdout


def test_validate_a_broken_file_names_file_line_column_and_code(sop: Sop) -> None:
    result = sop("validate", str(BAD / "unknown-state-1.yaml"), str(BAD / "org.yaml"))
    assert result.exit_code == 1
    assert re.search(
        r"^\S*unknown-state-1\.yaml:\d+:\d+: error\[unknown-state\]: there is no state `manual_reviw`$",
        result.stderr,
        re.MULTILINE,
    ), result.stderr
    assert "hint: did you mean `manual_review`?" in result.stderr
    assert "1 error(s)" in result.stderr


def test_validate_a_missing_path_is_a_usage_error(sop: Sop, tmp_path: Path) -> None:
    refused(sop("validate", str(tmp_path / "nope")), 2, "nope")


def test_validate_json_lists_definitions_org_and_problems(sop: Sop) -> None:
    clean = sop.json("validate", str(MINI / "expense.yaml"), str(MINI / "org.yaml"))
    assert clean["ok"] is True
    assert clean["definitions"] == ["expense@1"]
    assert clean["org"] == "mini-co"
    assert [p["code"] for p in clean["problems"]] == ["no-owner"]

    result = sop("validate", str(BAD / "unknown-state-1.yaml"), str(BAD / "org.yaml"), as_json=True)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    problem = next(p for p in report["problems"] if p["code"] == "unknown-state")
    assert set(problem) == {"file", "line", "col", "severity", "code", "message", "hint"}
    assert problem["severity"] == "error"
    assert problem["file"].endswith("unknown-state-1.yaml")
    assert isinstance(problem["line"], int) and problem["line"] > 1
    assert isinstance(problem["col"], int) and problem["col"] > 1


# -- simulate ---------------------------------------------------------------------------------------------


def _steps(path: Sequence[tuple[str, str, dict[str, Any], str]]) -> list[str]:
    return [f"{event}@{user}" + (f"={json.dumps(p)}" if p else "") for user, event, p, _ in path]


def test_simulate_walks_the_main_path_without_a_database(sop: Sop, db_path: Path) -> None:
    result = sop.ok(
        "simulate", "content-review", *_steps(MAIN_PATH), "--data", json.dumps(CONTENT), user="li.na"
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith("start as li.na → collect")
    assert "submit as li.na: collect → screening" in lines
    assert "  next: claim by content_specialist (nobody has taken it yet)" in lines
    assert "publish as chen.jing: preview → published" in lines
    assert lines[-1] == "  the case is closed"
    assert not db_path.exists()


def test_simulate_reports_a_refused_step_with_its_reason_and_goes_on(sop: Sop) -> None:
    typo = {"topic_compliant": True, "typo_free": False}
    steps = [*_steps(MAIN_PATH[:2]), f"pass_screening@wang.fang={json.dumps(typo)}", "tag@li.na"]
    result = sop("simulate", "content-review", *steps, "--data", json.dumps(CONTENT), user="li.na")
    refused(result, 1, "error: pass_screening as wang.fang: REFUSED (guard-refused)", "Screening standard")
    assert "hint: the condition is `payload.topic_compliant && payload.typo_free`" in result.stderr
    assert (
        result.stdout.splitlines()[-1]
        == "  next: reject_noncompliant by the case's assignee (assignee: wang.fang)"
    )
    assert "error: tag as li.na: REFUSED (not-available)" in result.stderr

    as_json = sop("simulate", "content-review", *steps, "--data", json.dumps(CONTENT), as_json=True)
    assert as_json.exit_code == 1
    run = json.loads(as_json.stdout)
    assert run["state"] == "screening"
    assert run["steps"][0] == {"step": "start", "as": "li.na", "state": "collect"}
    assert [s["refused"]["error"] for s in run["steps"][-2:]] == ["guard-refused", "not-available"]


def test_simulate_rejects_bad_json_as_a_usage_error(sop: Sop) -> None:
    refused(
        sop("simulate", "content-review", "submit@li.na={material", "--data", json.dumps(CONTENT)),
        2,
        "the payload of `submit` is not valid JSON",
    )
    refused(sop("simulate", "content-review", "--data", "{title", user="li.na"), 2, "--data is not valid")
    refused(sop("simulate", "content-review", "--data", "[1]", user="li.na"), 2, "must be a JSON object")


def test_simulate_needs_someone_to_start_and_a_known_definition(sop: Sop) -> None:
    refused(sop("simulate", "content-review"), 2, "who starts the case?")
    refused(sop("simulate", "no-such-process", user="li.na"), 2, "no definition `no-such-process`")


# -- diagram ----------------------------------------------------------------------------------------------


def test_diagram_of_a_definition_id_in_mermaid(sop: Sop) -> None:
    chart = sop.ok("diagram", "content-review").stdout
    assert chart.startswith("flowchart TD")
    assert "start((start)) --> collect" in chart
    assert 'collect -->|"submit"| screening' in chart
    assert "owner: content_specialist" in chart
    assert "class " not in chart  # nothing is highlighted for a definition


def test_diagram_of_a_file_in_dot_keeps_chinese_readable(sop: Sop) -> None:
    chart = sop.ok("diagram", str(MINI / "expense.yaml"), "--format", "dot").stdout
    assert chart.startswith('digraph "expense" {')
    assert '"__start" -> "draft";' in chart
    assert '"route" [shape=diamond' in chart
    assert '"draft" -> "route" [label="submit"];' in chart
    # dot has no \uXXXX escapes: the labels must carry the characters themselves.
    assert "草稿" in chart
    assert "\\u" not in chart


def test_diagram_of_a_case_marks_its_path_and_current_state(deployed: Sop, submitted: int) -> None:
    chart = deployed.ok("diagram", str(submitted)).stdout
    assert "class collect,screening visited" in chart
    assert "class screening current" in chart

    dot = deployed.ok("diagram", str(submitted), "--format", "dot").stdout
    current = next(line for line in dot.splitlines() if line.strip().startswith('"screening" ['))
    assert 'fillcolor="#fde68a"' in current
    visited = next(line for line in dot.splitlines() if line.strip().startswith('"collect" ['))
    assert 'fillcolor="#dbeafe"' in visited


def test_diagram_of_unknown_things(deployed: Sop) -> None:
    refused(deployed("diagram", "99"), 1, "case 99 does not exist")
    refused(deployed("diagram", "no-such-process"), 2, "no definition `no-such-process`")
    refused(deployed("diagram", str(BAD / "unknown-state-1.yaml")), 1, "error[unknown-state]")


# -- db upgrade, deploy, defs -----------------------------------------------------------------------------


def test_db_upgrade_creates_the_schema_then_is_up_to_date(sop: Sop) -> None:
    first = sop.ok("db", "upgrade").stdout
    assert first.startswith("schema upgraded from nothing to revision ")
    assert sop.ok("db", "upgrade").stdout.startswith("the schema is up to date (revision ")
    again = sop.json("db", "upgrade")
    assert again["from"] == again["to"] is not None


def test_deploy_then_deploy_again_is_unchanged(sop: Sop) -> None:
    first = sop.ok("deploy", str(DEFINITIONS)).stdout.splitlines()
    assert "org: deployed" in first
    assert "content-review@3: deployed" in first
    second = sop.ok("deploy", str(DEFINITIONS)).stdout.splitlines()
    assert "org: deployed" not in second
    assert "content-review@3: unchanged" in second
    answer = sop.json("deploy", str(DEFINITIONS))
    assert answer["org_changed"] is False
    assert answer["definitions"]["tiered-approval@3"] is False


def test_deploy_changed_content_under_the_same_version_is_a_conflict(sop: Sop, tmp_path: Path) -> None:
    folder = tmp_path / "defs"
    folder.mkdir()
    for name in ("org.yaml", "content-review.yaml"):
        shutil.copy(DEFINITIONS / name, folder / name)
    sop.ok("deploy", str(folder))
    changed = folder / "content-review.yaml"
    changed.write_text(changed.read_text(encoding="utf-8").replace("内容审核SOP", "内容审核流程"), "utf-8")
    refused(sop("deploy", str(folder)), 1, "content-review@3", "different content", "version")
    answer = sop("deploy", str(folder), as_json=True)
    assert json.loads(answer.stdout)["error"] == "conflict"
    assert "内容审核SOP" in sop.ok("defs", "list").stdout


def test_a_refused_deploy_stores_nothing(sop: Sop, tmp_path: Path) -> None:
    folder = tmp_path / "defs"
    folder.mkdir()
    for name in ("org.yaml", "content-review.yaml", "training.yaml"):
        shutil.copy(DEFINITIONS / name, folder / name)
    sop.ok("deploy", str(folder / "org.yaml"), str(folder / "training.yaml"))
    review = folder / "content-review.yaml"
    review.write_text(review.read_text(encoding="utf-8").replace("version: 1", "version: 2", 1), "utf-8")
    training = folder / "training.yaml"
    training.write_text(training.read_text(encoding="utf-8").replace("培训流程", "培训流程X", 1), "utf-8")
    assert sop("deploy", str(folder)).exit_code == 1
    assert [d["id"] for d in sop.json("defs", "list")] == ["training"]


def test_deploy_a_broken_folder_stores_nothing(sop: Sop) -> None:
    result = sop("deploy", str(BAD / "unknown-state-1.yaml"), str(BAD / "org.yaml"))
    refused(result, 1, "error[unknown-state]")
    assert sop.json("defs", "list") == []


def test_defs_list_and_show(deployed: Sop) -> None:
    listing = deployed.ok("defs", "list").stdout
    assert re.search(r"^content-review\s+3\s+内容审核SOP / Content Review SOP\s+9$", listing, re.MULTILINE)
    items = deployed.json("defs", "list")
    assert {d["id"] for d in items} == {"content-review", "tiered-approval"}
    assert set(items[0]) == {"id", "version", "title", "content_hash"}

    shown = deployed.ok("defs", "show", "content-review").stdout
    assert shown.startswith("content-review@3  内容审核SOP / Content Review SOP")
    assert "data fields: title*, origin*, contributor," in shown
    assert re.search(
        r"^screening\s+初步筛选 / Initial screening\s+content_specialist\s+pass_screening → "
        r"manual_review; return_for_fix → collect",
        shown,
        re.MULTILINE,
    )
    assert "deadline publish-within-4h: screening → published/rejected/discarded within 240 min" in shown

    approval = deployed.ok("defs", "show", "tiered-approval").stdout
    assert "approve (a vote) → approved; reject (a vote) → returned" in approval

    d = deployed.json("defs", "show", "content-review")
    assert (d["id"], d["version"], d["initial"]) == ("content-review", 3, "collect")
    assert d["states"]["screening"]["owner"] == "content_specialist"
    assert d["states"]["published"]["final"] is True
    assert d["deadlines"][0]["name"] == "publish-within-4h"
    assert d["deadlines"][0]["within_seconds"] == 4 * 3600
    assert "title" in d["data"]["required"]


def test_defs_show_unknown_suggests_the_close_one(deployed: Sop) -> None:
    refused(deployed("defs", "show", "content-revew"), 1, "did you mean `content-review`?")


# -- start ------------------------------------------------------------------------------------------------


def test_start_with_data_data_file_and_key(deployed: Sop, tmp_path: Path) -> None:
    first = deployed.ok("start", "content-review", "--data", json.dumps(CONTENT), user="li.na")
    assert first.stdout.startswith("case 1 (content-review@3) is now in collect: 收集内容素材")

    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps({"title": "夏季运营指南", "origin": "original"}), encoding="utf-8")
    from_file = deployed.json("start", "content-review", "--data-file", str(data_file), user="li.na")
    assert from_file["case"]["id"] == 2
    assert from_file["case"]["data"] == {"title": "夏季运营指南", "origin": "original"}

    keyed = deployed.start("content-review", "li.na", CONTENT, "--key", "import-42")
    again = deployed(
        "start", "content-review", "--data", json.dumps(CONTENT), "--key", "import-42", user="li.na"
    )
    assert again.exit_code == 0
    assert again.stdout.startswith(f"case {keyed} ")
    assert "already done" in again.stdout
    assert len(deployed.json("list")) == 3


def test_start_json_shape(deployed: Sop) -> None:
    answer = deployed.json("start", "content-review", "--data", json.dumps(CONTENT), user="li.na")
    assert set(answer) == {"case", "record", "replayed", "key"}
    assert answer["replayed"] is False
    case = answer["case"]
    assert case["definition"] == "content-review@3"
    assert case["state"] == "collect"
    assert case["state_title"] == {"zh": "收集内容素材", "en": "Collect material"}
    assert (case["starter"], case["version"], case["open"]) == ("li.na", 1, True)
    record = answer["record"]
    assert (record["seq"], record["event"], record["outcome"]) == (1, "start", "accepted")
    assert re.fullmatch(r"[0-9a-f]{64}", record["hash"])


def test_start_refusals(deployed: Sop, tmp_path: Path) -> None:
    data = json.dumps(CONTENT)
    refused(deployed("start", "content-review", "--data", data), 2, "who is acting?", "--as")
    refused(deployed("start", "content-review", "--data", data, user="li.nb"), 1, "did you mean `li.na`?")
    refused(
        deployed("start", "content-review", "--data", '{"title": "x", "origin": "bogus"}', user="li.na"),
        1,
        "does not fit content-review@3",
        "origin",
    )
    refused(
        deployed(
            "start", "content-review", "--data", '{"title": "x", "origin": "user_submission"}', user="li.na"
        ),
        1,
        "contributor",
    )
    refused(
        deployed("start", "content-revew", "--data", data, user="li.na"), 1, "did you mean `content-review`?"
    )
    refused(deployed("start", "content-review", "--data", "{oops", user="li.na"), 2, "not valid JSON")
    refused(deployed("start", "content-review", "--data", "[1, 2]", user="li.na"), 2, "must be a JSON object")
    refused(
        deployed("start", "content-review", "--data-file", str(tmp_path / "none.json"), user="li.na"),
        2,
        "cannot read",
    )
    data_file = tmp_path / "d.json"
    data_file.write_text(data, encoding="utf-8")
    refused(
        deployed("start", "content-review", "--data", data, "--data-file", str(data_file), user="li.na"),
        2,
        "not both",
    )
    assert deployed.json("list", "--all", "--definition", "content-review") == []


# -- fire -------------------------------------------------------------------------------------------------


def test_fire_moves_the_case(deployed: Sop) -> None:
    case = deployed.start("content-review", "li.na", CONTENT)
    result = deployed.fire(case, "submit", "li.na", SUBMIT)
    assert result.exit_code == 0
    assert (
        result.stdout == f"case {case} (content-review@3) is now in screening: 初步筛选 / Initial screening\n"
    )
    deployed.walk(case, MAIN_PATH[1:])
    assert deployed.json("show", str(case))["case"]["open"] is False


def test_fire_not_permitted_is_refused_and_audited(deployed: Sop, submitted: int) -> None:
    result = deployed.fire(submitted, "pass_screening", "li.na", SCREENED)
    refused(result, 1, "li.na may not fire `pass_screening`")
    trail = deployed.ok("history", str(submitted)).stdout
    assert re.search(r"li\.na\s.*pass_screening\s+REFUSED: not-permitted: li\.na may not fire", trail)
    assert deployed.json("show", str(submitted))["case"]["version"] == 2


def test_fire_guard_refused_shows_the_rule(deployed: Sop, submitted: int) -> None:
    deployed.walk(submitted, MAIN_PATH[1:2])
    result = deployed.fire(
        submitted, "pass_screening", "wang.fang", {"topic_compliant": True, "typo_free": False}
    )
    refused(result, 1, "Screening standard", "payload.topic_compliant && payload.typo_free")
    records = deployed.json("history", str(submitted))
    assert records[-1]["outcome"] == "refused"
    assert records[-1]["reason"].startswith("guard-refused: ")


def test_fire_invalid_payload_and_unknown_event(deployed: Sop, submitted: int) -> None:
    deployed.walk(submitted, MAIN_PATH[1:2])
    refused(
        deployed.fire(submitted, "pass_screening", "wang.fang", {"topic_compliant": True}), 1, "typo_free"
    )
    refused(
        deployed.fire(submitted, "publish", "chen.jing", PUBLISHED),
        1,
        "`publish` is not an event of state `screening`",
        "pass_screening",
    )


def test_fire_with_a_stale_expected_version_is_a_conflict(deployed: Sop, submitted: int) -> None:
    stale = ["fire", str(submitted), "claim", "--expect-version", "1"]
    refused(deployed(*stale, user="wang.fang"), 1, "someone changed it since you looked", "sopflow show")
    answer = deployed(*stale, user="wang.fang", as_json=True)
    assert answer.exit_code == 1
    assert json.loads(answer.stdout)["error"] == "conflict"
    current = deployed.ok("fire", str(submitted), "claim", "--expect-version", "2", user="wang.fang")
    assert "is now in screening" in current.stdout


def test_fire_with_a_key_twice_writes_once(deployed: Sop, submitted: int) -> None:
    args = ["fire", str(submitted), "claim", "--key", "claim-1"]
    first = deployed.ok(*args, user="wang.fang")
    assert "already done" not in first.stdout
    count = len(deployed.json("history", str(submitted)))
    again = deployed.ok(*args, user="wang.fang")
    assert "already done: this key was used before, nothing new was written" in again.stdout
    assert deployed.json(*args, user="wang.fang")["replayed"] is True
    assert len(deployed.json("history", str(submitted))) == count


def test_fire_on_unknown_or_malformed_cases(deployed: Sop) -> None:
    refused(deployed("fire", "99", "submit", user="li.na"), 1, "case 99 does not exist", "sopflow list")
    refused(deployed("fire", "abc", "submit", user="li.na"), 2, "`abc` is not a case number")
    refused(deployed("fire", "1", "submit"), 2, "who is acting?")
    missing = deployed("fire", user="li.na")
    assert missing.exit_code == 2
    assert "Missing argument 'CASE'" in missing.stderr


def test_errors_in_json_mode_are_json_on_stdout(deployed: Sop) -> None:
    result = deployed("fire", "99", "submit", user="li.na", as_json=True)
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "error": "not-found",
        "message": "case 99 does not exist",
        "hint": "`sopflow list` shows the cases",
    }
    assert result.stderr.startswith("error: case 99 does not exist")


# -- show -------------------------------------------------------------------------------------------------


def test_show_a_case_for_a_person(deployed: Sop, submitted: int) -> None:
    out = deployed.ok("show", str(submitted), user="li.na").stdout
    lines = out.splitlines()
    assert lines[0] == f"case {submitted}  content-review@3  内容审核SOP / Content Review SOP"
    assert "state    screening: 初步筛选 / Initial screening" in lines
    assert "owner    content_specialist" in lines
    assert re.search(r'^data     \{\n(\s+".*\n)*\s+"contributor": "用户小王",$', out, re.MULTILINE)
    assert re.search(
        r"^deadline publish-within-4h .*: due \d{4}-\d\d-\d\d \d\d:\d\d UTC, \d+h\d\dm left$",
        out,
        re.MULTILINE,
    )
    assert "what li.na may do now:" in lines
    assert re.search(
        r"^  no  pass_screening → manual_review  \(li\.na may not fire .*assignee", out, re.MULTILINE
    )
    assert "  yes claim → (stays)" in lines


def test_show_after_claim_says_yes_with_what_is_needed(deployed: Sop, submitted: int) -> None:
    deployed.walk(submitted, MAIN_PATH[1:2])
    out = deployed.ok("show", str(submitted), user="wang.fang").stdout
    assert "owner    content_specialist   assignee: wang.fang" in out
    assert "  yes pass_screening → manual_review  (needs topic_compliant, typo_free)" in out
    without = deployed.ok("show", str(submitted)).stdout
    assert "(pass --as USER to see what that person may do now)" in without
    assert "may do now:" not in without


def test_show_approval_progress(deployed: Sop) -> None:
    case = deployed.start("tiered-approval", "zhou.qiang", REFORM)
    deployed.walk(case, [("zhou.qiang", "submit", {}, "major_reform_approval")])
    vote = deployed.ok("fire", str(case), "approve", "--comment", "运营侧同意", user="ma.chao")
    assert "vote recorded; the approval is still pending" in vote.stdout
    out = deployed.ok("show", str(case), user="guo.hui").stdout
    assert (
        "approval all of operations_director, technology_director (one rejection rejects); "
        "ma.chao (operations_director) approved; waiting for technology_director"
    ) in out
    assert "  yes approve → approved when the rule is met (a vote)" in out
    again = deployed.ok("show", str(case), user="ma.chao").stdout
    assert re.search(r"^  no  approve → .*\(ma\.chao", again, re.MULTILINE)
    deployed.walk(case, [("guo.hui", "approve", {}, "approved")])
    closed = deployed.ok("show", str(case), user="guo.hui").stdout
    assert "state    approved: 已批准 / Approved  (closed)" in closed
    assert "may do now:" not in closed


def test_show_json_shape(deployed: Sop, submitted: int) -> None:
    answer = deployed.json("show", str(submitted), user="wang.fang")
    assert set(answer) == {"case", "options", "deadlines", "parent", "children", "branches"}
    assert (answer["parent"], answer["children"]) == (None, [])
    assert answer["case"]["state"] == "screening"
    assert answer["case"]["data"]["material_url"] == SUBMIT["material_url"]
    options = {o["event"]: o for o in answer["options"]}
    assert set(options) == {"pass_screening", "return_for_fix", "reject_noncompliant", "claim", "start_work"}
    assert options["start_work"]["allowed"] is False  # nobody has claimed it yet
    assert set(options["pass_screening"]) == {"event", "allowed", "reason", "by", "targets", "payload_fields"}
    assert options["claim"]["allowed"] is True
    assert options["pass_screening"]["allowed"] is False
    assert options["pass_screening"]["targets"] == ["manual_review"]
    (deadline,) = answer["deadlines"]
    assert deadline["name"] == "publish-within-4h"
    assert deadline["overdue"] is False
    assert deadline["seconds_left"] > 0
    assert datetime.fromisoformat(deadline["due_at"]) > datetime.now(UTC)


def test_show_unknown_and_malformed_cases(deployed: Sop) -> None:
    refused(deployed("show", "42"), 1, "case 42 does not exist")
    refused(deployed("show", "forty-two"), 2, "is not a case number")
    case = deployed.start("content-review", "li.na", CONTENT)
    assert deployed.ok("show", f"#{case}").stdout.startswith(f"case {case}  content-review@3")


# -- list -------------------------------------------------------------------------------------------------


@pytest.fixture
def several(deployed: Sop) -> dict[str, int]:
    """Four cases: one collecting, one claimed by wang.fang in screening, one withdrawn, one approval."""
    ids = {
        "collect": deployed.start("content-review", "li.na", {"title": "A", "origin": "original"}),
        "claimed": deployed.start("content-review", "li.na", CONTENT),
        "withdrawn": deployed.start("content-review", "wang.fang", {"title": "C", "origin": "original"}),
        "reform": deployed.start("tiered-approval", "zhou.qiang", REFORM),
    }
    deployed.walk(ids["claimed"], MAIN_PATH[:2])
    deployed.walk(ids["withdrawn"], [("wang.fang", "withdraw", {"reason": "重复"}, "discarded")])
    return ids


def _ids(sop: Sop, *args: str, user: str | None = None) -> list[int]:
    return [c["id"] for c in sop.json("list", *args, user=user)]


def test_list_filters(deployed: Sop, several: dict[str, int]) -> None:
    collect, claimed, withdrawn, reform = several.values()
    assert _ids(deployed) == [collect, claimed, reform]
    assert _ids(deployed, "--all", "--definition", "content-review") == [collect, claimed, withdrawn]
    assert _ids(deployed, "--definition", "tiered-approval") == [reform]
    assert _ids(deployed, "--state", "screening") == [claimed]
    assert _ids(deployed, "--mine", user="wang.fang") == [claimed]
    assert _ids(deployed, "--mine", user="li.na") == []
    assert _ids(deployed, "--where", "title=A") == [collect]
    assert _ids(deployed, "--where", 'origin="user_submission"') == [claimed]
    assert _ids(deployed, "--where", "origin=original", "--all") == [collect, withdrawn]
    assert _ids(deployed, "--limit", "1") == [collect]
    assert _ids(deployed, "--limit", "1", "--after", str(collect)) == [claimed]
    refused(deployed("list", "--mine"), 2, "who is acting?")
    refused(deployed("list", "--limit", "0"), 2, "out of range")


def test_list_all_without_other_filters(deployed: Sop, several: dict[str, int]) -> None:
    assert _ids(deployed, "--all") == list(several.values())


def test_list_text_table(deployed: Sop, several: dict[str, int]) -> None:
    out = deployed.ok("list").stdout.splitlines()
    assert out[0].split() == ["case", "definition", "state", "assignee", "age", "in", "state"]
    claimed = next(line for line in out if line.startswith(f"{several['claimed']} "))
    assert claimed.split()[:4] == [str(several["claimed"]), "content-review@3", "screening", "wang.fang"]


def test_list_overdue_after_a_tick_in_the_future(deployed: Sop, submitted: int) -> None:
    assert deployed.json("list", "--overdue") == []
    deployed.ok("tick", "--now", future())
    (row,) = deployed.json("list", "--overdue")
    assert row["case"] == submitted
    assert row["deadline"] == "publish-within-4h"
    assert row["state"] == "screening"
    assert set(row) == {"case", "deadline", "due_at", "overdue_seconds", "definition", "state", "assignee"}
    out = deployed.ok("list", "--overdue").stdout
    assert re.search(
        rf"^{submitted}\s+content-review\s+screening\s+\S+\s+publish-within-4h", out, re.MULTILINE
    )


# -- history ----------------------------------------------------------------------------------------------


def test_history_lists_steps_and_refusals(deployed: Sop, submitted: int) -> None:
    deployed.fire(submitted, "pass_screening", "li.na", SCREENED)
    deployed.ok("fire", str(submitted), "claim", "--comment", "我来初筛", user="wang.fang")
    out = deployed.ok("history", str(submitted)).stdout.splitlines()
    assert out[0].split()[:5] == ["#", "at", "(UTC)", "actor", "role"]
    rows = out[2:]
    assert len(rows) == 4
    assert re.match(
        r"1\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+li\.na\s+content_specialist\s+start\s+· → collect", rows[0]
    )
    assert "collect → screening" in rows[1]
    assert "REFUSED: not-permitted" in rows[2]
    assert rows[3].rstrip().endswith("我来初筛")

    records = deployed.json("history", str(submitted))
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert [r["outcome"] for r in records] == ["accepted", "accepted", "refused", "accepted"]
    assert records[3]["comment"] == "我来初筛"
    assert records[1]["prev_hash"] == records[0]["hash"]
    assert {"case_id", "actor", "role", "event", "from_state", "to_state", "payload", "data_change"} <= set(
        records[0]
    )


def test_history_of_unknown_case(deployed: Sop) -> None:
    refused(deployed("history", "7"), 1, "case 7 does not exist")
    refused(deployed("history", "seven"), 2, "not a case number")


# -- audit verify -----------------------------------------------------------------------------------------


def test_audit_verify_intact(deployed: Sop, submitted: int) -> None:
    one = deployed.ok("audit", "verify", str(submitted)).stdout
    assert one == "audit trail intact: 1 case(s), 2 record(s) checked\n"
    deployed.start("tiered-approval", "zhou.qiang", REFORM)
    assert deployed.ok("audit", "verify", "--all").stdout.startswith(
        "audit trail intact: 2 case(s), 3 record(s)"
    )
    report = deployed.json("audit", "verify", "--all")
    assert report == {"ok": True, "cases": 2, "records": 3, "findings": []}


def test_audit_verify_needs_a_case_or_all(deployed: Sop) -> None:
    refused(deployed("audit", "verify"), 2, "give a CASE number or --all")
    refused(deployed("audit", "verify", "1", "--all"), 2, "give a CASE number or --all")


def test_audit_verify_finds_a_record_edited_in_the_database(
    deployed: Sop, submitted: int, db_path: Path
) -> None:
    other = deployed.start("tiered-approval", "zhou.qiang", REFORM)
    deployed.walk(submitted, MAIN_PATH[1:3])
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP TRIGGER audit_no_update")
        conn.execute("UPDATE audit SET comment = 'forged' WHERE case_id = ? AND seq = 3", (submitted,))
    conn.close()

    result = deployed("audit", "verify", "--all")
    assert result.exit_code == 1
    assert f"case {submitted}, record 3: its content does not match its hash (it was edited)" in result.stderr
    assert f"case {other}," not in result.stderr
    assert "hint: " in result.stderr
    assert result.stdout.startswith("audit trail BROKEN in 1 case(s): 2 case(s)")
    assert deployed("audit", "verify", str(submitted)).exit_code == 1
    assert deployed.ok("audit", "verify", str(other)).stdout.startswith("audit trail intact")

    as_json = deployed("audit", "verify", "--all", as_json=True)
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert report["findings"] == [
        {"case": submitted, "seq": 3, "problem": "its content does not match its hash (it was edited)"}
    ]


# -- tick -------------------------------------------------------------------------------------------------


def test_tick_now_fires_nothing(deployed: Sop, submitted: int) -> None:
    out = deployed.ok("tick").stdout
    assert out == "fired: nothing due; notifications delivered 0, failed 0\n"


def test_tick_in_the_future_fires_the_deadline_and_its_escalations(deployed: Sop, submitted: int) -> None:
    result = deployed("tick", "--now", future(), as_json=True)
    assert result.exit_code == 0
    report = json.loads(result.stdout)  # the notifications must not spoil the JSON on stdout
    assert report["fired"]["deadline"] == 1
    assert report["fired"]["escalation"] >= 1
    assert report["delivered"] >= 1
    assert report["failed_deliveries"] == 0
    assert f"[notify operations_manager] case {submitted}:" in result.stderr
    # what was due has fired: the next tick at the same time finds nothing
    again = deployed.ok("tick", "--now", future())
    assert again.stdout.startswith("fired: nothing due")


def test_tick_text_and_a_bad_time(deployed: Sop, submitted: int) -> None:
    out = deployed.ok("tick", "--now", future()).stdout
    assert re.search(
        r"^fired: 1 deadline, \d+ escalation; notifications delivered \d+, failed 0$", out, re.MULTILINE
    )
    assert "[notify operations_manager]" in out
    refused(deployed("tick", "--now", "next tuesday"), 2, "`next tuesday` is not a time", "ISO 8601")


# -- demo, --db, environment, internal errors -------------------------------------------------------------


def test_demo_on_the_given_database(sop: Sop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = sop.ok("demo")
    assert f"== sopflow demo on {sop.db}" in result.stdout
    assert "audit trail intact: 2 case(s)" in result.stdout
    assert "li.na: publish REFUSED (not-permitted): li.na may not fire `publish`" in result.stdout
    assert "zhao.min: approve REFUSED (not-permitted)" in result.stdout
    assert "flowchart TD" in result.stdout
    assert not (tmp_path / "sopflow-demo.db").exists()
    assert sop.json("audit", "verify", "--all")["cases"] == 2


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("nope://x", ["database `nope` is not supported", "sqlite:///"]),
        ("not a url", ["is not a database URL"]),
        ("sqlite:////definitely/missing/folder/x.db", ["`/definitely/missing/folder`", "does not exist"]),
    ],
)
def test_a_bad_database_url_is_a_configuration_error(sop: Sop, url: str, words: list[str]) -> None:
    refused(sop("defs", "list", db=url), 2, *words)
    refused(sop("db", "upgrade", db=url), 2, *words)


def test_environment_variables_give_the_database_and_the_user(sop: Sop) -> None:
    runner = CliRunner()
    env = {**CLEAN_ENV, "SOPFLOW_DB": sop.db, "SOPFLOW_USER": "li.na"}
    for args in (["deploy", str(DEFINITIONS)], ["start", "content-review", "--data", json.dumps(CONTENT)]):
        result = runner.invoke(cli, args, env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    (case,) = sop.json("list")
    assert case["starter"] == "li.na"
    # --as wins over SOPFLOW_USER
    result = runner.invoke(cli, ["--as", "wang.fang", "show", "1"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "what wang.fang may do now:" in result.stdout


def test_an_internal_error_is_exit_3_with_a_hint(sop: Sop, monkeypatch: pytest.MonkeyPatch) -> None:
    from sopflow.engine.runtime import Engine

    def broken(self: Engine) -> list[Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(Engine, "definitions", broken)
    result = sop("defs", "list")
    assert result.exit_code == 3
    assert result.stderr.startswith("internal error: RuntimeError: boom\n")
    assert "hint: a bug in sopflow; rerun with SOPFLOW_DEBUG=1" in result.stderr
    with pytest.raises(RuntimeError, match="boom"):
        sop("defs", "list", env={"SOPFLOW_DEBUG": "1"})


def test_help_lists_the_commands(sop: Sop) -> None:
    out = sop.ok("--help").stdout
    for command in (
        "validate",
        "simulate",
        "diagram",
        "deploy",
        "start",
        "fire",
        "show",
        "list",
        "history",
        "audit",
        "tick",
        "worker",
        "demo",
    ):
        assert re.search(rf"^  {command}\s", out, re.MULTILINE), command
