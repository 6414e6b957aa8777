"""Plain values that cross the store's boundary: rows read, changes to write, queries to run.

The runtime speaks these; only `engine.store` turns them into SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sopflow.engine.audit import AuditRecord
from sopflow.engine.store.keys import KeyClaim

if TYPE_CHECKING:
    from sopflow.engine.store.store import Reads


@dataclass(frozen=True, slots=True)
class DefinitionRow:
    definition_id: str
    version: int
    content_hash: str
    source_text: str
    file: str
    deployed_at: datetime
    deployed_by: str | None


@dataclass(frozen=True, slots=True)
class OrgRow:
    org_id: str
    content_hash: str
    source_text: str
    file: str
    deployed_at: datetime


@dataclass(frozen=True, slots=True)
class CaseRow:
    """A case as stored: where it is, its data, and what its next audit record chains onto."""

    id: int
    definition_id: str
    definition_version: int
    state: str
    open: bool
    data: dict[str, Any]
    version: int
    starter: str
    assignee: str | None
    submitter: str | None
    entered_seq: int
    entered_at: datetime
    created_at: datetime
    updated_at: datetime
    audit_seq: int
    last_hash: str
    start_key: str | None = None


@dataclass(frozen=True, slots=True)
class CaseChange:
    """What an accepted step does to the case row. `entered` starts a new visit of a state."""

    state: str
    open: bool
    data: dict[str, Any]
    assignee: str | None
    submitter: str | None
    entered: bool


@dataclass(frozen=True, slots=True)
class TimerSpec:
    kind: Literal["deadline", "timeout", "escalation"]
    name: str
    rung: int
    due_at: datetime
    entered_seq: int | None = None
    """The record the timer belongs to; None: the step's own. A timer resumed after a suspension keeps the
    visit or span it was started for."""


@dataclass(frozen=True, slots=True)
class TimerRow:
    id: int
    case_id: int
    kind: str
    name: str
    rung: int
    due_at: datetime
    entered_seq: int
    attempts: int = 0
    """The failed tries of an automatic state's work so far (kept across workers)."""
    last_error: str | None = None
    """The error of the last of them."""


@dataclass(frozen=True, slots=True)
class NotificationSpec:
    """A message for the outbox: written with the step, delivered later by a channel."""

    channel: str
    recipient: str
    subject: str
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class NotificationRow:
    id: int
    case_id: int
    channel: str
    recipient: str
    subject: str
    body: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class OverdueRow:
    """A breached deadline whose span has not ended yet."""

    case_id: int
    name: str
    due_at: datetime
    definition_id: str
    state: str
    assignee: str | None


@dataclass(frozen=True, slots=True)
class Write:
    """One transaction's worth: the audit record (sealed onto the case's chain) and, for an accepted
    step, the case change and the timers it starts and cancels. A refusal has `change=None`."""

    record: AuditRecord
    change: CaseChange | None = None
    start_timers: tuple[TimerSpec, ...] = ()
    cancel_timers: tuple[str, ...] = ()
    """Names of pending timers of this case to cancel (a deadline's span ended, a state was left)."""
    cancel_state_timers: bool = False
    """Cancel every pending `timeout` timer of the case (its state was left)."""
    notify: tuple[NotificationSpec, ...] = ()
    key: KeyClaim | None = None
    """The idempotency key an accepted start or fire stores with its record (the store sets it)."""
    cascade: Cascade | None = None
    """Steps on other cases that this one takes in its own transaction (sub-processes)."""
    pause_timers: bool = False
    """Pause every pending timer of the case (a suspension): each stops pending, with outcome `paused`."""
    turn: tuple[str, str, str] | None = None
    """(definition, state, member): the member a round-robin state gave this case, whose turn it was."""
    branch_items: BranchItems | None = None
    """Who holds the branches the step changed (`branch_items`); None: the step changes none."""


@dataclass(frozen=True, slots=True)
class BranchItems:
    """Who holds branches of a case's parallel state after a step, for a person's load."""

    holders: Mapping[str, str | None]
    """Branch → its holder; None: nobody holds it now (done, or not yet claimed)."""
    every: bool
    """The holders of every open branch: the case's other rows go."""
    after_join: bool = False
    """Branches a join left running (`remaining: finish`): they count while the case is open, wherever
    it stands (kept with `entered_seq` 0), not only during the visit of their state."""


@dataclass(frozen=True, slots=True)
class NewCase:
    """A case started inside another step's transaction (a sub-process's child): as `Store.start` takes it."""

    definition_id: str
    definition_version: int
    starter: str
    change: CaseChange
    make_write: Callable[[int], Write]


@dataclass(frozen=True, slots=True)
class Cascade:
    """What a step does to linked cases in its own transaction, so that nothing is half-written: close the
    case's open children (it left the state waiting on them), start a child (it entered a sub-process
    state), resume its parent (it closed). Each callback decides in the transaction, reading with `Reads`;
    a callback that returns None writes nothing (the linked case has nothing to do)."""

    close_children: Callable[[CaseRow, Reads], Write | None] | None = None
    start_child: Callable[[Reads], NewCase] | None = None
    resume_parent: Callable[[CaseRow, Reads], Write | None] | None = None


@dataclass(frozen=True, slots=True)
class CaseLink:
    """A child case as its parent sees it: started by the parent's record `parent_seq`."""

    case_id: int
    parent_case_id: int
    parent_seq: int
    definition_id: str
    state: str
    open: bool


@dataclass(frozen=True, slots=True)
class Fired:
    """What `Store.fire` did: the case after it, the record written (or found, for a repeated key)."""

    case: CaseRow
    record: AuditRecord
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class ScopePart:
    """Some of the cases one person may reach (a row of the permission matrix, resolved for them)."""

    definitions: tuple[str, ...] | None = None
    """Only cases of these definitions (None: of every definition)."""
    people: tuple[str, ...] | None = None
    """Only cases started, held or submitted by one of these people (None: everyone's cases)."""
    steps: tuple[tuple[str, str], ...] = ()
    """With `people`: also the cases waiting at one of these steps, (definition id, state)."""
    desensitised: bool = False
    """The person sees these cases with their personal data desensitised."""


@dataclass(frozen=True, slots=True)
class Scope:
    """The cases one person may reach: those any part admits (no part: none)."""

    parts: tuple[ScopePart, ...] = ()


@dataclass(frozen=True, slots=True)
class CaseQuery:
    """Which cases to list, oldest first, at most `limit`, after case `after_id` for paging."""

    definition_id: str | None = None
    state: str | None = None
    assignee: str | None = None
    open: bool | None = None
    or_suspended: bool = False
    """With `open=True`: the suspended cases too (still open work, though they take no step)."""
    suspended: bool | None = None
    """True: only suspended cases; False: none."""
    data_equals: Mapping[str, Any] = field(default_factory=dict)
    created_before: datetime | None = None
    after_id: int | None = None
    limit: int = 50
    newest_first: bool = False
    scope: Scope | None = None
    """Only the cases this scope admits (None: every case, as the operator sees them)."""


@dataclass(frozen=True, slots=True)
class StoredVote:
    voter: str
    role: str | None
    event: str
    on_behalf_of: str | None = None


@dataclass(frozen=True, slots=True)
class DelegationRow:
    """A grant of roles from one user to another for a period, or the revocation of one (`revokes`)."""

    id: int
    kind: str
    delegator: str
    delegate: str
    roles: tuple[str, ...]
    starts_at: datetime
    ends_at: datetime
    revokes: int | None
    created_by: str
    created_at: datetime
    reason: str | None
