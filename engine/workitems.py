"""Work items: the work of a case's current state as one person's task, and where it is in its life.

A state with `assign` has a work item. It is *offered* while a `claim` state waits for a member of its
role to claim it, *allocated* once someone holds it (claimed, picked on entry, or reassigned), and
*started* once its assignee fired the built-in `start_work` (who is working on it, and since when; the
step that leaves the state then says how long it took once started). Everything here is read from the
case row and the audit trail of its current visit: nothing is stored apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from sopflow.engine.step import CLAIM, START_WORK

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine

Status = Literal["offered", "allocated", "started", "suspended", "closed", "unassigned"]


@dataclass(frozen=True, slots=True)
class WorkItem:
    """The work item of a case's current state."""

    case_id: int
    state: str
    status: Status
    """`unassigned`: the state has no `assign` (its work is its role's); `suspended`, `closed`: the case."""
    assignee: str | None
    offered_to: str | None
    """The role a `claim` state offers its work to."""
    allocated_at: datetime | None
    started_by: str | None
    started_at: datetime | None


def work_item(engine: Engine, case_id: int) -> WorkItem:
    """The work item of the case's current state, as its row and the records of its visit say."""
    from sopflow.engine.control import suspension

    row = engine.store.case(case_id)
    state = engine.definition(row.definition_id, row.definition_version).states[row.state]
    history = engine.store.history(case_id)
    offered_to = state.assign.value if state.assign is not None and state.assign.kind == "claim" else None
    allocated_at = row.entered_at if row.assignee is not None else None
    started: tuple[str, datetime] | None = None
    for rec in history[row.entered_seq - 1 :]:
        if rec.outcome != "accepted":
            continue
        at = datetime.fromisoformat(rec.at.replace("Z", "+00:00"))
        if rec.event in (CLAIM, "reassign"):
            allocated_at, started = at, None
        elif rec.event == START_WORK:
            started = (str(rec.detail.get("started_by", rec.actor)), at)
    status: Status
    if not row.open:
        status = "suspended" if suspension(history) is not None else "closed"
    elif state.assign is None:
        status = "unassigned"
    elif row.assignee is None:
        status = "offered"
    else:
        status = "started" if started is not None else "allocated"
    return WorkItem(
        case_id=row.id,
        state=row.state,
        status=status,
        assignee=row.assignee,
        offered_to=offered_to,
        allocated_at=allocated_at,
        started_by=started[0] if started else None,
        started_at=started[1] if started else None,
    )
