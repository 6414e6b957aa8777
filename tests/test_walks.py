"""Every seed definition walked in memory along its documented main path and its main refusal
(tests/walks/*.yaml), through the same step logic the durable runtime uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.validate import load_definition_file, load_org_file
from sopflow.engine.errors import SopflowError
from sopflow.engine.simulate import Simulation
from tests.helpers.walks import walk_cases, walk_files

DEFINITIONS = Path(__file__).resolve().parent.parent / "definitions"


@pytest.fixture(scope="module")
def org() -> Any:
    return load_org_file(DEFINITIONS / "org.yaml")


def test_every_definition_has_a_walk() -> None:
    defined = {p.stem for p in DEFINITIONS.glob("*.yaml")} - {"org"}
    walked = {p.stem for p in walk_files()}
    assert defined == walked


@pytest.mark.parametrize(
    ("definition_id", "name", "case"), list(walk_cases()), ids=[f"{d}: {n}" for d, n, _ in walk_cases()]
)
def test_walk(definition_id: str, name: str, case: dict[str, Any], org: Any) -> None:
    definition = load_definition_file(DEFINITIONS / f"{definition_id}.yaml", org)
    sim = Simulation(CompiledDefinition(definition), org)
    running = sim.start(case["start"]["as"], case["start"]["data"])
    if "expect_start_state" in case:
        assert running.state == case["expect_start_state"]
    for n, step in enumerate(case["steps"], 1):
        where = f"step {n} ({step['event']} as {step['as']})"
        if "expect_refused" in step:
            before = (running.state, dict(running.data))
            with pytest.raises(SopflowError) as caught:
                sim.fire(running, step["as"], step["event"], step.get("payload"), step.get("comment"))
            assert caught.value.kind == step["expect_refused"], f"{where}: {caught.value}"
            assert (running.state, dict(running.data)) == before, f"{where} changed the case"
        else:
            try:
                sim.fire(running, step["as"], step["event"], step.get("payload"), step.get("comment"))
            except SopflowError as exc:
                pytest.fail(f"{where} was refused: {exc}")
            if "expect_state" in step:
                assert running.state == step["expect_state"], where
    assert running.state == case["end_state"]
    from sopflow.engine.audit import verify_chain

    assert verify_chain(running.id, running.history, running.history[-1].hash) is None
