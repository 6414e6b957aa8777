"""Every seed scenario (definitions/*.test.yaml) walked again through the in-memory `Simulation`, up to
its first clock step: the step logic alone, with no database, agrees with the durable runtime that
`sopflow test` drives (tests/test_scenarios.py), refusals included."""

from __future__ import annotations

from pathlib import Path

import pytest

from sopflow.engine.audit import verify_chain
from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.errors import SopflowError
from sopflow.engine.scenario.load import load_scenario_file
from sopflow.engine.scenario.model import Advance, Fire, Scenario
from sopflow.engine.simulate import Simulation
from tests.helpers.walks import DEFINITIONS, scenario_paths

CASES = [
    (path, scenario)
    for path in scenario_paths()
    for scenario in load_scenario_file(path)[0].scenarios
    if scenario.start.expect.refused is None
]


def test_every_definition_has_scenarios() -> None:
    defined = {p.stem for p in DEFINITIONS.glob("*.yaml") if not p.name.endswith(".test.yaml")} - {"org"}
    covered = {p.name.removesuffix(".test.yaml") for p in scenario_paths()}
    assert defined == covered


@pytest.mark.parametrize(("path", "scenario"), CASES, ids=[f"{p.stem}: {s.name}" for p, s in CASES])
def test_walk_in_memory(path: Path, scenario: Scenario) -> None:
    _files, definition, org = load_scenario_file(path)
    sim = Simulation(CompiledDefinition(definition), org)
    running = sim.start(scenario.start.actor, scenario.start.data)
    if scenario.start.expect.state is not None:
        assert running.state == scenario.start.expect.state
    for step in scenario.steps:
        if isinstance(step.action, Advance) or step.action.child:
            break  # time and sub-processes are the durable runtime's: its worker fires the timers
        action: Fire = step.action
        where = f"{path.name}:{step.line}: {step.describe()}"
        before = (running.state, dict(running.data))
        try:
            sim.fire(running, action.actor, action.event, action.payload, action.comment)
        except SopflowError as exc:
            assert step.expect.refused == exc.kind, f"{where}: {exc}"
            assert (running.state, dict(running.data)) == before, f"{where} changed the case"
            continue
        assert step.expect.refused is None, f"{where} should have been refused"
        if step.expect.state is not None:
            assert running.state == step.expect.state, where
    assert verify_chain(running.id, running.history, running.history[-1].hash) is None
