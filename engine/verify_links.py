"""`audit verify` for sub-processes: a parent and its children must name each other, both ways.

The replay (`engine.verify`) decides every step of a case on its own; what it cannot see is the other
case. Here, for one case:

- as a child: its start names its parent's record, which must be the parent's accepted entry into a state
  that runs this child's definition, and the case row's link columns must say the same; a
  `closed_by_parent` record must name a record of that parent that left the waiting state;
- as a parent: every entry into a sub-process state started exactly one child, every child names such an
  entry, and every resumption (`subprocess_closed`) names one of its children that closed in the outcome
  the resumption took, at the record it names, with the values it carried back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sopflow.engine.audit import AuditRecord, canonical_json
from sopflow.engine.definition.model import CLOSED_BY_PARENT, MIGRATE_CASE, RESUME, Definition
from sopflow.engine.errors import NotFound
from sopflow.engine.lifecycle.verify import first_version, version_at
from sopflow.engine.store import CaseLink, CaseRow, Store

DefinitionOf = Callable[[str, int], Definition | None]


def check_links(
    store: Store, row: CaseRow, history: Sequence[AuditRecord], definition_of: DefinitionOf
) -> tuple[int, str] | None:
    """The first link of the case that does not hold, as (record seq, problem); None when all hold."""
    parent, children = store.links(row.id)
    return _as_child(store, row, history, parent, definition_of) or _as_parent(
        store, row, history, children, definition_of
    )


def _record(store: Store, case_id: int, seq: int) -> AuditRecord | None:
    try:
        records = store.history(case_id)
    except NotFound:
        return None
    return records[seq - 1] if 0 < seq <= len(records) else None


def _as_child(
    store: Store,
    row: CaseRow,
    history: Sequence[AuditRecord],
    parent: CaseLink | None,
    definition_of: DefinitionOf,
) -> tuple[int, str] | None:
    named = history[0].detail.get("parent") if history else None
    if parent is None:
        if named is not None:
            return 1, f"its start names parent case {_said(named)}, but the case row has no parent"
        return None
    said = {"case": parent.parent_case_id, "seq": parent.parent_seq}
    if canonical_json(named) != canonical_json(said):
        return 1, (
            f"the case row names parent case {parent.parent_case_id} record {parent.parent_seq}, "
            f"its start names {_said(named)}"
        )
    entry = _record(store, parent.parent_case_id, parent.parent_seq)
    where = f"parent case {parent.parent_case_id} record {parent.parent_seq}"
    if entry is None or entry.outcome != "accepted":
        return 1, f"{where}, which started it, does not exist or was refused"
    try:
        parent_row = store.case(parent.parent_case_id)
    except NotFound:
        return 1, f"parent case {parent.parent_case_id}, which started it, is gone (its row was deleted)"
    # The version the parent ran on then: it may have been migrated since (`engine.lifecycle.verify`).
    version = version_at(parent_row.definition_version, store.history(parent_row.id), parent.parent_seq)
    definition = definition_of(parent_row.definition_id, version)
    state = definition.states.get(entry.to_state or "") if definition is not None else None
    if state is None or state.subprocess is None or state.subprocess.definition != row.definition_id:
        return 1, f"{where} entered `{entry.to_state}`, which does not run a `{row.definition_id}` case"
    for rec in history:
        if rec.event != CLOSED_BY_PARENT or rec.outcome != "accepted":
            continue
        closing = rec.detail.get("parent")
        if not isinstance(closing, Mapping) or closing.get("case") != parent.parent_case_id:
            return rec.seq, f"it says its parent closed it, but names {_said(closing)}"
        left = _record(store, parent.parent_case_id, int(closing.get("seq") or 0))
        if (
            left is None
            or left.outcome != "accepted"
            or left.seq <= parent.parent_seq
            or left.from_state != entry.to_state
            or left.event == RESUME
        ):
            return rec.seq, (
                f"it says parent case {parent.parent_case_id} record {closing.get('seq')} closed it, "
                "but that record did not leave the state waiting on it"
            )
    return None


def _as_parent(
    store: Store,
    row: CaseRow,
    history: Sequence[AuditRecord],
    children: Sequence[CaseLink],
    definition_of: DefinitionOf,
) -> tuple[int, str] | None:
    definition = definition_of(row.definition_id, first_version(row.definition_version, history))
    if definition is None:
        return None
    by_seq: dict[int, list[CaseLink]] = {}
    for child in children:
        by_seq.setdefault(child.parent_seq, []).append(child)
    entries: set[int] = set()
    for rec in history:
        if rec.outcome != "accepted":
            continue
        if rec.event == MIGRATE_CASE:  # the records after it were written under the version it moved to
            definition = definition_of(row.definition_id, rec.detail.get("to_version", 0)) or definition
            continue
        state = definition.states.get(rec.to_state or "")
        if state is not None and state.subprocess is not None and _entered(rec):
            entries.add(rec.seq)
            found = by_seq.get(rec.seq, [])
            if len(found) != 1:
                return rec.seq, (
                    f"it entered `{rec.to_state}`, which starts one `{state.subprocess.definition}` case; "
                    f"{len(found)} case(s) name it as their start"
                )
        if rec.event == RESUME:
            problem = _resumption(store, rec, children)
            if problem is not None:
                return rec.seq, problem
    for seq, linked in sorted(by_seq.items()):
        if seq not in entries:
            return seq, f"case {linked[0].case_id} names it as its start, but it entered no sub-process state"
    return None


def _entered(rec: AuditRecord) -> bool:
    """Whether an accepted record entered its `to_state` (a start, a move, the engine's resumption, a
    route through a choice), rather than acting within it: an event leading back to the state it leaves
    stays in it, as the runtime takes it, and the child keeps running."""
    return (
        rec.seq == 1
        or rec.from_state != rec.to_state
        or rec.event == RESUME
        or bool(rec.detail.get("routes"))
    )


def _resumption(store: Store, rec: AuditRecord, children: Sequence[CaseLink]) -> str | None:
    payload = rec.payload
    child_id = payload.get("case")
    child = next((c for c in children if c.case_id == child_id), None)
    if child is None:
        return f"it resumes the case for case {child_id}, which is not one of its children"
    closing = _record(store, child.case_id, int(payload.get("seq") or 0))
    outcome = payload.get("outcome")
    if closing is None or closing.outcome != "accepted" or closing.to_state != outcome or child.open:
        return f"child case {child_id} did not close in `{outcome}` at record {payload.get('seq')}"
    try:
        data: Mapping[str, Any] = store.case(child.case_id).data
    except NotFound:
        return f"child case {child_id} is gone (its row was deleted)"
    values = payload.get("values")
    if not isinstance(values, Mapping) or any(
        canonical_json(data.get(k)) != canonical_json(v) for k, v in values.items()
    ):
        return f"the values it took back are not child case {child_id}'s"
    return None


def _said(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"{value.get('case')} record {value.get('seq')}"
    return "none"
