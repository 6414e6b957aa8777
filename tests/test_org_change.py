"""Deploying the org, on SQLite and PostgreSQL: two org files are refused, and an org that drops people or
roles running cases still point at (starter, assignee, submitter, a user field, a running delegation, the
roles of the state a case waits in) is refused per case, or with `allow_stranded` deployed and reported
per case. An org of another id is refused unless `replace_org`; a changed org.yaml beside a definition
file deployed alone is refused unless named."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from sopflow.cli.main import cli
from sopflow.engine import Engine
from sopflow.engine.errors import Conflict, DefinitionError, StrandedCases
from tests.conftest import MINI, Clock, engine_on
from tests.test_cli_subprocess import SOPFLOW, _env


@pytest.fixture
def sop(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, MINI)


def _org_without(tmp_path: Path, *lines: str) -> Path:
    """A copy of the mini org with the lines that start with any of `lines` removed."""
    text = (MINI / "org.yaml").read_text(encoding="utf-8")
    kept = [line for line in text.splitlines() if not any(line.strip().startswith(x) for x in lines)]
    path = tmp_path / "org.yaml"
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return path


def _expense(sop: Engine) -> int:
    """An expense claim by alice, submitted: waiting for a manager's approval."""
    case = sop.start("expense", {"purpose": "taxi", "amount": 80}, actor="alice").case
    sop.fire(case.id, "submit", actor="alice")
    return case.id


def test_two_org_files_are_refused_and_nothing_is_deployed(sop: Engine, tmp_path: Path) -> None:
    other = tmp_path / "other-org.yaml"
    shutil.copy(MINI / "org.yaml", other)
    other.write_text(other.read_text(encoding="utf-8").replace("id: mini-co", "id: other-co"), "utf-8")
    before = sop.store.org()
    with pytest.raises(DefinitionError) as caught:
        sop.deploy([MINI / "org.yaml", other])
    assert [p.code for p in caught.value.problems if p.severity == "error"] == ["duplicate-org"]
    assert sop.store.org() == before


def test_an_org_dropping_a_running_cases_submitter_is_refused(sop: Engine, tmp_path: Path) -> None:
    case = _expense(sop)
    smaller = _org_without(tmp_path, "alice:")
    before = sop.store.org()
    with pytest.raises(StrandedCases) as caught:
        sop.deploy([smaller])
    assert (case, "its submitter alice would not be in the org") in caught.value.stranded
    assert caught.value.exit_code == 1
    assert sop.store.org() == before


def test_an_org_dropping_a_role_a_case_waits_on_is_refused(sop: Engine, tmp_path: Path) -> None:
    case = _expense(sop)
    state = sop.case(case).state
    without_managers = _org_without(tmp_path, "manager:", "mia:", "max:", "dual:")
    text = without_managers.read_text(encoding="utf-8").replace(", manager: manager", "")
    without_managers.write_text(text, encoding="utf-8")
    with pytest.raises(StrandedCases) as caught:
        sop.deploy([without_managers])
    assert (case, f"state `{state}` needs the role manager, which the org would not have") in (
        caught.value.stranded
    )


def test_allow_stranded_deploys_and_reports_each_case(sop: Engine, tmp_path: Path) -> None:
    case = _expense(sop)
    closed = sop.start("expense", {"purpose": "lunch", "amount": 20}, actor="alice").case
    sop.fire(closed.id, "cancel", actor="alice")  # closed: nothing to strand
    smaller = _org_without(tmp_path, "alice:")
    deployed = sop.deploy([smaller], allow_stranded=True)
    assert deployed.org_changed
    assert deployed.stranded == (
        (case, "its starter alice would not be in the org"),
        (case, "its submitter alice would not be in the org"),
    )
    assert "alice" not in sop.org().users


def test_a_running_delegation_to_a_person_leaving_is_named(sop: Engine, tmp_path: Path, clock: Clock) -> None:
    sop.delegate("mia", "bob", actor="mia", ends_at=clock.now + timedelta(days=3))
    smaller = _org_without(tmp_path, "bob:")
    with pytest.raises(StrandedCases) as caught:
        sop.deploy([smaller])
    assert any(c == 0 and "mia → bob" in p and "person bob" in p for c, p in caught.value.stranded)


def test_an_org_change_that_strands_nothing_deploys(sop: Engine, tmp_path: Path) -> None:
    _expense(sop)
    smaller = _org_without(tmp_path, "b5:")
    assert sop.deploy([smaller]).stranded == ()


def test_the_cli_names_each_stranded_case(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'org.db'}"
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", db, "deploy", str(MINI)]).exit_code == 0
    started = runner.invoke(
        cli, ["--db", db, "--as", "alice", "start", "expense", "--data", '{"purpose": "taxi", "amount": 80}']
    )
    assert started.exit_code == 0, started.output
    assert runner.invoke(cli, ["--db", db, "--as", "alice", "fire", "1", "submit"]).exit_code == 0
    folder = tmp_path / "org"
    folder.mkdir()
    smaller = _org_without(folder, "alice:")
    refused = runner.invoke(cli, ["--db", db, "deploy", str(smaller)])
    assert refused.exit_code == 1
    assert "stranded: case 1: its submitter alice would not be in the org" in refused.output
    allowed = runner.invoke(cli, ["--db", db, "--json", "deploy", "--allow-stranded", str(smaller)])
    assert allowed.exit_code == 0, allowed.output
    answer = json.loads(allowed.output)
    assert answer["org_changed"] is True
    assert {"case": 1, "problem": "its submitter alice would not be in the org"} in answer["stranded"]


def _folder_with(tmp_path: Path, org_text: str) -> Path:
    """A working folder holding expense@2 and the org `org_text` beside it; the file of expense@2."""
    folder = tmp_path / "work"
    folder.mkdir(exist_ok=True)
    (folder / "org.yaml").write_text(org_text, encoding="utf-8")
    expense = (MINI / "expense.yaml").read_text(encoding="utf-8").replace("version: 1", "version: 2")
    (folder / "expense.yaml").write_text(expense, encoding="utf-8")
    return folder / "expense.yaml"


MINI_ORG = (MINI / "org.yaml").read_text(encoding="utf-8")


def test_an_org_of_another_id_is_refused_unless_replace_org(sop: Engine, tmp_path: Path) -> None:
    before = sop.store.org()
    other = _folder_with(tmp_path, MINI_ORG.replace("id: mini-co", "id: other-co"))
    for paths in ([other], [other.parent], [other.parent / "org.yaml", other]):
        with pytest.raises(Conflict) as caught:
            sop.deploy(paths)
        assert "the deployed org is `mini-co`" in str(caught.value) and "--replace-org" in str(caught.value)
        assert sop.store.org() == before
        assert [d.version for d in sop.definitions() if d.id == "expense"] == [1]
    deployed = sop.deploy([other.parent], replace_org=True)
    assert deployed.org_changed and sop.org().id == "other-co"


def test_a_changed_org_beside_a_definition_is_deployed_only_when_named(sop: Engine, tmp_path: Path) -> None:
    before = sop.store.org()
    file = _folder_with(tmp_path, MINI_ORG.replace("name: Bob", "name: Robert"))
    with pytest.raises(Conflict) as caught:
        sop.deploy([file])
    assert "found beside the definition, differs from the deployed org `mini-co`" in str(caught.value)
    assert sop.store.org() == before and sop.org().users["bob"].name == "Bob"
    deployed = sop.deploy([file.parent / "org.yaml", file])
    assert deployed.org_changed and sop.org().users["bob"].name == "Robert"
    # The same org beside a file is no change: the definition alone deploys.
    file.write_text(file.read_text(encoding="utf-8").replace("version: 2", "version: 3"), encoding="utf-8")
    assert not sop.deploy([file]).org_changed


def test_the_cli_refuses_another_org_beside_a_definition(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'org.db'}"
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", db, "deploy", str(MINI)]).exit_code == 0
    other = _folder_with(tmp_path, MINI_ORG.replace("id: mini-co", "id: other-co"))
    refused = runner.invoke(cli, ["--db", db, "deploy", str(other)])
    assert refused.exit_code == 1 and refused.stderr.startswith("error: the deployed org is `mini-co`")
    assert "hint: " in refused.stderr and "org: deployed" not in refused.output
    process = subprocess.run(
        [SOPFLOW, "--db", db, "deploy", str(other)], env=_env(), capture_output=True, text=True, check=False
    )
    assert process.returncode == 1 and "is the org `other-co`" in process.stderr, process.stderr
    replaced = runner.invoke(cli, ["--db", db, "deploy", "--replace-org", str(other.parent / "org.yaml")])
    assert replaced.exit_code == 0 and "org: deployed" in replaced.output, replaced.output
