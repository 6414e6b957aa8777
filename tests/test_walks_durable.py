"""Every walk (tests/walks/*.yaml) run again through the durable engine, on SQLite and on PostgreSQL:
the documented paths of every seed process (tiered approval, project lifecycle with its appointed lead,
content review, emergency response …) behave the same stored as in memory, refusals included."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sopflow.engine.errors import SopflowError
from sopflow.engine.runtime import Engine
from tests.conftest import fresh_postgres_database
from tests.helpers.walks import walk_cases

DEFINITIONS = Path(__file__).resolve().parent.parent / "definitions"
CASES = list(walk_cases())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def durable(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('walks') / 'walks.db'}"
    else:
        url = fresh_postgres_database(request.getfixturevalue("postgres_server"))
    engine = Engine(url)
    engine.deploy([DEFINITIONS])
    yield engine
    engine.close()


@pytest.mark.parametrize(("definition_id", "name", "case"), CASES, ids=[f"{d}: {n}" for d, n, _ in CASES])
def test_walk_durably(durable: Engine, definition_id: str, name: str, case: dict[str, Any]) -> None:
    started = durable.start(definition_id, case["start"]["data"], actor=case["start"]["as"])
    case_id = started.case.id
    for n, step in enumerate(case["steps"], 1):
        where = f"step {n} ({step['event']} as {step['as']})"
        before = durable.case(case_id)
        records = len(durable.history(case_id))
        try:
            durable.fire(
                case_id,
                step["event"],
                actor=step["as"],
                payload=step.get("payload"),
                comment=step.get("comment"),
            )
        except SopflowError as exc:
            assert step.get("expect_refused") == exc.kind, f"{where}: {exc}"
            after = durable.case(case_id)
            assert (after.state, after.version, dict(after.data)) == (
                before.state,
                before.version,
                dict(before.data),
            ), where
            audited = exc.kind in ("not-permitted", "guard-refused")
            assert len(durable.history(case_id)) == records + (1 if audited else 0), where
            continue
        assert "expect_refused" not in step, f"{where} should have been refused"
        if "expect_state" in step:
            assert durable.case(case_id).state == step["expect_state"], where
    assert durable.case(case_id).state == case["end_state"]
    assert durable.verify(case_id).ok
