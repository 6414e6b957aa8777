"""The seed definitions' scenario files (definitions/*.test.yaml) as other tests use them: the start data
and event payloads they give, for tests that wander through the definitions."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from sopflow.engine.scenario.load import load_scenario_file
from sopflow.engine.scenario.model import Fire, ScenarioFile

DEFINITIONS = Path(__file__).resolve().parent.parent.parent / "definitions"


def scenario_paths() -> list[Path]:
    return sorted(DEFINITIONS.glob("*.test.yaml"))


@cache
def scenarios_of(definition_id: str) -> ScenarioFile:
    loaded, _definition, _org = load_scenario_file(DEFINITIONS / f"{definition_id}.test.yaml")
    return loaded


def payloads(definition_id: str) -> dict[str, dict[str, Any]]:
    """For each event of a definition, the first payload its scenarios give it in a step not refused."""
    found: dict[str, dict[str, Any]] = {}
    for scenario in scenarios_of(definition_id).scenarios:
        for step in scenario.steps:
            if isinstance(step.action, Fire) and step.expect.refused is None and step.action.payload:
                found.setdefault(step.action.event, dict(step.action.payload))
    return found


def start_data(definition_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every (starter, data) a scenario starts a case with (not the starts a scenario expects refused)."""
    return [
        (s.start.actor, dict(s.start.data))
        for s in scenarios_of(definition_id).scenarios
        if s.start.expect.refused is None
    ]
