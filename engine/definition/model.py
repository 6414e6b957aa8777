"""The definition model: small, frozen, typed values that every later stage reads.

A `Definition` is what a process owner wrote, checked. It holds no compiled guards and no runtime state:
`engine.definition.expressions` compiles guards, `engine.compile` builds the state machine, and the
runtime keeps cases. Each element keeps `path`, its place in the YAML document, so a later stage can
point a finding back at a line and column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

Path = tuple[str | int, ...]
"""A place in a YAML document: keys and list indexes from the root, e.g. ("states", "draft", "on")."""

ASSIGNEE = "$assignee"
"""In a transition's `by`: the person the case is assigned to."""
STARTER = "$starter"
"""In a transition's `by`: the person who started the case."""
SYSTEM = "$system"
"""The actor of timers and automatic routing; never a user."""
SPECIAL_ACTORS = frozenset({ASSIGNEE, STARTER, SYSTEM})
"""`by` entries that are not roles. `$system` alone in a `by` makes an event only the clock fires."""

FIRED_PREFIX = "fired:"
"""In a `not_by`: `fired:EVENT` excludes everyone who fired EVENT earlier in the case."""
DATA_PREFIX = "data:"
"""In a `not_by`: `data:FIELD` excludes the person whose user id is in the data field."""
USER_FORMAT = "user"
"""`format: user` on a data or payload field: it holds a user id of the org (`role:` binds it to a role)."""

APPROVE = "approve"
"""The vote event of an approval state that says yes."""
REJECT = "reject"
"""The vote event of an approval state that says no."""


def frozen_json(value: Any) -> Any:
    """A read-only deep copy of plain JSON data (dicts become mapping proxies, lists tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): frozen_json(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(frozen_json(v) for v in value)
    return value


def thawed_json(value: Any) -> Any:
    """Plain mutable JSON data again (for jsonschema and for storing)."""
    if isinstance(value, Mapping):
        return {k: thawed_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thawed_json(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Text:
    """Words shown to people, in Chinese and English; either may be missing, not both."""

    zh: str | None = None
    en: str | None = None

    def __str__(self) -> str:
        if self.zh and self.en:
            return f"{self.en} ({self.zh})"
        return self.en or self.zh or ""


@dataclass(frozen=True, slots=True)
class Expression:
    """A guard in the expression language (CEL), as written; compiled by `expressions`."""

    text: str
    path: Path


@dataclass(frozen=True, slots=True)
class Transition:
    """An event that moves a case from one state to another when the actor and the guard allow it."""

    event: str
    source: str
    target: str
    by: tuple[str, ...]
    path: Path
    when: Expression | None = None
    explain: Text | None = None
    payload: Mapping[str, Any] | None = None
    set: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    copy: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    title: Text | None = None
    rulebook: str | None = None
    not_by: tuple[str, ...] = ()
    """Who may not fire it even when `by` allows them: $starter, $assignee, fired:EVENT, data:FIELD."""
    compute: Mapping[str, Expression] = field(default_factory=lambda: MappingProxyType({}))
    """Data fields set from CEL expressions, applied after `set` and `copy`."""
    reenter: bool = False
    """On a transition back to its own state: leave and enter the state again (assignment, claim, timeout
    and approval round start afresh). Without it such a transition records its step and stays."""

    @property
    def stays(self) -> bool:
        """Whether the step records and stays in its state, without leaving and entering it again."""
        return self.target == self.source and not self.reenter

    @property
    def clock_only(self) -> bool:
        """Whether only the clock (a timeout or an escalation) may fire it: `by: [$system]`."""
        return self.by == (SYSTEM,)


@dataclass(frozen=True, slots=True)
class Branch:
    """One way out of a choice state; `when` is None for the `else` branch."""

    target: str
    path: Path
    when: Expression | None = None


ApprovalRule = Literal["all_of", "any_of", "quorum"]


@dataclass(frozen=True, slots=True)
class Approval:
    """Who must agree before a case moves on, and where it goes when they do or do not.

    - all_of: one approver for each role (a joint approval); one person fills one slot only.
    - any_of: one approver holding any of the roles.
    - quorum: `at_least` distinct members of the single role in `roles`.
    """

    rule: ApprovalRule
    roles: tuple[str, ...]
    approved: str
    rejected: str
    path: Path
    at_least: int = 1
    veto: bool = True
    submitter_may_approve: bool = False
    not_by: tuple[str, ...] = ()
    """Who may not vote even when holding a role: $starter, $assignee, fired:EVENT, data:FIELD."""
    payload: Mapping[str, Any] | None = None
    """The fields an `approve` vote supplies (None: a vote takes no payload)."""
    set: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    copy: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    compute: Mapping[str, Expression] = field(default_factory=lambda: MappingProxyType({}))


AssignKind = Literal["from_data", "least_loaded", "claim", "fired_by", "round_robin"]


@dataclass(frozen=True, slots=True)
class Assignment:
    """How a state's work goes to one person: a user id in the data, the least loaded member of a
    role, claimed by a member of a role, or the person who last fired an event of the case (`fired_by`:
    the same specialist as an earlier step)."""

    kind: AssignKind
    value: str
    path: Path
    not_by: tuple[str, ...] = ()
    """For `least_loaded` and `claim`: who is passed by ($starter, fired:EVENT, data:FIELD), e.g. not the
    person who did it last time."""


@dataclass(frozen=True, slots=True)
class Timeout:
    """An event the system fires when a case has stayed in a state for `after_seconds`."""

    after_seconds: int
    fire: str
    path: Path
    notify: tuple[str, ...] = ()
    """Roles or users told when the timeout fires, besides the event it fires."""


RESUME = "subprocess_closed"
"""The event with which the engine resumes a case waiting in a sub-process state once its child closed."""
CLOSED_BY_PARENT = "closed_by_parent"
"""The record with which the engine closes an open child case, where it stands, when its parent leaves the
sub-process state (or closes) without waiting for it."""


@dataclass(frozen=True, slots=True)
class Subprocess:
    """A state that starts a case of another definition on entry, waits for it to close, and moves on by
    the child's final state (`on`: child final state → this definition's next state), copying data in
    (`inputs`: child field → this case's field) and back out (`outputs`: this case's field → child field)."""

    definition: str
    on: Mapping[str, str]
    path: Path
    inputs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    outputs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


AUTOMATIC_DONE = "automatic_done"
"""The event with which the worker moves a case on from an automatic state once its work succeeded."""
AUTOMATIC_FAILED = "automatic_failed"
"""The event with which the worker hands an automatic state's work to a person once every try failed."""


@dataclass(frozen=True, slots=True)
class Automatic:
    """A state whose work the system does: a Python `handler` an embedding application registers, or a
    `webhook` called with the case; the worker runs it once the case enters (with up to `retries` more
    tries), maps the answer into the data (`out`: data field → answer field) and moves the case to
    `then`; when every try failed it moves it to `on_error`, a person's state, with the error (in
    `error_field` when given, and always in the record)."""

    then: str
    on_error: str
    path: Path
    handler: str | None = None
    webhook: str | None = None
    retries: int = 2
    out: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    error_field: str | None = None


JoinRule = Literal["all", "first", "at_least", "share"]
Remaining = Literal["cancel", "finish"]
"""What the join does with the branches still open: cancel them, or let them run to their end."""
"""When a parallel state's branches are joined: all done, the first done (a discriminator), or `at_least`."""


@dataclass(frozen=True, slots=True)
class ParallelBranch:
    """One branch of a parallel state: its own small process (`states`, from `initial` to a final state),
    each of its states with its owner and assignment, its steps fired as `BRANCH.EVENT`."""

    name: str
    title: Text
    initial: str
    states: Mapping[str, State]
    path: Path

    @property
    def done_states(self) -> tuple[str, ...]:
        return tuple(name for name, s in self.states.items() if s.final)


@dataclass(frozen=True, slots=True)
class Parallel:
    """A state that splits into branches on entry and moves to `then` in the step that completes its
    join; branches still open then are cancelled by that step (the record lists them)."""

    branches: Mapping[str, ParallelBranch]
    then: str
    path: Path
    join: JoinRule = "all"
    at_least: int = 1
    share: float = 1.0
    """For `join: {share: S}`: the share of the branches that must be done (0 < S <= 1)."""
    for_each: str | None = None
    """One task per item: a data field holding a list; on entry one branch per element, each a copy of
    `template` named by its element (a person's id: the branch is theirs)."""
    template: ParallelBranch | None = None
    collect: str | None = None
    """For `for_each`: the data field (an object) that receives each branch's `set`/`copy`/`compute`
    under the branch's name, instead of the case's own fields."""
    remaining: Remaining = "cancel"
    """`finish`: the branches still open when the join moves the case on run to their end (the case's
    records carry them as `lingering`), instead of being cancelled."""

    def needed(self, count: int | None = None) -> int:
        """How many branches must be done for the join, of `count` (default: those written)."""
        total = len(self.branches) if count is None else count
        if self.join == "all":
            return total
        if self.join == "first":
            return min(1, total)
        if self.join == "share":
            return max(1, math.ceil(self.share * total - 1e-9))
        return self.at_least


@dataclass(frozen=True, slots=True)
class State:
    """A step of the process: who owns it, what it produces, and the ways out of it."""

    name: str
    title: Text
    path: Path
    owner: str | None = None
    output: Text | None = None
    instructions: Text | None = None
    final: bool = False
    transitions: tuple[Transition, ...] = ()
    choice: tuple[Branch, ...] = ()
    approval: Approval | None = None
    assign: Assignment | None = None
    timeout: Timeout | None = None
    rulebook: str | None = None
    subprocess: Subprocess | None = None
    parallel: Parallel | None = None
    automatic: Automatic | None = None

    @property
    def is_choice(self) -> bool:
        return bool(self.choice)

    @property
    def events(self) -> tuple[str, ...]:
        """Every event a person (or a timer) can fire here, in the order written, without repeats."""
        names = [t.event for t in self.transitions]
        if self.approval is not None:
            names += [APPROVE, REJECT]
        return tuple(dict.fromkeys(names))

    def targets(self) -> tuple[str, ...]:
        """Every state a case can move to from here, in the order written."""
        out = [t.target for t in self.transitions] + [b.target for b in self.choice]
        if self.approval is not None:
            out += [self.approval.approved, self.approval.rejected]
        if self.subprocess is not None:
            out += list(self.subprocess.on.values())
        if self.parallel is not None:
            out.append(self.parallel.then)
        return tuple(dict.fromkeys(out))


EscalationAction = Literal["notify", "reassign", "fire"]
CountedFrom = Literal["breach", "start"]
"""What an escalation rung's `after` counts from: the moment the deadline passed, or its span's start."""
Restart = Literal["never", "on_reentry"]
"""Whether a deadline's clock starts again when its span's first state is entered again while it runs."""


@dataclass(frozen=True, slots=True)
class Escalation:
    """One rung of an escalation ladder: `after_seconds` past the deadline, do `action` to `target`
    (notify a role or user, reassign the case to a role, or fire an event)."""

    after_seconds: int
    action: EscalationAction
    target: str
    path: Path
    counted_from: CountedFrom = "breach"


Calendar = Literal["wall", "working"]


@dataclass(frozen=True, slots=True)
class Deadline:
    """A promise on a span of the process: from entering `start` until entering one of `until`,
    within `within_seconds` (wall time, or working time of the org's calendar)."""

    name: str
    start: str
    until: tuple[str, ...]
    within_seconds: int
    path: Path
    title: Text | None = None
    calendar: Calendar = "wall"
    escalate: tuple[Escalation, ...] = ()
    rulebook: str | None = None
    restart: Restart = "never"
    branch: str | None = None
    """On a parallel `start` state: the branch whose work the deadline times; it ends when that branch is
    done (or the case enters one of `until`). `each` on a one-task-per-item state: every item's branch has
    a deadline of its own."""


EACH_ITEM = "each"
"""`branch: each` on a deadline of a one-task-per-item state: one deadline per item's branch."""


WorkingDayRule = Literal["any", "previous", "next"]
"""Where a schedule's occurrence on a day off goes: stays (any), or to the previous or next working day."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """Cases started on a calendar: one per occurrence of `cron` (in the org calendar's time zone),
    moved to a working day by `working_day`, with `data` and the occurrence in `period_field`."""

    name: str
    cron: str
    path: Path
    title: Text | None = None
    working_day: WorkingDayRule = "any"
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    period_field: str = "period"
    rulebook: str | None = None
    period_format: str | None = None
    """How the period is written in `period_field`: a strftime pattern (`%Q` is the quarter, 1-4); None
    for ISO 8601."""


CANCEL_CASE = "cancel_case"
"""The record with which an administrator or a role the definition's `control: cancel:` names cancels an
open case where it stands, with a reason: the case closes, its timers end and its open children close."""
SUSPEND_CASE = "suspend_case"
"""The record that suspends a case ("waiting for the customer"), with a reason: it takes no step until it
is resumed (or cancelled), and its timers pause with the time each had left."""
RESUME_CASE = "resume_case"
"""The record that resumes a suspended case: its timers run again with the time they had left."""
MIGRATE_CASE = "migrate_case"
"""The record that moves a running case to another version of its definition (`engine.lifecycle`)."""
CONTROL_RECORDS = frozenset({CANCEL_CASE, SUSPEND_CASE, RESUME_CASE, MIGRATE_CASE})
"""Records of acts on a whole case; no event of a definition may take one of these names."""


@dataclass(frozen=True, slots=True)
class Control:
    """Who may act on a whole case besides administrators: `cancel` names the roles that may cancel any
    open case of the definition, `suspend` those that may suspend and resume one."""

    path: Path
    cancel: tuple[str, ...] = ()
    suspend: tuple[str, ...] = ()


SatisfactionScale = Literal["csat", "nps"]
"""How a satisfaction score is read: CSAT (1 to 5, the share of 4s and 5s) or NPS (0 to 10, the share of
promoters, 9 and 10, less the share of detractors, 0 to 6)."""


@dataclass(frozen=True, slots=True)
class Measures:
    """What the reports count for the process beyond durations (`measures:`): the events that are
    errors (a correction after publication) and complaints, the data field holding a satisfaction score,
    and by how much a step's median may exceed its baseline before the report flags it."""

    path: Path
    errors: tuple[str, ...] = ()
    complaints: tuple[str, ...] = ()
    satisfaction_field: str | None = None
    satisfaction_scale: SatisfactionScale = "csat"
    threshold: float = 0.1
    """A fraction: 0.2 flags a step whose median is more than 20 % over its baseline."""


@dataclass(frozen=True, slots=True)
class StartRule:
    """Who may start a case (any of `by`; empty: anyone in the org) and on what condition."""

    path: Path
    by: tuple[str, ...] = ()
    when: Expression | None = None
    explain: Text | None = None


@dataclass(frozen=True, slots=True)
class Definition:
    """One version of one process, as checked. `content_hash` identifies the version's meaning:
    the SHA-256 of its data in canonical JSON, so comments and layout do not change it."""

    id: str
    version: int
    title: Text
    initial: str
    states: Mapping[str, State]
    content_hash: str
    file: str
    description: Text | None = None
    rulebook: str | None = None
    data_schema: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({"type": "object"}))
    deadlines: tuple[Deadline, ...] = ()
    assumptions: tuple[Text, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    start: StartRule | None = None
    control: Control | None = None
    measures: Measures | None = None

    @property
    def key(self) -> str:
        """`id@version`, how a definition version is named in messages and the CLI."""
        return f"{self.id}@{self.version}"

    @property
    def final_states(self) -> tuple[str, ...]:
        return tuple(name for name, s in self.states.items() if s.final)

    def all_states(self) -> tuple[State, ...]:
        """Every state, those of parallel states' branches after their parallel state."""
        out: list[State] = []
        for s in self.states.values():
            out.append(s)
            if s.parallel is not None:
                out += [bs for b in s.parallel.branches.values() for bs in b.states.values()]
                if s.parallel.template is not None:
                    out += list(s.parallel.template.states.values())
        return tuple(out)

    def roles(self) -> frozenset[str]:
        """Every role the definition names (owners, `by`, approvals, assignment, escalation)."""
        found: set[str] = set()
        for s in self.all_states():
            if s.owner:
                found.add(s.owner)
            for t in s.transitions:
                found.update(r for r in t.by if r not in SPECIAL_ACTORS)
            if s.approval:
                found.update(s.approval.roles)
            if s.assign and s.assign.kind in ("least_loaded", "claim", "round_robin"):
                found.add(s.assign.value)
        if self.start is not None:
            found.update(self.start.by)
        if self.control is not None:
            found.update(self.control.cancel)
            found.update(self.control.suspend)
        for d in self.deadlines:
            found.update(e.target for e in d.escalate if e.action in ("notify", "reassign"))
        return frozenset(found)

    def user_fields(self) -> Mapping[str, str | None]:
        """The `data` fields that hold a person (`format: user`), each with the role it is bound to."""
        return user_fields(self.data_schema)

    def user_lists(self) -> Mapping[str, str | None]:
        """The `data` fields that hold a list of people (`items: {format: user}`), each with its role."""
        return user_lists(self.data_schema)


def user_fields(schema: Mapping[str, Any] | None) -> Mapping[str, str | None]:
    """The top-level properties of an object schema with `format: user`, each with its `role` (or None)."""
    properties = (schema or {}).get("properties")
    if not isinstance(properties, Mapping):
        return MappingProxyType({})
    return MappingProxyType(
        {
            name: (str(sub["role"]) if isinstance(sub.get("role"), str) else None)
            for name, sub in properties.items()
            if isinstance(sub, Mapping) and sub.get("format") == USER_FORMAT
        }
    )


def user_lists(schema: Mapping[str, Any] | None) -> Mapping[str, str | None]:
    """The top-level properties of an object schema that are lists of people (`type: array` whose `items`
    are `format: user`), each with the items' `role` (or None)."""
    properties = (schema or {}).get("properties")
    if not isinstance(properties, Mapping):
        return MappingProxyType({})
    return MappingProxyType(
        {
            name: (str(items["role"]) if isinstance(items.get("role"), str) else None)
            for name, sub in properties.items()
            if isinstance(sub, Mapping)
            and isinstance(items := sub.get("items"), Mapping)
            and items.get("format") == USER_FORMAT
        }
    )


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    title: Text
    path: Path
    department: str | None = None
    manager: str | None = None
    administrator: bool = False
    rulebook: str | None = None
    wip_limit: int | None = None
    """At most this many open cases assigned to one member at once: a claim beyond it is refused."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    roles: tuple[str, ...]
    path: Path
    department: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class WorkingCalendar:
    """Working time for deadlines that count it: weekdays, daily hours, holidays, swapped work days."""

    timezone: str = "UTC"
    working_days: tuple[int, ...] = (0, 1, 2, 3, 4)
    """Weekday numbers, Monday 0."""
    working_hours: tuple[tuple[int, int], ...] = ((9 * 60, 18 * 60),)
    """Minutes after midnight, [start, end) spans."""
    holidays: tuple[str, ...] = ()
    """ISO dates with no work."""
    extra_working_days: tuple[str, ...] = ()
    """ISO dates worked although their weekday is not (调休)."""


ACCESS_ACTIONS = ("view", "export", "start", "modify", "administer")
"""What the permission matrix grants: read cases, export them, start them, take steps on them (modify
their data), and cancel, suspend, resume or reassign them (administer)."""
ACCESS_SCOPES = ("own", "department", "all", "all_desensitised")
"""On which cases a grant holds: the person's own (started, held or submitted by them), their department's
(started, held or submitted by a member, or waiting at a step one of its roles owns), every case, or every
case with personal data desensitised."""


@dataclass(frozen=True, slots=True)
class Grant:
    """One row of the permission matrix: `role` may do `actions` on the cases in `scope`, of the
    `definitions` named (None: of every definition)."""

    role: str
    actions: tuple[str, ...]
    scope: str
    definitions: tuple[str, ...] | None
    path: Path


@dataclass(frozen=True, slots=True)
class Org:
    """The people: roles, departments and users, the working calendar and the permission matrix."""

    id: str
    title: Text
    roles: Mapping[str, Role]
    users: Mapping[str, User]
    content_hash: str
    file: str
    departments: Mapping[str, Text] = field(default_factory=lambda: MappingProxyType({}))
    calendar: WorkingCalendar = field(default_factory=WorkingCalendar)
    access: tuple[Grant, ...] | None = None
    """The permission matrix (`access:`); None when the org has none: then everyone may do everything."""

    def members(self, role: str) -> tuple[str, ...]:
        """User ids holding `role`, in the order the org lists them."""
        return tuple(u.id for u in self.users.values() if role in u.roles)
