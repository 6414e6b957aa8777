"""`audit verify` of a `migrate_case` record: the migration is decided again, from the case as its records
replayed so far give it, with the same rules the migration used (`engine.lifecycle.plan`).

The record must name the version the case ran on and a deployed version of the same definition; it is
sealed under the version it moves to (every record after it too); its actor must have been an
administrator or the process owner under the org in force then, in the role the record names; and its
state, data change and timers must be the ones the rules give. The replay then goes on under the new
version, so a migrated case's hash chain and replay stay whole across the move.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sopflow.engine.audit import AuditRecord, canonical_json
from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.model import MIGRATE_CASE, Org
from sopflow.engine.errors import NotPermitted
from sopflow.engine.lifecycle.owner import decide_owner
from sopflow.engine.lifecycle.plan import CaseView, Timer, plan_case
from sopflow.engine.step import Actor
from sopflow.engine.timers import TIMEOUT_PREFIX


def first_version(current: int, history: Sequence[AuditRecord]) -> int:
    """The version a case started on: the one its first migration left, else the one it runs on."""
    for rec in history:
        if rec.event == MIGRATE_CASE and rec.outcome == "accepted":
            found = rec.detail.get("from_version")
            return found if isinstance(found, int) else current
    return current


def version_at(current: int, history: Sequence[AuditRecord], seq: int) -> int:
    """The version a case ran on when its record `seq` was written (a migration record: the one it moved
    the case to)."""
    version = first_version(current, history)
    for rec in history:
        if rec.seq > seq:
            break
        if rec.event == MIGRATE_CASE and rec.outcome == "accepted":
            moved = rec.detail.get("to_version")
            version = moved if isinstance(moved, int) else version
    return version


def check_migration(
    compiled: CompiledDefinition,
    replay: Any,
    rec: AuditRecord,
    *,
    definition_of: Callable[[int], CompiledDefinition | str | None],
    orgs: Sequence[Org | None],
    actor_of: Callable[[Org, str], Actor],
) -> CompiledDefinition | str:
    """The definition the case runs on after `rec`, with `replay` (verify's `_Replay`) moved by it; or
    what is wrong with it."""
    old = compiled.definition
    detail = rec.detail
    if detail.get("from_version") != old.version:
        return f"it migrates from version {detail.get('from_version')}, the case ran on {old.key}"
    to_version = detail.get("to_version")
    new = definition_of(to_version) if isinstance(to_version, int) else None
    if not isinstance(new, CompiledDefinition):
        return f"it migrates to {old.id}@{to_version}, which is {new or 'not deployed'}"
    if rec.definition_hash != new.definition.content_hash:
        return f"it is not sealed under {new.definition.key}, the version it moves the case to"
    if rec.from_state != replay.state:
        return f"it starts from `{rec.from_state}`, the case was in `{replay.state}`"
    why = "no org was deployed when it was taken"
    for org in orgs:
        if org is None or rec.actor not in org.users:
            why = f"{rec.actor} was not in the org in force then"
            continue
        try:
            role, behalf = decide_owner(new.definition, org, actor_of(org, rec.actor), "migrate cases of")
        except NotPermitted as refused:
            why = f"it was not allowed: {refused.message}"
            continue
        if (role, behalf) != (rec.role, rec.on_behalf_of):
            why = f"it names the role `{rec.role}`, the migration was {rec.actor}'s as `{role}`"
            continue
        problem = _decided(compiled, new, replay, rec, org)
        if problem is None:
            return new
        why = problem
    return why


def _decided(
    old: CompiledDefinition, new: CompiledDefinition, replay: Any, rec: AuditRecord, org: Org
) -> str | None:
    """Decide the migration again and fold it into `replay`; what differs from the record, or None."""
    entered_at = _moment(replay.entered_at)
    if entered_at is None:
        return "the case's visit has no start to count its timers from"
    timers = []
    for (kind, name, rung), due in sorted(replay.timers.pending.items()):
        started = replay.timers.started.get(name) if kind == "deadline" else None
        if kind == "timeout" and name == TIMEOUT_PREFIX + str(replay.state):
            started = entered_at
        timers.append(Timer(kind, name, rung, due, 0, started))
    view = CaseView(
        0,
        replay.state or "",
        not replay.closed and replay.suspended is None,
        replay.suspended is not None,
        replay.data,
        replay.assignee,
        replay.entered_seq,
        entered_at,
        tuple(timers),
    )
    plan = plan_case(
        view,
        old.definition,
        new,
        org,
        state_map=rec.detail.get("state_map") or {},
        defaults=rec.detail.get("defaults") or {},
    )
    if not plan.moves:
        return f"the rules do not move the case: {plan.reason}"
    if plan.to_state != rec.to_state:
        return f"it moves to `{rec.to_state}`, the rules give `{plan.to_state}`"
    if canonical_json(dict(plan.data_change)) != canonical_json(dict(rec.data_change)):
        return "its data change is not the one the rules give"
    given = plan.detail(old.definition.version, new.definition.version)
    if canonical_json(given) != canonical_json(dict(rec.detail)):
        return "its timers or its map are not the ones the rules give"
    replay.state = plan.to_state
    replay.data = dict(plan.data)
    replay.version += 1
    replay.updated_at = rec.at
    for key in plan.cancel:
        replay.timers.pending.pop(key, None)
    for spec in plan.start:
        replay.timers.pending[(spec.kind, spec.name, spec.rung)] = spec.due_at
    return None


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None

