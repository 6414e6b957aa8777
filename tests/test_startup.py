"""What the start-up and in-memory speed work must not change: a case is read without compiling its
definition, guards compile on first use, the audit hash and time format stay byte for byte the same, the
loader refuses exactly the characters YAML refuses, and the schema revision check tells an empty database
from a set-up one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.exc import DatabaseError

from sopflow.engine.audit import AuditRecord, canonical_json, iso, seal
from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.build import build_definition
from sopflow.engine.definition.loader import _NOT_PRINTABLE, parse_yaml
from sopflow.engine.definition.validate import load_org_file
from sopflow.engine.errors import DefinitionError
from sopflow.engine.runtime import Engine
from sopflow.engine.step import People, Snapshot, actor_from_org, take_step
from sopflow.engine.store import database
from tests.conftest import MINI

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_reading_a_case_loads_neither_transitions_nor_cel_nor_jsonschema(sqlite_url: str) -> None:
    with Engine(sqlite_url) as engine:
        engine.deploy([MINI])
        case_id = engine.start("expense", {"amount": 100, "purpose": "taxi"}, actor="alice").case.id
        engine.fire(case_id, "submit", actor="alice")
    heavy = "[m in sys.modules for m in ('transitions', 'cel.cel', 'jsonschema')]"
    code = (
        "import sys\n"
        "from engine.runtime import Engine\n"
        f"engine = Engine({sqlite_url!r})\n"
        f"case = engine.case({case_id})\n"
        "engine.definition(case.definition_id, case.definition_version)\n"
        f"engine.deadlines({case_id}); engine.approval_progress({case_id})\n"
        f"print(case.state, *{heavy})\n"
        f"engine.options({case_id}, 'mia')\n"  # what a person may do needs the machine
        "print('transitions' in sys.modules)\n"
    )
    assert _python(code) == ["manager_review", "False", "False", "False", "True"]


_BAD_GUARD = """
id: bad
version: 1
title: {zh: 坏, en: Bad}
data: {type: object, properties: {amount: {type: number}}}
initial: draft
states:
  draft:
    title: {zh: 草稿, en: Draft}
    owner: employee
    on:
      submit: {to: done, by: [$starter], when: "data.amount >"}
  done:
    title: {zh: 完成, en: Done}
    final: true
"""


def test_a_guard_compiles_on_first_use_and_a_bad_one_is_reported_then() -> None:
    # Deploying runs the semantic checks, which compile every guard; only a definition that skipped
    # them can carry a guard that does not compile, and it is reported when the guard is first needed.
    org = load_org_file(MINI / "org.yaml")
    compiled = CompiledDefinition(build_definition(parse_yaml(_BAD_GUARD, "bad.yaml")))
    alice = actor_from_org(org, "alice")
    people = People(org, lambda role: None)
    with pytest.raises(DefinitionError, match="bad-guard"):
        take_step(compiled, Snapshot("draft", {"amount": 1}, "alice"), alice, "submit", {}, people)


def test_the_audit_hash_and_canonical_json_are_unchanged() -> None:
    record = seal(
        AuditRecord(
            case_id=7,
            seq=3,
            at="2026-03-01T08:30:00.000001Z",
            actor="mia",
            role="manager",
            event="approve_claim",
            from_state="manager_review",
            to_state="paid",
            outcome="accepted",
            definition_hash="d" * 64,
            prev_hash="p" * 64,
            on_behalf_of="max",
            payload={"note": "好的 ok"},
            data_change={"note": [None, "好的 ok"]},
            comment="批准",
            detail={"routes": [{"choice": "route", "values": {"amount": 12.5}}]},
        )
    )
    # Computed by the implementation before this work; a stored chain is only verifiable if it stays so.
    assert record.hash == "0d030a6163ddf9f4498f6ad1114a84d6d8b4f1bb77edc4b444627fb12e22559d"
    assert (record.actor, record.payload, record.comment) == ("mia", {"note": "好的 ok"}, "批准")
    value = {"b": [1, 2.5, None, True], "a": {"z": "é", "y": {}}}
    assert canonical_json(value) == '{"a":{"y":{},"z":"é"},"b":[1,2.5,null,true]}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_audit_times_are_utc_with_microseconds_and_a_z() -> None:
    beijing = timezone(timedelta(hours=8))
    assert iso(datetime(2026, 3, 1, 16, 30, 0, 1, tzinfo=beijing)) == "2026-03-01T08:30:00.000001Z"
    assert iso(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)) == "2026-12-31T23:59:59.000000Z"
    early = datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert iso(early) == early.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_the_loader_refuses_exactly_what_yaml_refuses() -> None:
    # YAML 1.2's printable set, as the loader used to write it; the loader now lists its complement.
    allowed = re.compile("[\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
    everything = "".join(map(chr, range(0x110000)))
    refused = {m.start() for m in _NOT_PRINTABLE.finditer(everything)}
    assert refused == {c for c in range(0x110000) if not allowed.match(everything[c])}
    assert len(refused) == 2048 + 63  # surrogates; C0 and C1 controls but tab, LF, CR, NEL; DEL; FFFE, FFFF


def test_the_schema_revision_of_an_empty_and_a_set_up_database(tmp_path: Path) -> None:
    empty = database.create(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        assert database.current_revision(empty) is None
        database.ensure_schema(empty)
        assert database.current_revision(empty) == database.SCHEMA_REVISION
    finally:
        empty.dispose()
    (tmp_path / "junk.db").write_bytes(b"this is not a database file, whatever its name says" * 100)
    junk = database.create(f"sqlite:///{tmp_path / 'junk.db'}")
    try:
        with pytest.raises(DatabaseError, match="not a database"):
            database.current_revision(junk)
    finally:
        junk.dispose()
