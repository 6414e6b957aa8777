"""What a tamperer who can write the database does: switch the append-only triggers off, run SQL, and
recompute every audit hash after an edit so that the chains look whole again."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import text

from sopflow.engine.audit import seal
from sopflow.engine.runtime import Engine

APPEND_ONLY = ("audit", "definitions", "delegations", "orgs")


def run_sql(engine: Engine, *statements: str, params: dict[str, Any] | None = None) -> None:
    """Run `statements` with every trigger of the append-only tables out of the way."""
    with engine.store.engine.begin() as conn:
        if engine.store.dialect == "sqlite":
            names = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars()
            for name in list(names):
                conn.execute(text(f'DROP TRIGGER "{name}"'))
        else:
            for table in APPEND_ONLY:
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        for statement in statements:
            conn.execute(text(statement), params or {})


def edit_record(engine: Engine, case_id: int, seq: int, **fields: Any) -> None:
    """Change fields of one audit record, then recompute its hash, every later one and the case row's
    last hash: a chain that verifies, with a different story in it."""
    history = engine.store.history(case_id)
    records = list(history)
    records[seq - 1] = replace(records[seq - 1], **fields)
    prev = records[seq - 2].hash if seq > 1 else "0" * 64
    statements: list[tuple[str, dict[str, Any]]] = []
    from sopflow.engine.audit import canonical_json

    for i in range(seq - 1, len(records)):
        sealed = seal(replace(records[i], prev_hash=prev))
        records[i] = sealed
        prev = sealed.hash
        statements.append(
            (
                "UPDATE audit SET actor = :actor, role = :role, on_behalf_of = :on_behalf_of, "
                "comment = :comment, payload = :payload, detail = :detail, data_change = :data_change, "
                "prev_hash = :prev_hash, hash = :hash WHERE case_id = :case_id AND seq = :seq",
                {
                    "actor": sealed.actor,
                    "role": sealed.role,
                    "on_behalf_of": sealed.on_behalf_of,
                    "comment": sealed.comment,
                    "payload": canonical_json(dict(sealed.payload)),
                    "detail": canonical_json(dict(sealed.detail)),
                    "data_change": canonical_json(dict(sealed.data_change)),
                    "prev_hash": sealed.prev_hash,
                    "hash": sealed.hash,
                    "case_id": case_id,
                    "seq": sealed.seq,
                },
            )
        )
    statements.append(
        ("UPDATE cases SET last_hash = :hash WHERE id = :case_id", {"hash": prev, "case_id": case_id})
    )
    for statement, params in statements:
        run_sql(engine, statement, params=params)


def cut_tail(engine: Engine, case_id: int, keep: int) -> None:
    """Delete a case's records after `keep` and make the case row agree with what is left."""
    history = engine.store.history(case_id)
    run_sql(
        engine,
        f"DELETE FROM audit WHERE case_id = {case_id} AND seq > {keep}",
        f"UPDATE cases SET audit_seq = {keep}, last_hash = '{history[keep - 1].hash}' WHERE id = {case_id}",
    )


def delete_case(engine: Engine, case_id: int) -> None:
    """Remove every trace of a case."""
    run_sql(
        engine,
        f"DELETE FROM audit WHERE case_id = {case_id}",
        f"DELETE FROM timers WHERE case_id = {case_id}",
        f"DELETE FROM cases WHERE id = {case_id}",
    )
