"""The first session, tried as a new user would: each test is something a newcomer met that was wrong —
a command they were told to type that failed, an example that did not run, a hint that named the wrong
flag, output that said the opposite of another command, a table too wide to read."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from sopflow.cli.render import duration
from tests.test_cli import BAD, CONTENT, DEFINITIONS, MAIN_PATH, REFORM, SUBMIT, Sop, future, refused
from tests.test_cli_subprocess import SOPFLOW, _env

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sop(tmp_path: Path) -> Sop:
    s = Sop(f"sqlite:///{tmp_path / 'x.db'}", CliRunner())
    s.ok(
        "deploy",
        str(DEFINITIONS / "org.yaml"),
        str(DEFINITIONS / "content-review.yaml"),
        str(DEFINITIONS / "tiered-approval.yaml"),
    )
    return s


# -- getting `sopflow` -----------------------------------------------------------------------------


def test_the_demo_says_how_to_run_sopflow_when_it_is_not_on_path(tmp_path: Path) -> None:
    env = {**_env(), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [SOPFLOW, "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    tried = next(line for line in done.stdout.splitlines() if line.startswith("Try: "))
    command = shlex.split(tried.removeprefix("Try: "))
    assert command[0] == SOPFLOW  # the program that ran, by a path that works from here
    shown = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    assert f"source {Path(SOPFLOW).parent / 'activate'}" in done.stdout


def test_the_readme_says_how_to_get_sopflow_on_path() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ".venv/bin/sopflow" in readme
    assert "source .venv/bin/activate" in readme


# -- examples and hints that must work -------------------------------------------------------------


def test_the_example_in_simulate_help_runs(sop: Sop) -> None:
    text = sop.ok("simulate", "--help").stdout
    start = text.index("sopflow --as")
    example = text[start:].split("\n\n")[0].replace("\\\n", " ")
    args = shlex.split(example)[1:]
    result = sop(*args)
    assert result.exit_code == 0, result.output
    assert "pass_screening as wang.fang: screening → manual_review" in result.stdout


def test_an_invalid_payload_names_the_fields_the_event_takes(sop: Sop) -> None:
    case = sop.start("content-review", "li.na", CONTENT)
    result = sop("fire", str(case), "submit", user="li.na")
    refused(result, 1, "'material_url' is a required property", "`submit` takes material_url*, channel")
    assert "comment" not in result.stderr


def test_a_page_size_out_of_range_names_the_cli_flags(sop: Sop) -> None:
    result = sop("list", "--limit", "0")
    refused(result, 2, "--limit", "--after")
    assert "after_id" not in result.stderr
    refused(sop("tasks", "--limit", "99999999999999999999", user="li.na"), 2, "--limit")


def test_a_sqlite_folder_is_not_told_about_server_credentials(sop: Sop, tmp_path: Path) -> None:
    result = sop("list", db=f"sqlite:///{tmp_path}")
    refused(result, 2, "is a folder, not a SQLite database file", f"sqlite:///{tmp_path / 'sopflow.db'}")
    assert "credentials" not in result.stderr and "server" not in result.stderr


# -- output that reads right -----------------------------------------------------------------------


def test_history_names_roles_in_words_and_fits_a_terminal(sop: Sop) -> None:
    case = sop.start("content-review", "li.na", CONTENT)
    sop.walk(case, MAIN_PATH[:3])
    sop("fire", str(case), "publish", "--comment", "注意" * 200, user="li.na")  # refused, recorded
    out = sop.ok("history", str(case)).stdout
    assert "$assignee" not in out and "$starter" not in out
    assert re.search(r"wang\.fang\s+\(assignee\)\s+pass_screening", out), out
    assert max(len(line) for line in out.splitlines()) <= 200
    assert len(out.splitlines()) == 2 + len(sop.json("history", str(case)))


def test_fire_says_how_a_choice_routed_in_words(sop: Sop) -> None:
    case = sop.start("tiered-approval", "zhou.qiang", REFORM)
    out = sop.ok("fire", str(case), "submit", user="zhou.qiang").stdout
    assert '  routed at routing to major_reform_approval: tier is "major_reform"' in out
    assert "{" not in out


def test_overdue_and_ages_keep_their_sign(sop: Sop) -> None:
    case = sop.start("content-review", "li.na", CONTENT)
    sop.walk(case, MAIN_PATH[:1])
    sop.ok("tick", "--now", future(1))  # a tick run for tomorrow marks today's deadline breached
    out = sop.ok("list", "--overdue").stdout
    assert re.search(r"publish-within-4h\s+not yet: due in 3h5\dm$", out, re.MULTILINE), out
    assert duration(timedelta(hours=-3, minutes=-55)) == "-3h55m"
    assert duration(timedelta(hours=3, minutes=55)) == "3h55m"


def test_every_read_command_prints_json_with_json(sop: Sop, tmp_path: Path) -> None:
    case = sop.start("content-review", "li.na", CONTENT)
    grant = sop.json("delegate", "wang.fang", "--until", future(), user="li.na")
    for args in (
        ["validate", str(DEFINITIONS / "content-review.yaml"), str(DEFINITIONS / "org.yaml")],
        ["diagram", "content-review"],
        ["diagram", str(case), "--format", "dot"],
        ["defs", "list"],
        ["defs", "show", "content-review"],
        ["show", str(case)],
        ["list"],
        ["list", "--overdue"],
        ["tasks"],
        ["history", str(case)],
        ["delegations"],
        ["audit", "verify", "--all"],
        ["simulate", "content-review", "--data", json.dumps(CONTENT)],
        ["undelegate", str(grant["id"])],
    ):
        result = sop(*args, user="li.na", as_json=True)
        assert result.exit_code == 0, (args, result.output)
        json.loads(result.stdout)
    chart = sop.json("diagram", str(case))
    assert chart["format"] == "mermaid" and chart["diagram"].startswith("flowchart TD")
    assert chart["case"] == case and chart["current"] == "collect"


# -- validate ---------------------------------------------------------------------------------------


def test_validate_counts_every_file_it_checked(sop: Sop, tmp_path: Path) -> None:
    folder = tmp_path / "defs"
    folder.mkdir()
    for name in ("org.yaml", "content-review.yaml", "training.yaml"):
        (folder / name).write_text((DEFINITIONS / name).read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "broken.yaml").write_text("id: [unclosed\n", encoding="utf-8")
    result = sop("validate", str(folder))
    assert result.exit_code == 1
    assert "4 file(s) checked: 1 error(s)" in result.stderr


def test_validate_quotes_a_long_name_cut_short(sop: Sop, tmp_path: Path) -> None:
    long = "s" * 10_000
    text = (BAD / "unknown-state-1.yaml").read_text(encoding="utf-8").replace("manual_reviw", long)
    (tmp_path / "long.yaml").write_text(text, encoding="utf-8")
    result = sop("validate", str(tmp_path / "long.yaml"), str(BAD / "org.yaml"))
    assert result.exit_code == 1
    assert "(10000 characters)" in result.stderr
    assert len(result.stderr) < 1000


def test_validate_refuses_a_data_schema_no_case_can_satisfy(sop: Sop) -> None:
    result = sop("validate", str(BAD / "unsatisfiable-schema-1.yaml"), str(BAD / "org.yaml"))
    assert result.exit_code == 1
    assert "error[unsatisfiable-schema]: the `data` schema requires `reaso`" in result.stderr
    assert "did you mean `reason`?" in result.stderr


# -- what the audit trail records, as the README says ------------------------------------------------


def test_what_a_refusal_writes_is_what_the_readme_says(sop: Sop) -> None:
    case = sop.start("content-review", "li.na", CONTENT)
    records = len(sop.json("history", str(case)))
    refused(sop("fire", str(case), "nonsense", user="li.na"), 1, "not an event of state")
    refused(sop("fire", str(case), "submit", "--data", '{"channel": 1}', user="li.na"), 1, "not valid")
    refused(sop("fire", str(case), "submit", "--expect-version", "7", user="li.na"), 1, "version")
    assert len(sop.json("history", str(case))) == records  # not a step at all: nothing written
    refused(sop("fire", str(case), "submit", "--data", json.dumps(SUBMIT), user="chen.jing"), 1)
    assert sop.json("history", str(case))[-1]["outcome"] == "refused"  # who tried: recorded
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "an invalid payload, a stale `--expect-version`" in readme and "writes nothing" in readme


# -- the test suite's own markers --------------------------------------------------------------------


def test_postgresql_runs_carry_the_postgres_marker(request: pytest.FixtureRequest, database_url: str) -> None:
    marked = request.node.get_closest_marker("postgres") is not None
    assert marked == database_url.startswith("postgresql")
    assert os.environ.get("PYTEST_CURRENT_TEST")


# -- code a newcomer can follow: no import circles ---------------------------------------------------


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every `from … import …` in a file, wherever it stands (lazy imports too)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.module or "", [a.name for a in node.names])
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    ]


def test_people_depends_on_the_runtime_never_the_other_way() -> None:
    modules = [m for m, _ in _imports(ROOT / "engine" / "people.py")]
    assert "sopflow.engine.runtime" not in modules
    assert "sopflow.engine.people" not in [m for m, _ in _imports(ROOT / "engine" / "casework.py")]


def test_no_command_module_imports_another_ones_private_helpers() -> None:
    for path in sorted((ROOT / "cli" / "commands").glob("*.py")):
        for module, names in _imports(path):
            if module.startswith("sopflow.cli."):
                private = [n for n in names if n.startswith("_")]
                assert not private, f"{path.name} imports {private} from {module}"
