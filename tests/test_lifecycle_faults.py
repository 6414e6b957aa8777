"""Migration under faults, on both databases: a `sopflow migrate` killed (SIGKILL) in the middle leaves
every case fully migrated or untouched, and a step a worker commits while a case is being migrated is
never lost (the case is decided again on top of it)."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from sopflow.engine.lifecycle import migrate as migrate_module
from sopflow.engine.runtime import Engine
from tests.conftest import Clock, fresh_postgres_database
from tests.helpers.faults import clean, sopflow, spawn
from tests.test_lifecycle import FIXTURE, MAP, V1

CASES = 400


def _migrated(engine: Engine) -> int:
    return sum(1 for c in engine.cases(definition="order", limit=10_000) if c.definition_version == 2)


@pytest.mark.slow
def test_a_migration_killed_in_the_middle_leaves_each_case_moved_or_untouched(database_url: str) -> None:
    with Engine(database_url) as setup:
        setup.deploy(V1)
        ids = [setup.start("order", {"item": "pen"}, actor="mia").case.id for _ in range(CASES)]
        for case_id in ids[::2]:
            setup.fire(case_id, "accept", actor="mia")
        setup.deploy([FIXTURE])
    args = ("sopflow", "--db", database_url, "migrate", "order", "--from", "1", "--to", "2")
    args += ("--map", "packing=pack", "--default", "channel=web", "--as", "root")
    process = spawn(*args)
    with Engine(database_url) as check:
        ends = time.monotonic() + 60
        while _migrated(check) < 20 and time.monotonic() < ends:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        moved = _migrated(check)
        assert 0 < moved < CASES, "the migration was not killed in its middle"
        for case_id in ids:
            case = check.case(case_id)
            history = check.history(case_id)
            events = [r.event for r in history]
            if case.definition_version == 2:
                assert events[-1] == "migrate_case" and case.data["channel"] == "web"
            else:
                assert "migrate_case" not in events and "channel" not in case.data
        report = check.verify()
        assert report.ok, report.findings
        # Run again, it moves the rest (and only them).
        done = sopflow(*args[1:])
        assert done.returncode == 0, done.stderr
        clean(done.stderr)
        assert f"{CASES - moved} moved, 0 skipped, 0 failed" in done.stdout
        assert _migrated(check) == CASES
        assert check.verify().ok


@pytest.mark.postgres
def test_a_step_committed_while_a_case_is_migrated_is_not_lost(
    postgres_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = fresh_postgres_database(postgres_server)
    clock = Clock()
    with Engine(url, clock=clock) as sop, Engine(url, clock=clock) as worker:
        sop.deploy(V1)
        case_id = sop.start("order", {"item": "pen"}, actor="mia").case.id
        sop.deploy([FIXTURE])
        real = migrate_module.plan_case
        raced: list[str] = []

        def racing(view: Any, *args: Any, **kwargs: Any) -> Any:
            if not raced:  # another process takes a step between the migration's read and its write
                raced.append(worker.fire(case_id, "accept", actor="mia").case.state)
            return real(view, *args, **kwargs)

        monkeypatch.setattr(migrate_module, "plan_case", racing)
        report = sop.migrate("order", 1, 2, actor="root", state_map=MAP, defaults={"channel": "web"})
    assert raced == ["packing"]
    assert [(c.outcome, c.from_state, c.to_state) for c in report.cases] == [("moved", "packing", "pack")]
    with Engine(url) as check:
        assert [r.event for r in check.history(case_id)] == ["start", "accept", "migrate_case"]
        assert check.case(case_id).state == "pack"
        assert check.verify().ok
