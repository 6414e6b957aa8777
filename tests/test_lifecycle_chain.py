"""The lifecycle log (trials, adoptions, migrations) is append-only and hash-chained, on SQLite and
PostgreSQL: the database refuses an edit or a delete; `audit verify` names an act edited behind its back,
the act after one deleted and an act forged into the log; an anchor catches acts cut from its end; the
migration chains the acts logged before it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from sopflow.cli.main import cli
from sopflow.engine import anchor as anchors
from sopflow.engine.runtime import Engine
from sopflow.engine.store import lifecycle
from tests.conftest import MINI, Clock, engine_on

SOPFLOW = Path(sys.executable).with_name("sopflow")
AT = datetime(2026, 12, 7, 1, 16, tzinfo=UTC)
FORGED = (
    "INSERT INTO lifecycle_actions "
    "(definition_id, action, versions, actor, role, outcome, reason, detail, at) "
    "VALUES ('expense', 'adopt', '{\"1\": 100}', 'han.bing', 'system_administrator', 'accepted', NULL, '{}', "
    "'2026-12-07 01:16:00')"
)


@pytest.fixture
def engine(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, MINI)


def act(engine: Engine, action: str, actor: str = "ed") -> lifecycle.ActionRow:
    return lifecycle.log_action(
        engine.store, "expense", action, {"1": 100}, actor=actor, role="process_owner", accepted=True,
        reason=None, detail={"note": action}, at=AT,
    )  # fmt: skip


def bypass(engine: Engine, statement: str) -> None:
    """Run `statement` with the append-only triggers out of the way, as someone with the database's keys."""
    with engine.store.engine.begin() as conn:
        if engine.store.dialect == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS lifecycle_actions_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS lifecycle_actions_no_delete"))
        else:
            conn.execute(text("ALTER TABLE lifecycle_actions DISABLE TRIGGER USER"))
        conn.execute(text(statement))


def subjects(engine: Engine, **kwargs: object) -> list[str]:
    return [f.subject for f in engine.verify(**kwargs).findings]  # type: ignore[arg-type]


def test_each_act_is_chained_onto_the_one_before(engine: Engine) -> None:
    rows = [act(engine, name) for name in ("trial_start", "trial_stop", "adopt")]
    assert [r.prev_hash for r in rows[1:]] == [r.hash for r in rows[:-1]]
    assert lifecycle.actions(engine.store) == rows
    assert lifecycle.head(engine.store) == (3, rows[-1].hash)
    assert engine.verify().ok


def test_the_database_refuses_an_edit_or_a_delete(engine: Engine) -> None:
    act(engine, "adopt")
    for statement in ("UPDATE lifecycle_actions SET actor = 'wu'", "DELETE FROM lifecycle_actions"):
        with pytest.raises(Exception, match="append-only"), engine.store.engine.begin() as conn:
            conn.execute(text(statement))
    assert [r.actor for r in lifecycle.actions(engine.store)] == ["ed"]


def test_verify_names_an_edited_act_and_the_act_after_a_deleted_one(engine: Engine) -> None:
    first, second, third = (act(engine, name) for name in ("trial_start", "trial_stop", "adopt"))
    bypass(engine, f"UPDATE lifecycle_actions SET actor = 'han.bing' WHERE id = {second.id}")
    found = engine.verify().findings
    assert [f.subject for f in found] == [f"lifecycle act {second.id}"]
    assert "changed after it was logged" in found[0].problem
    bypass(engine, f"DELETE FROM lifecycle_actions WHERE id = {first.id}")
    found = engine.verify().findings
    assert [f.subject for f in found] == [f"lifecycle act {second.id}"]
    assert "one before was removed" in found[0].problem
    assert third.id not in {int(s.rsplit(" ", 1)[1]) for s in subjects(engine)}


def test_verify_names_a_forged_adoption(engine: Engine) -> None:
    act(engine, "trial_start")
    with engine.store.engine.begin() as conn:
        conn.execute(text(FORGED))
    forged = lifecycle.actions(engine.store)[-1]
    assert forged.actor == "han.bing"
    found = engine.verify().findings
    assert [f.subject for f in found] == [f"lifecycle act {forged.id}"]
    assert "forged" in found[0].problem


def test_an_anchor_catches_acts_cut_from_the_end(engine: Engine, tmp_path: Path) -> None:
    key = os.urandom(32)
    rows = [act(engine, name) for name in ("trial_start", "trial_stop", "adopt")]
    anchor = engine.anchor(key)
    assert anchor.lifecycle == (3, rows[-1].hash)
    assert engine.verify(anchors=[anchor]).ok
    bypass(engine, f"DELETE FROM lifecycle_actions WHERE id = {rows[-1].id}")
    assert engine.verify().ok  # the chain left is whole: only the anchor knows it was longer
    found = engine.verify(anchors=[anchor]).findings
    assert [f.subject for f in found] == ["lifecycle log"] and "3 of them, 2 remain" in found[0].problem
    path = tmp_path / "anchor.json"
    path.write_text(anchor.text(), encoding="utf-8")
    assert anchors.read(path, key).lifecycle == anchor.lifecycle


def test_audit_verify_names_a_forged_act_through_the_cli(database_url: str, engine: Engine) -> None:
    act(engine, "adopt")
    env = {"SOPFLOW_DB": None, "SOPFLOW_USER": None}
    result = CliRunner().invoke(cli, ["--db", database_url, "audit", "verify", "--all"], env=env)
    assert result.exit_code == 0, result.output
    with engine.store.engine.begin() as conn:
        conn.execute(text(FORGED))
    result = CliRunner().invoke(cli, ["--db", database_url, "audit", "verify", "--all"], env=env)
    assert result.exit_code == 1 and "lifecycle act 2" in result.stderr and "Traceback" not in result.output
    done = subprocess.run(
        [str(SOPFLOW), "--db", database_url, "audit", "verify", "--all"],
        capture_output=True, text=True, timeout=120, check=False,
        env={k: v for k, v in os.environ.items() if k not in ("SOPFLOW_DB", "SOPFLOW_USER")},
    )  # fmt: skip
    assert done.returncode == 1 and "lifecycle act 2" in done.stderr and "Traceback" not in done.stderr


def test_the_migration_chains_the_acts_logged_before(database_url: str) -> None:
    import sqlalchemy as sa

    from sopflow.engine.store import database

    engine = database.create(database_url)
    try:
        database.upgrade(engine, "0013")
        rows = [
            {"definition_id": "expense", "action": action, "versions": '{"1":100}', "actor": "ed",
             "role": "process_owner", "outcome": "accepted", "reason": None, "detail": "{}",
             "at": datetime(2026, 3, 2, 9, n)}
            for n, action in enumerate(("trial_start", "adopt"))
        ]  # fmt: skip
        old = sa.table("lifecycle_actions", *(sa.column(name) for name in rows[0]))
        with engine.begin() as conn:
            conn.execute(sa.insert(old), rows)
        assert database.upgrade(engine) == database.SCHEMA_REVISION
    finally:
        engine.dispose()
    with Engine(database_url) as sop:
        logged = lifecycle.actions(sop.store)
        assert [r.action for r in logged] == ["trial_start", "adopt"]
        assert logged[0].prev_hash == "0" * 64 and logged[1].prev_hash == logged[0].hash
        assert sop.verify().ok
        act(sop, "trial_start")
        assert sop.verify().ok
        with pytest.raises(Exception, match="append-only"), sop.store.engine.begin() as conn:
            conn.execute(text("DELETE FROM lifecycle_actions"))
