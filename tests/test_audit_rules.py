"""The audit chain's rules (engine/audit.py), each tested so that weakening it fails a test, in memory:

- a record edited and re-hashed still breaks the chain, at the next record whose `prev_hash` no longer
  matches, and a first record must link to the genesis hash;
- a record edited without re-hashing, a missing or repeated record, and a removed tail are each named,
  with the case and the sequence number of the first record at fault;
- sealing fills in the hash over every field and keeps every field as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from sopflow.engine.audit import (
    GENESIS,
    AuditRecord,
    ChainBreak,
    canonical_json,
    iso,
    seal,
    sealed,
    utc_now,
    verify_chain,
)

CASE = 42


def record(seq: int, prev_hash: str, **fields: Any) -> AuditRecord:
    base: dict[str, Any] = {
        "case_id": CASE,
        "seq": seq,
        "at": f"2026-03-02T09:00:{seq:02d}.000000Z",
        "actor": "alice",
        "role": "employee",
        "event": "submit" if seq > 1 else "start",
        "from_state": "draft" if seq > 1 else None,
        "to_state": "check",
        "outcome": "accepted",
        "definition_hash": "d" * 64,
        "prev_hash": prev_hash,
    }
    return seal(AuditRecord(**{**base, **fields}))


def chain(length: int = 4) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    for seq in range(1, length + 1):
        records.append(record(seq, records[-1].hash if records else GENESIS, comment=f"step {seq}"))
    return records


def resealed(rec: AuditRecord, **changes: Any) -> AuditRecord:
    """The record edited and given a correct hash for its new content: what a forger would write."""
    return seal(dataclasses.replace(rec, **changes))


def test_a_whole_chain_verifies() -> None:
    records = chain()
    assert verify_chain(CASE, records, records[-1].hash) is None
    assert verify_chain(CASE, records, None) is None  # no case row to compare the last hash with
    assert verify_chain(CASE, [], None) is None
    assert verify_chain(CASE, [], GENESIS) is None


def test_a_record_edited_and_re_hashed_breaks_the_link_to_the_next() -> None:
    records = chain()
    records[1] = resealed(records[1], actor="mallory")
    assert records[1].compute_hash() == records[1].hash  # its own hash is right
    assert verify_chain(CASE, records, records[-1].hash) == ChainBreak(
        CASE, 3, "its prev_hash does not match the record before it"
    )


def test_a_record_re_linked_to_another_predecessor_is_found() -> None:
    records = chain()
    records[2] = resealed(records[2], prev_hash=records[0].hash)
    assert verify_chain(CASE, records, None) == ChainBreak(
        CASE, 3, "its prev_hash does not match the record before it"
    )


def test_the_first_record_must_link_to_the_genesis_hash() -> None:
    records = chain(1)
    records[0] = resealed(records[0], prev_hash="f" * 64)
    assert verify_chain(CASE, records, records[0].hash) == ChainBreak(
        CASE, 1, "its prev_hash does not match the record before it"
    )


def test_a_forged_chain_is_whole_only_when_every_later_record_is_forged_too() -> None:
    # Re-hashing the edited record and every record after it gives a whole chain: only the case row's
    # last hash (or an anchor kept elsewhere) can tell, and it does.
    records = chain()
    original_last = records[-1].hash
    records[1] = resealed(records[1], actor="mallory")
    for i in range(2, len(records)):
        records[i] = resealed(records[i], prev_hash=records[i - 1].hash)
    assert verify_chain(CASE, records, records[-1].hash) is None
    assert verify_chain(CASE, records, original_last) == ChainBreak(
        CASE, 5, "the case's last recorded hash does not match (records were removed)"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"actor": "mallory"},
        {"outcome": "refused"},
        {"payload": {"amount": 1}},
        {"data_change": {"amount": [1, 2]}},
        {"detail": {"votes": []}},
        {"on_behalf_of": "fay"},
        {"comment": "edited"},
        {"reason": "edited"},
        {"at": "2026-03-02T09:59:59.000000Z"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_record_edited_without_re_hashing_is_named(change: dict[str, Any]) -> None:
    records = chain()
    records[2] = dataclasses.replace(records[2], **change)
    assert verify_chain(CASE, records, records[-1].hash) == ChainBreak(
        CASE, 3, "its content does not match its hash (it was edited)"
    )


def test_a_missing_record_is_named_by_its_number() -> None:
    records = chain()
    assert verify_chain(CASE, [records[0], *records[2:]], records[-1].hash) == ChainBreak(
        CASE, 2, "record 2 is missing (found 3 next)"
    )
    assert verify_chain(CASE, records[1:], records[-1].hash) == ChainBreak(
        CASE, 1, "record 1 is missing (found 2 next)"
    )


def test_a_repeated_record_is_found() -> None:
    records = chain()
    assert verify_chain(CASE, [*records[:2], records[1], *records[2:]], records[-1].hash) == ChainBreak(
        CASE, 3, "record 3 is missing (found 2 next)"
    )


def test_a_removed_tail_is_found_by_the_case_rows_last_hash() -> None:
    records = chain()
    assert verify_chain(CASE, records[:2], records[-1].hash) == ChainBreak(
        CASE, 3, "the case's last recorded hash does not match (records were removed)"
    )
    assert verify_chain(CASE, [], records[0].hash) == ChainBreak(
        CASE, 1, "the case's last recorded hash does not match (records were removed)"
    )


def test_sealing_hashes_the_canonical_json_of_every_field_but_the_hash() -> None:
    rec = AuditRecord(
        case_id=CASE,
        seq=2,
        at="2026-03-02T09:00:02.000000Z",
        actor="bob",
        role="finance",
        event="approve",
        from_state="joint",
        to_state="board",
        outcome="accepted",
        definition_hash="d" * 64,
        prev_hash="p" * 64,
        on_behalf_of="fay",
        payload={"note": "ok"},
        data_change={"level": [None, "urgent"]},
        comment="fine",
        reason="all_of met",
        detail={"outcome": "approved"},
    )
    body = rec.body()
    assert set(body) == {f.name for f in dataclasses.fields(AuditRecord)} - {"hash"}
    assert all(body[name] == getattr(rec, name) for name in body)
    done = seal(rec)
    assert done.hash == hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()
    assert done == dataclasses.replace(rec, hash=done.hash)
    assert sealed(body) == done
    assert done.compute_hash() == done.hash


def test_utc_now_is_aware_and_in_utc() -> None:
    now = utc_now()
    assert now.tzinfo is UTC
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


def test_an_empty_mapping_and_a_filled_one_encode_canonically() -> None:
    assert canonical_json({}) == "{}"
    assert canonical_json([]) == "[]"
    assert canonical_json({"b": {}, "a": "中"}) == '{"a":"中","b":{}}'


def test_audit_times_are_utc_whatever_the_machines_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    beijing = timezone(timedelta(hours=8))
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        assert iso(datetime(2026, 3, 2, 9, 0, 0, 5, tzinfo=beijing)) == "2026-03-02T01:00:00.000005Z"
        assert iso(datetime(2026, 3, 2, 1, 0, tzinfo=UTC)) == "2026-03-02T01:00:00.000000Z"
    finally:
        monkeypatch.undo()
        time.tzset()
