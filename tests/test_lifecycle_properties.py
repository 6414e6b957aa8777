"""Properties of migration: over random pairs of definitions (a state renamed, removed or added; a field
added, required or not, with a default or without) and random case positions, the dry run predicts, case
by case, exactly what the real run does; and the trail verifies after it. On SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sopflow.engine.runtime import Engine
from tests.conftest import MINI, Clock, fresh_postgres_database


def chain(states: list[str], *, version: int, extra_field: bool = False) -> dict[str, Any]:
    """A definition whose states follow one another by `next` and end in `done`."""
    properties: dict[str, Any] = {"a": {"type": "string", "description": "A field."}}
    required = ["a"]
    if extra_field:
        properties["b"] = {"type": "string", "minLength": 2, "description": "A field version 2 adds."}
        required.append("b")
    body: dict[str, Any] = {}
    for here, there in zip(states, [*states[1:], "done"], strict=True):
        body[here] = {
            "title": {"zh": here, "en": here},
            "owner": "employee",
            "on": {"next": {"to": there, "by": ["employee"]}},
        }
    body["done"] = {"title": {"zh": "完成", "en": "Done"}, "final": True}
    return {
        "id": "walk",
        "version": version,
        "title": {"zh": "步行", "en": "Walk"},
        "data": {"type": "object", "required": required, "properties": properties},
        "initial": states[0],
        "states": body,
    }


@st.composite
def pairs(draw: st.DrawFn) -> tuple[list[str], list[str], dict[str, str], bool, dict[str, str], list[int]]:
    """Version 1's states, version 2's, a map, whether version 2 adds the required field `b`, the defaults
    given, and how far each case went (its number of `next` steps)."""
    n = draw(st.integers(2, 5))
    old = [f"s{i}" for i in range(n)]
    new = list(old)
    state_map: dict[str, str] = {}
    renamed = draw(st.sampled_from([None, *range(n)]))
    if renamed is not None:
        new[renamed] = f"r{renamed}"
        if draw(st.booleans()):
            state_map[old[renamed]] = new[renamed]
    removed = draw(st.sampled_from([None, *range(1, n)]))
    if removed is not None and removed != renamed:
        new.pop(removed)
        if draw(st.booleans()):
            state_map[old[removed]] = draw(st.sampled_from(new))
    if draw(st.booleans()):
        new.insert(draw(st.integers(1, len(new))), "added")
    field = draw(st.booleans())
    defaults = draw(st.sampled_from([{}, {"b": "ok"}, {"b": "x"}])) if field else {}
    positions = draw(st.lists(st.integers(0, n), min_size=1, max_size=6))
    return old, new, state_map, field, defaults, positions


Pair = tuple[list[str], list[str], dict[str, str], bool, dict[str, str], list[int]]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs())
def test_the_dry_run_predicts_the_real_run(case: Pair) -> None:
    folder = Path(tempfile.mkdtemp())
    try:
        check(case, folder, f"sqlite:///{folder / 'db.sqlite'}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.postgres
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs())
def test_the_dry_run_predicts_the_real_run_on_postgresql(postgres_server: str, case: Pair) -> None:
    folder = Path(tempfile.mkdtemp())
    try:
        check(case, folder, fresh_postgres_database(postgres_server))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check(case: Pair, folder: Path, url: str) -> None:
    """Deploy version 1, put cases where `case` says, deploy version 2, and compare the dry run with the
    real run case by case."""
    old, new, state_map, field, defaults, positions = case
    shutil.copy(MINI / "org.yaml", folder / "org.yaml")
    (folder / "walk-1.yaml").write_text(yaml.safe_dump(chain(old, version=1), allow_unicode=True))
    with Engine(url, clock=Clock()) as sop:
        sop.deploy([folder])
        for steps in positions:
            started = sop.start("walk", {"a": "x"}, actor="alice").case.id
            for _ in range(steps):
                sop.fire(started, "next", actor="alice")
        v2 = chain(new, version=2, extra_field=field)
        (folder / "walk-2.yaml").write_text(yaml.safe_dump(v2, allow_unicode=True))
        sop.deploy([folder])
        dry = sop.migrate("walk", 1, 2, actor="root", state_map=state_map, defaults=defaults, dry_run=True)
        real = sop.migrate("walk", 1, 2, actor="root", state_map=state_map, defaults=defaults)
        predicted = [
            (c.case_id, c.outcome.replace("would move", "moved"), c.to_state, c.reason) for c in dry.cases
        ]
        assert predicted == [(c.case_id, c.outcome, c.to_state, c.reason) for c in real.cases]
        for c in real.cases:
            after = sop.case(c.case_id)
            assert (after.definition_version == 2) == (c.outcome == "moved")
            if c.outcome == "moved":
                assert after.state == c.to_state
        assert sop.verify().ok, sop.verify().findings
