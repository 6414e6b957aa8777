"""The answer of a write as the writer may see it, on SQLite and PostgreSQL: a person whose grants show a
case only desensitised (`all_desensitised`) gets from `start`, `fire` and `reassign` (the API's `Result`,
`--json fire` through click and a real process) the case and record exactly as `show` and `history` show
them to them, never the row as stored; a person who sees the case raw gets it raw."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sopflow.cli.main import cli
from sopflow.engine import Engine
from tests.conftest import MINI, Clock, engine_on
from tests.test_cli_subprocess import SOPFLOW, _env

KEY = b"0123456789abcdef0123456789abcdef"
MATRIX = """
access:
  employee:
    - {actions: [view, start, modify], scope: own}
  manager:
    - {actions: [view, export], scope: all_desensitised}
    - {actions: [start, modify], scope: all}
  finance:
    - {actions: [view, modify], scope: all}
  admin:
    - {actions: [view, export, start, modify, administer], scope: all}
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    key = tmp_path / "privacy.key"
    key.write_bytes(KEY)
    monkeypatch.setenv("SOPFLOW_PRIVACY_KEY_FILE", str(key))
    out = tmp_path / "defs"
    out.mkdir()
    shutil.copy(MINI / "expense.yaml", out / "expense.yaml")
    (out / "org.yaml").write_text((MINI / "org.yaml").read_text(encoding="utf-8") + MATRIX, encoding="utf-8")
    return out


@pytest.fixture
def sop(database_url: str, clock: Clock, folder: Path) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, folder)


def _submitted(sop: Engine) -> int:
    case = sop.start("expense", {"amount": 80, "purpose": "taxi to the airport"}, actor="alice").case.id
    sop.fire(case, "submit", actor="alice")
    return case


def test_a_step_answers_a_desensitised_reader_as_show_and_history_do(sop: Engine) -> None:
    case = _submitted(sop)
    done = sop.fire(case, "send_back", actor="mia", comment="receipt for alice missing")
    assert done.case == sop.case(case, viewer="mia")
    assert done.record == sop.history(case, viewer="mia")[-1]
    assert done.case.starter not in ("alice", "") and done.record.actor != "mia"
    assert done.record.hash == "" and done.record.comment is None
    assert "alice" not in repr(done) and "'mia'" not in repr(done)
    # Who sees the case raw gets it raw.
    again = sop.fire(case, "submit", actor="alice")
    assert again.case.starter == "alice" and again.record.actor == "alice" and again.record.hash


def test_a_start_and_a_reassignment_answer_as_the_view_allows(sop: Engine) -> None:
    started = sop.start("expense", {"amount": 90, "purpose": "team lunch"}, actor="mia")
    assert started.case == sop.case(started.case.id, viewer="mia")
    assert started.case.starter != "mia" and started.record.actor != "mia"
    case = _submitted(sop)
    holder = sop.case(case).assignee
    other = "max" if holder == "mia" else "mia"
    moved = sop.reassign(case, other, actor="root")
    assert moved.case.assignee == other  # the administrator sees it raw
    handed = sop.reassign(case, holder or "mia", actor=other)
    assert handed.case == sop.case(case, viewer=other) and handed.case.assignee not in ("mia", "max")


def _cli(url: str, folder: Path) -> tuple[CliRunner, str]:
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", url, "deploy", str(folder)]).exit_code == 0
    data = json.dumps({"amount": 80, "purpose": "taxi"})
    assert (
        runner.invoke(cli, ["--db", url, "--as", "alice", "start", "expense", "--data", data]).exit_code == 0
    )
    assert runner.invoke(cli, ["--db", url, "--as", "alice", "fire", "1", "submit"]).exit_code == 0
    return runner, url


def test_json_fire_answers_a_desensitised_reader_through_click_and_a_process(
    database_url: str, folder: Path
) -> None:
    runner, url = _cli(database_url, folder)
    shown = runner.invoke(cli, ["--db", url, "--as", "mia", "--json", "show", "1"])
    assert shown.exit_code == 0, shown.output
    answer = runner.invoke(cli, ["--db", url, "--as", "mia", "--json", "fire", "1", "send_back"])
    assert answer.exit_code == 0, answer.output
    got = json.loads(answer.stdout)
    assert got["case"]["starter"] == json.loads(shown.stdout)["case"]["starter"] != "alice"
    assert "alice" not in answer.stdout and '"mia"' not in answer.stdout
    process = subprocess.run(
        [SOPFLOW, "--db", url, "--as", "mia", "--json", "fire", "1", "submit"],
        env={**_env(), "SOPFLOW_PRIVACY_KEY_FILE": str(folder.parent / "privacy.key")},
        capture_output=True,
        text=True,
        check=False,
    )
    # mia may modify but not submit (by: [$starter]): refused, and the refusal names no one raw.
    assert process.returncode == 1 and "alice" not in process.stdout + process.stderr, process.stderr
    process = subprocess.run(
        [SOPFLOW, "--db", url, "--as", "alice", "fire", "1", "submit"],
        env=_env(),
        capture_output=True,
        check=False,
    )
    assert process.returncode == 0, process.stderr
    process = subprocess.run(
        [SOPFLOW, "--db", url, "--as", "mia", "--json", "fire", "1", "send_back"],
        env={**_env(), "SOPFLOW_PRIVACY_KEY_FILE": str(folder.parent / "privacy.key")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert process.returncode == 0, process.stderr
    assert json.loads(process.stdout)["case"]["starter"] == got["case"]["starter"]
    assert "alice" not in process.stdout and '"mia"' not in process.stdout
