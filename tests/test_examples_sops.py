"""The four SOPs a new user wrote from docs/language.md alone, now without workarounds.

Data export request, expense reimbursement with amount tiers, vendor onboarding with a 2-of-3 committee
and veto, and release go/no-go with a 2-hour timeout (docs/examples/): each scenario file passes on
SQLite and on PostgreSQL, its trails verified. Beyond passing, the test reads the definitions for the
constructs that replace the workarounds, so that a later edit cannot quietly bring a workaround back:
a person named by an approver and bound to a role, the requester excluded from deciding and doing,
events only the clock fires, a 24-hour rung written as 24 hours from the start, and a start refused
when the department does not match.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sopflow.engine.definition.loader import read_yaml
from sopflow.engine.runtime import Engine
from sopflow.engine.scenario.load import load_scenario_file
from sopflow.engine.scenario.run import run_files
from tests.conftest import ROOT

EXAMPLES = ROOT / "docs" / "examples"
SOPS = ("data-export-request", "expense-reimbursement", "vendor-onboarding", "release-go-no-go")


def definition(name: str) -> dict[str, Any]:
    # The project's own reader: PyYAML's safe_load reads the key `on` as true (YAML 1.1).
    loaded: dict[str, Any] = read_yaml(EXAMPLES / f"{name}.yaml").data
    return loaded


@pytest.mark.parametrize("name", SOPS)
def test_the_scenarios_pass_on_each_database(name: str, database_url: str) -> None:
    files, _definition, org = load_scenario_file(EXAMPLES / f"{name}.test.yaml")
    assert len(files.scenarios) >= 3  # the main path, the main refusal and the clock, at least
    report = run_files([(files, org)], database=database_url, verify=True)
    failures = [f"{r.name}: {r.difference.render()}" for r in report.results if r.difference]
    assert failures == []
    assert len(report.results) == len(files.scenarios)
    with Engine(database_url) as sop:
        assert sop.store.count_cases() == 0  # each scenario ran in a scratch place of its own


def test_the_distribution_example_runs_on_each_database(database_url: str) -> None:
    """The customer complaint of docs/language.md: round-robin turns, a least-loaded check by someone
    other than the proposer, a remedy sent back to its proposer (fired_by), suspend and cancel under
    `control:`, in an org whose user specialists have a wip_limit; its trails verified."""
    files, _definition, org = load_scenario_file(EXAMPLES / "customer-complaint.test.yaml")
    assert org is not None and org.roles["user_specialist"].wip_limit is not None
    report = run_files([(files, org)], database=database_url, verify=True)
    assert [f"{r.name}: {r.difference.render()}" for r in report.results if r.difference] == []
    assert len(report.results) == len(files.scenarios) >= 4
    states = definition("customer-complaint")["states"]
    kinds = {next(iter(set(s["assign"]) - {"not_by"})) for s in states.values() if "assign" in s}
    assert kinds == {"round_robin", "least_loaded", "fired_by"}


def test_a_start_is_refused_when_the_department_does_not_match() -> None:
    for name in ("data-export-request", "expense-reimbursement"):
        assert definition(name)["start"]["when"] == "data.department == actor.department"


def test_the_approver_names_a_person_bound_to_a_role() -> None:
    for name, field, role in (("data-export-request", "analyst", "data_analyst"),
                              ("expense-reimbursement", "payer", "finance")):
        states = definition(name)["states"]
        approvals = [s["approval"] for s in states.values() if "approval" in s]
        assert approvals and all(a["copy"] == {field: field} for a in approvals)
        for approval in approvals:
            assert approval["payload"]["properties"][field] | {"format": "user", "role": role} == (
                approval["payload"]["properties"][field])
            assert "$starter" in approval["not_by"]


def test_the_requester_does_not_decide_or_do_the_work() -> None:
    export = definition("data-export-request")["states"]
    assert export["preparing"]["on"]["deliver"]["not_by"] == ["$starter"]
    expense = definition("expense-reimbursement")["states"]
    assert expense["paying"]["on"]["pay"]["not_by"] == ["$starter", "fired:approve"]
    vendor = definition("vendor-onboarding")["states"]
    assert vendor["committee"]["approval"]["not_by"] == ["$starter"]
    assert vendor["contracting"]["on"]["sign"]["not_by"] == ["fired:approve"]
    assert definition("release-go-no-go")["states"]["deciding"]["approval"]["not_by"] == ["$starter"]


def test_only_the_clock_rejects_or_postpones() -> None:
    for name, state, event in (("data-export-request", "approval", "auto_reject"),
                               ("expense-reimbursement", "manager_approval", "expire"),
                               ("vendor-onboarding", "committee", "auto_reject"),
                               ("release-go-no-go", "deciding", "postpone")):
        found = definition(name)["states"][state]
        assert found["timeout"]["fire"] == event
        assert found["on"][event]["by"] == ["$system"]
    assert definition("release-go-no-go")["states"]["deciding"]["timeout"]["after"] == "2h"


def test_the_committee_is_two_of_three_with_a_veto_and_a_24_hour_rung() -> None:
    vendor = definition("vendor-onboarding")
    approval = vendor["states"]["committee"]["approval"]
    assert approval["quorum"] == {"role": "vendor_committee", "at_least": 2} and approval["veto"] is True
    org = read_yaml(EXAMPLES / "org.yaml").data
    members = [u for u, person in org["users"].items() if "vendor_committee" in person["roles"]]
    assert len(members) == 3
    [deadline] = vendor["deadlines"]
    assert {"from": "start", "after": "24h", "notify": "operations_director"} in deadline["escalate"]


def test_every_sop_is_a_file_a_user_can_run(tmp_path: Path) -> None:
    """Each of the four has its scenario file beside it, which `sopflow test` finds by name."""
    for name in SOPS:
        assert (EXAMPLES / f"{name}.yaml").is_file() and (EXAMPLES / f"{name}.test.yaml").is_file()
