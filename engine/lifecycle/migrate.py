"""Migrating running cases from one version of their definition to another.

Each case is decided by `engine.lifecycle.plan` (the rules are stated there) and, in a real run, moved in
its own transaction with its `migrate_case` audit record ("migrated from version 1 to 2 by …"), read and
decided again inside that transaction under the case's optimistic version: a worker's step committed in
between is never lost, the case is just decided again on top of it. A crash leaves every case either
moved (row, record and timers) or untouched; running the migration again moves the rest. A dry run
decides every case the same way and writes nothing. Migrating back (`--from 2 --to 1`, with the reverse
map) undoes a migration: it is one more record on each case's trail, never an erasure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sopflow.engine import branches
from sopflow.engine.definition.model import MIGRATE_CASE, Definition
from sopflow.engine.errors import InvalidData, NotPermitted, SopflowError, UsageError
from sopflow.engine.lifecycle.owner import decide_owner
from sopflow.engine.lifecycle.plan import CaseView, Plan, Timer, plan_case
from sopflow.engine.lifecycle.trials import MIGRATE
from sopflow.engine.step import Actor
from sopflow.engine.store import CaseRow
from sopflow.engine.store import lifecycle as store_lifecycle
from sopflow.engine.store.lifecycle import CaseMove, PendingTimer

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine

Outcome = Literal["moved", "would move", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class CaseOutcome:
    """What the migration did (or, in a dry run, would do) with one case, and why."""

    case_id: int
    from_state: str
    to_state: str | None
    outcome: Outcome
    reason: str
    plan: Plan | None = None

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "case": self.case_id,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "outcome": self.outcome,
            "reason": self.reason,
        }
        if self.plan is not None and self.plan.moves:
            found["data_change"] = dict(self.plan.data_change)
            found["timers"] = self.plan.detail(0, 0)["timers"]
        return found


@dataclass(frozen=True, slots=True)
class MigrationReport:
    definition_id: str
    from_version: int
    to_version: int
    dry_run: bool
    cases: tuple[CaseOutcome, ...] = field(default_factory=tuple)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for c in self.cases if c.outcome == outcome)

    @property
    def moved(self) -> int:
        return self.count("would move" if self.dry_run else "moved")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def failed(self) -> int:
        return self.count("failed")

    def as_dict(self) -> dict[str, Any]:
        return {
            "definition": self.definition_id,
            "from": self.from_version,
            "to": self.to_version,
            "dry_run": self.dry_run,
            "moved": self.moved,
            "skipped": self.skipped,
            "failed": self.failed,
            "cases": [c.as_dict() for c in self.cases],
        }


def migrate(
    engine: Engine,
    definition_id: str,
    from_version: int,
    to_version: int,
    *,
    actor: str,
    state_map: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    where: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    comment: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> MigrationReport:
    """Move the cases of `definition_id@from_version` (those `where` matches) to `to_version` (see the
    module). NotPermitted (logged) unless `actor` is an administrator or the process owner."""
    state_map = dict(state_map or {})
    defaults = dict(defaults or {})
    where = dict(where or {})
    if from_version == to_version:
        raise UsageError(f"--from and --to are both {from_version}", hint="name two different versions")
    old = engine.definition(definition_id, from_version)
    new = engine.compiled(definition_id, to_version)
    _check_map(old, new.definition, state_map)
    _check_where(old, where)
    org = engine.org()
    person = engine.actor(actor)
    now = engine.clock()
    versions = {"from": from_version, "to": to_version}
    role, behalf = _authority(engine, new.definition, person, versions, dry_run, now)
    reason = f"migrated from version {from_version} to {to_version} by {person.id}"
    outcomes: list[CaseOutcome] = []

    lingers = engine.compiled(definition_id, from_version).reads_lingering

    def decide(row: CaseRow, timers: Sequence[PendingTimer]) -> Plan | None:
        if not _matches(row, where):
            return None
        if row.definition_version != from_version:  # another migration moved it since the list was read
            return Plan(row.id, row.state, None, False, f"it is already on version {row.definition_version}")
        suspended = not row.open and row.id in engine.store.suspended_among([row.id])
        running_on: tuple[str, ...] = ()
        if lingers and row.open:
            found = branches.lingering_status(old, engine.store.lingering(row.id))
            running_on = tuple(b.name for b in found)
        view = _view(row, timers, suspended, running_on)
        return plan_case(view, old, new, org, state_map=state_map, defaults=defaults)

    def write(row: CaseRow, plan: Plan) -> CaseMove:
        record = engine.audit_record(
            row, new, now, actor=person.id, role=role, on_behalf_of=behalf, event=MIGRATE_CASE,
            to_state=plan.to_state, accepted=True, data_change=plan.data_change, comment=comment,
            reason=reason, detail=plan.detail(from_version, to_version),
        )  # fmt: skip
        assert plan.to_state is not None
        return CaseMove(
            record, to_version, plan.to_state, True, dict(plan.data), plan.assignee, plan.cancel, plan.start
        )

    for done, case_id in enumerate(store_lifecycle.case_ids(engine.store, definition_id, from_version), 1):
        found = _one(engine, case_id, decide, write, dry_run, now)
        if found is not None:
            outcomes.append(found)
        if progress is not None:
            progress(done)
    report = MigrationReport(definition_id, from_version, to_version, dry_run, tuple(outcomes))
    if not dry_run:
        detail: dict[str, Any] = {"moved": report.moved, "skipped": report.skipped, "failed": report.failed}
        if state_map:
            detail["state_map"] = state_map
        if defaults:
            detail["defaults"] = defaults
        if where:
            detail["where"] = where
        store_lifecycle.log_action(
            engine.store, definition_id, MIGRATE, versions, actor=person.id, role=role, accepted=True,
            reason=comment, detail=detail, at=now,
        )  # fmt: skip
    return report


def _authority(
    engine: Engine,
    definition: Definition,
    person: Actor,
    versions: dict[str, Any],
    dry_run: bool,
    now: datetime,
) -> tuple[str, str | None]:
    """The role in which `person` migrates cases of `definition`; a refusal is logged (a dry run's too,
    marked so)."""
    try:
        return decide_owner(definition, engine.org(), person, "migrate cases of")
    except NotPermitted as refused:
        store_lifecycle.log_action(
            engine.store, definition.id, MIGRATE, versions, actor=person.id, role=None, accepted=False,
            reason=f"{refused.kind}: {refused.message}", detail={"dry_run": True} if dry_run else {}, at=now,
        )  # fmt: skip
        raise


def _one(
    engine: Engine,
    case_id: int,
    decide: Callable[[CaseRow, Sequence[PendingTimer]], Plan | None],
    write: Callable[[CaseRow, Plan], CaseMove],
    dry_run: bool,
    now: datetime,
) -> CaseOutcome | None:
    """One case's outcome (None: `where` leaves it out)."""
    if dry_run:
        row = engine.store.case(case_id)
        plan = decide(row, store_lifecycle.pending_timers(engine.store, case_id))
        if plan is None:
            return None
        return CaseOutcome(
            case_id,
            plan.from_state,
            plan.to_state,
            "would move" if plan.moves else "skipped",
            plan.reason,
            plan,
        )
    chosen: list[Plan] = []

    def decide_and_write(row: CaseRow, timers: Sequence[PendingTimer]) -> CaseMove | None:
        chosen.clear()
        plan = decide(row, timers)
        if plan is None:
            return None
        chosen.append(plan)
        return write(row, plan) if plan.moves else None

    try:
        row, move = store_lifecycle.move_case(engine.store, case_id, decide_and_write, now=now)
    except SopflowError as exc:
        return CaseOutcome(case_id, "?", None, "failed", f"{exc.kind}: {exc.message}")
    if not chosen:
        return None
    plan = chosen[0]
    outcome: Outcome = "moved" if move is not None else "skipped"
    return CaseOutcome(case_id, row.state, plan.to_state, outcome, plan.reason, plan)


def _view(
    row: CaseRow, timers: Sequence[PendingTimer], suspended: bool, running_on: tuple[str, ...] = ()
) -> CaseView:
    return CaseView(
        row.id,
        row.state,
        row.open,
        suspended,
        row.data,
        row.assignee,
        row.entered_seq,
        row.entered_at,
        tuple(Timer(t.kind, t.name, t.rung, t.due_at, t.entered_seq, t.started_at) for t in timers),
        running_on,
    )


def _check_map(old: Definition, new: Definition, state_map: Mapping[str, str]) -> None:
    for source, target in sorted(state_map.items()):
        if source not in old.states:
            raise InvalidData(
                f"--map {source}={target}: {old.key} has no state `{source}`",
                hint=f"its states: {', '.join(old.states)}",
            )
        if target not in new.states:
            raise InvalidData(
                f"--map {source}={target}: {new.key} has no state `{target}`",
                hint=f"its states: {', '.join(new.states)}",
            )


def _check_where(old: Definition, where: Mapping[str, Any]) -> None:
    state = where.get("state")
    if state is not None and state not in old.states:
        raise InvalidData(
            f"--state {state}: {old.key} has no state `{state}`", hint=f"its states: {', '.join(old.states)}"
        )
    for name in where:
        if name not in ("state", "assignee") and not name.startswith("data."):
            raise InvalidData(
                f"--where {name}=…: a migration selects cases by state, assignee or data.FIELD",
                hint="e.g. --where state=review or --where data.region=north",
            )


def _matches(row: CaseRow, where: Mapping[str, Any]) -> bool:
    for name, value in where.items():
        if name == "state" and row.state != value:
            return False
        if name == "assignee" and row.assignee != value:
            return False
        if name.startswith("data.") and row.data.get(name[5:]) != value:
            return False
    return True
