"""The engine: deploy definitions, start cases, fire events, read cases and their history, verify the trail.

`Engine` orchestrates: it loads definition versions from the store (compiled once per version and kept
per engine, never per case), decides each step with `engine.step`, and hands the store one `Write` per
transaction. Everything an embedder needs is a method here; the CLI is one such embedder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from sopflow.engine import access, branches, org_change, people, subprocesses
from sopflow.engine.answers import answer
from sopflow.engine.audit import (
    AuditRecord,
    canonical_json,
    iso,
    sealed,
    utc_now,
)
from sopflow.engine.automatic import Handler
from sopflow.engine.casework import (
    check_comment,
    check_limit,
    fired_of,
    may_fire,
    required_fields,
    start_change,
    start_record,
    votes_of,
)
from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.model import APPROVE, REJECT, Definition, Org, Text, Transition
from sopflow.engine.errors import (
    Conflict,
    DefinitionError,
    InvalidData,
    NotFound,
    OutcomeUnknown,
    SopflowError,
    StrandedCases,
    UsageError,
)
from sopflow.engine.insight import baseline as insight_baseline
from sopflow.engine.insight import compare as insight_compare
from sopflow.engine.insight import refresh as insight_refresh
from sopflow.engine.insight import report as insight_report
from sopflow.engine.insight.compare import Comparison
from sopflow.engine.insight.report import Report
from sopflow.engine.lifecycle import trials
from sopflow.engine.lifecycle.diff import Diff, diff
from sopflow.engine.lifecycle.trials import LifecycleAct, TrialStatus
from sopflow.engine.step import (
    Actor,
    People,
    Refused,
    Snapshot,
    Step,
    Vote,
    actor_from_org,
    start_step,
    take_step,
)
from sopflow.engine.store import (
    CaseChange,
    CaseLink,
    CaseQuery,
    CaseRow,
    DefinitionRow,
    DelegationRow,
    OrgRow,
    OverdueRow,
    Reads,
    Store,
    Write,
)
from sopflow.engine.store.insight import BaselineRow
from sopflow.engine.store.keys import KeyClaim, KeyConflict, check_key, new_key
from sopflow.engine.timers import on_entry
from sopflow.engine.verify import VerifyReport, verify

if TYPE_CHECKING:
    from sopflow.engine.anchor import Anchor
    from sopflow.engine.backup import BackupReport
    from sopflow.engine.export import ExportReport
    from sopflow.engine.lifecycle.migrate import MigrationReport
    from sopflow.engine.scheduler import ScheduleStatus
    from sopflow.engine.store.access import AccessEntry
    from sopflow.engine.workitems import WorkItem

DEFAULT_DATABASE = "sqlite:///sopflow.db"
MAX_DATA_BYTES = 256 * 1024
"""Case data above this size is refused: it bounds what a guard can iterate over."""


@dataclass(frozen=True, slots=True)
class Case:
    """A case as its readers see it."""

    id: int
    definition_id: str
    definition_version: int
    state: str
    state_title: Text
    open: bool
    data: Mapping[str, Any]
    version: int
    starter: str
    assignee: str | None
    submitter: str | None
    created_at: datetime
    updated_at: datetime
    entered_at: datetime
    suspended: bool = False
    """Not open, but suspended: still open work, waiting to be resumed (set by `Engine.cases`)."""

    @property
    def definition_key(self) -> str:
        return f"{self.definition_id}@{self.definition_version}"


@dataclass(frozen=True, slots=True)
class Result:
    """What a start or a fire did: the case after it and its audit record. `key` is the idempotency key
    the write was stored under (the caller's, or one made for it); `replayed` is True when the key
    matched an earlier call of the same request, and nothing was written this time."""

    case: Case
    record: AuditRecord
    replayed: bool = False
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Task:
    """A case where one person can act now, and how urgent it is."""

    case: Case
    events: tuple[str, ...]
    reason: str
    """Why it is theirs: assigned, a role they hold (or hold for someone), an approval awaiting their vote."""
    waiting_since: datetime
    due_at: datetime | None
    deadline: str | None


@dataclass(frozen=True, slots=True)
class Option:
    """An event of the case's current state, seen by one person: may they fire it now, and if not, why."""

    event: str
    title: Text | None
    allowed: bool
    reason: str | None
    targets: tuple[str, ...]
    by: tuple[str, ...]
    payload_fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Deployed:
    """What `deploy` did: per definition key whether it was new, and whether the org changed."""

    definitions: Mapping[str, bool]
    org_changed: bool
    stranded: tuple[tuple[int, str], ...] = ()
    """With `allow_stranded`: per running case (0 for a delegation), what the new org took from it."""


@dataclass(frozen=True, slots=True)
class DeadlineStatus:
    """A running deadline of a case: when it is due, and how much time is left (negative: overdue)."""

    name: str
    title: Text | None
    due_at: datetime
    rung: int

    def left(self, now: datetime) -> float:
        return (self.due_at - now).total_seconds()

    def describe(self, now: datetime) -> str:
        left = self.left(now)
        minutes = int(abs(left) // 60)
        span = f"{minutes // 60}h{minutes % 60:02d}m"
        state = f"{span} left" if left >= 0 else f"OVERDUE by {span}"
        title = f" ({self.title})" if self.title else ""
        return f"{self.name}{title}: due {self.due_at:%Y-%m-%d %H:%M} UTC, {state}"

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "name": self.name,
            "due_at": self.due_at.isoformat(),
            "seconds_left": round(self.left(now)),
            "overdue": self.left(now) < 0,
        }


class Engine:
    """sopflow's whole embedding surface. One per process (or per thread pool); cheap to keep open."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        durable: bool = True,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.database_url = database_url or os.environ.get("SOPFLOW_DB") or DEFAULT_DATABASE
        self.clock = clock
        self.store = Store(self.database_url, durable=durable)
        self._compiled: dict[tuple[str, int], CompiledDefinition] = {}
        self._orgs: dict[str, Org] = {}
        self._last_org: Org | None = None
        self._people: dict[tuple[str, str], Actor] = {}
        """(org hash, user) → the person as that org knows them, without delegations: most steps' actor."""
        from sopflow.engine.lifecycle.handlers import builtin

        self.handlers: dict[str, Handler] = builtin(self)
        """The Python handlers of automatic states, by name (`register_handler`), for this engine's worker;
        the built-in `sopflow.*` ones of the SOP lifecycle to begin with (`engine.lifecycle.handlers`)."""

    def register_handler(self, name: str, handler: Handler) -> None:
        """Register the Python function an automatic state names (`automatic: {handler: NAME}`): the
        worker of this engine calls it with an `AutomaticCall` and maps the JSON object it returns into the
        case's data; raising is a failed try. Use the call's `key` to do the work once when called again."""
        self.handlers[name] = handler

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- deploying ---------------------------------------------------------------------------------

    def deploy(
        self,
        paths: Sequence[Path],
        *,
        actor: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        allow_stranded: bool = False,
        replace_org: bool = False,
    ) -> Deployed:
        """Check and store definitions and the org from files or folders. Nothing is stored unless
        every file is free of errors (two org files are an error). Identical content is a no-op; changed
        content under an unchanged `version:` is a Conflict. An org that drops people or roles running
        cases still point at is refused (`StrandedCases`, per case), unless `allow_stranded`: then it
        is deployed and `Deployed.stranded` names them. An org of another id than the deployed one is
        refused (`Conflict`) unless `replace_org`; a changed org found beside a definition file, not
        given, is refused: name it to deploy it."""
        from sopflow.engine.definition.validate import validate_paths

        report = validate_paths(paths)
        if not report.ok:
            raise DefinitionError(report.problems)
        now = self.clock()
        stranded: list[tuple[int, str]] = []
        deployed_org = self.store.org()
        if report.org is not None and deployed_org is not None:
            org_change.refuse_unasked(
                deployed_org, report.org, beside=report.org_beside, replace_org=replace_org
            )
            if deployed_org.content_hash != report.org.content_hash:
                stranded = org_change.stranded(self, report.org, now)
            if stranded and not allow_stranded:
                first = stranded[0]
                where = f"case {first[0]}" if first[0] else "a running delegation"
                raise StrandedCases(
                    f"the org in {report.org.file} would strand {len(stranded)} running case(s) or "
                    f"delegation(s); the first, {where}: {first[1]}; nothing was deployed",
                    stranded,
                    hint="reassign or close those cases first, or deploy with --allow-stranded and "
                    "reassign them after",
                )
        org_row: OrgRow | None = None
        if report.org is not None:
            org_row = OrgRow(
                org_id=report.org.id,
                content_hash=report.org.content_hash,
                source_text=report.sources[report.org.file],
                file=report.org.file,
                deployed_at=now,
            )
        elif self.store.org() is None:
            raise UsageError(
                "no org is deployed and none was given",
                hint="deploy org.yaml with the definitions: sopflow deploy definitions/",
            )
        rows = []
        for n, d in enumerate(report.definitions, 1):
            if progress is not None:
                progress(n, len(report.definitions))
            rows.append(
                DefinitionRow(
                    definition_id=d.id,
                    version=d.version,
                    content_hash=d.content_hash,
                    source_text=report.sources[d.file],
                    file=d.file,
                    deployed_at=now,
                    deployed_by=actor,
                )
            )
        org_changed, done = self.store.deploy(org_row, rows)
        return Deployed(done, org_changed, tuple(stranded))

    def definitions(self) -> list[Definition]:
        """Every deployed definition version, oldest version first per id."""
        keys = self.store.definition_keys()
        if all(k in self._compiled for k in keys):
            # Compiled already: the keys suffice, their source texts need not be read again.
            return [self._compiled[k].definition for k in keys]
        return [self._compile(r).definition for r in self.store.definitions()]

    def definition(self, definition_id: str, version: int | None = None) -> Definition:
        return self.compiled(definition_id, version).definition

    def compiled(self, definition_id: str, version: int | None = None) -> CompiledDefinition:
        if version is not None and (definition_id, version) in self._compiled:
            return self._compiled[(definition_id, version)]
        row = self.store.definition(definition_id, version)
        if row is None:
            raise self._not_deployed(definition_id, version)
        return self._compile(row)

    def _not_deployed(self, definition_id: str, version: int | None) -> NotFound:
        """A definition (or one version of it) that is not deployed: the versions that are, or a close id."""
        keys = self.store.definition_keys()
        versions = sorted(v for d, v in keys if d == definition_id)
        what = definition_id if version is None else f"{definition_id}@{version}"
        if versions:
            return NotFound(
                f"definition `{what}` is not deployed",
                hint=f"deployed versions: {', '.join(str(v) for v in versions)}",
            )
        from difflib import get_close_matches

        close = get_close_matches(definition_id, sorted({d for d, _v in keys}), n=1)
        return NotFound(
            f"definition `{what}` is not deployed",
            hint=f"did you mean `{close[0]}`?" if close else "deploy it first: sopflow deploy definitions/",
        )

    def compiled_from(self, row: DefinitionRow) -> CompiledDefinition:
        """The compiled definition of a stored version (compiled once per engine)."""
        return self._compile(row)

    def _compile(self, row: DefinitionRow) -> CompiledDefinition:
        key = (row.definition_id, row.version)
        found = self._compiled.get(key)
        if found is None:
            from sopflow.engine.definition.build import build_definition
            from sopflow.engine.definition.loader import parse_yaml

            definition = build_definition(parse_yaml(row.source_text, row.file))
            found = CompiledDefinition(definition)
            self._compiled[key] = found
        return found

    def org(self) -> Org:
        return self._org_of(self.store.org())

    def _org_of(self, row: OrgRow | None) -> Org:
        if row is None:
            raise UsageError(
                "no org is deployed", hint="deploy org.yaml with the definitions: sopflow deploy definitions/"
            )
        found = self._orgs.get(row.content_hash)
        if found is None:
            from sopflow.engine.definition.build import build_org
            from sopflow.engine.definition.loader import parse_yaml

            found = build_org(parse_yaml(row.source_text, row.file))
            self._orgs[row.content_hash] = found
        self._last_org = found
        return found

    def _org_knowing(self, user_id: str) -> Org:
        """The org last read if it knows `user_id`, else the deployed org, which must (NotFound if not).
        Saves a fire a read of its own: the fire then checks, in its transaction, that this org is still
        the deployed one (`org_in`)."""
        org = self._last_org
        if org is None or user_id not in org.users:
            org = self.org()
            actor_from_org(org, user_id)
        return org

    def org_in(self, reads: Reads) -> Org:
        """The deployed org, read inside a write transaction: the org this engine already built for the
        deployed hash (which the step's first statement read), else the deployed one, loaded."""
        found = self._orgs.get(reads.org_hash() or "")
        if found is None:
            return self._org_of(reads.org())
        self._last_org = found
        return found

    def actor(self, user_id: str, *, org: Org | None = None) -> Actor:
        """The person acting, as the deployed org (or `org`, read already) knows them, with the roles
        delegated to them now; NotFound for an unknown user id."""
        return self._actor(org or self.org(), user_id)

    def _actor(self, org: Org, user_id: str) -> Actor:
        actor_from_org(org, user_id)
        now = self.clock()
        return self._delegated(org, user_id, self.store.delegations(delegate=user_id), now)

    def actor_in(self, reads: Reads, org: Org, user_id: str, now: datetime) -> Actor:
        """The person as `org` knows them with the roles delegated to them at `now`, read in a write
        transaction (a sub-process's child started for a parent that the system moved)."""
        return self._delegated(org, user_id, reads.delegations(user_id), now)

    def _delegated(self, org: Org, user_id: str, grants: Sequence[DelegationRow], now: datetime) -> Actor:
        """The person with the roles that the running ones of `grants` (to them) hand them at `now`."""
        if not grants:
            return self._plain_actor(org, user_id)
        delegated: dict[str, str] = {}
        for grant in grants:
            if grant.starts_at <= now < grant.ends_at and grant.delegator in org.users:
                for role in grant.roles or org.users[grant.delegator].roles:
                    if role in org.users[grant.delegator].roles:
                        delegated.setdefault(role, grant.delegator)
        return actor_from_org(org, user_id, delegated)

    def _plain_actor(self, org: Org, user_id: str) -> Actor:
        key = (org.content_hash, user_id)
        found = self._people.get(key)
        if found is None:
            found = self._people[key] = actor_from_org(org, user_id)
        return found

    # -- cases -------------------------------------------------------------------------------------

    def start(
        self,
        definition_id: str,
        data: Mapping[str, Any],
        *,
        actor: str,
        key: str | None = None,
        version: int | None = None,
    ) -> Result:
        """Start a case of the newest (or the given) version of a definition, as `actor`, under the
        idempotency `key` (one is made when none is given; `Result.key` has it): the same start with the
        same key returns the first case; the key reused by another person, for another definition or with
        other data is a Conflict. `OutcomeUnknown` when the database connection broke while committing:
        retry with `result`'s key (the error's `key`), which starts the case at most once."""
        _check_size(data)  # first: data without a JSON form cannot even be fingerprinted for the key
        key = new_key() if key is None else check_key(key)
        claim = KeyClaim.start(key, actor, definition_id, version, data)
        trial = None
        if version is None:  # a trial or an adopted version decides (`engine.lifecycle.trials`)
            version, trial = trials.version_for(self, definition_id, key)
        compiled = self.compiled(definition_id, version)
        definition = compiled.definition
        org = self.org()
        person = self._actor(org, actor)
        access.check_start(self, org, person, definition.id)
        now = self.clock()

        def least_loaded(role: str) -> str | None:
            return self.store.least_loaded(org.members(role))

        def last_turn(state: str) -> str | None:
            return self.store.last_turn(definition.id, state)

        people = People(org, least_loaded, self.store.open_cases, self.store.least_loaded, last_turn)
        step = start_step(compiled, person, dict(data), people, iso(now))
        first = definition.states[step.to_state].assign
        turn = None
        if first is not None and first.kind == "round_robin" and step.assignee:
            turn = (definition.id, step.to_state, step.assignee)
        timers = on_entry(definition, step.entered, now, org.calendar, moved=True)
        change = start_change(definition, step, person.id)

        def make_write(case_id: int) -> Write:
            detail = step.detail if trial is None else {**step.detail, "trial": trial}
            record = start_record(case_id, definition, step, person.id, now, detail)
            more = subprocesses.cascade(
                self, compiled, case_id, 1, None, step, person, person.id, org, now
            )
            held = branches.held_items(definition, step)
            starts = branches.item_deadlines(definition, step, timers.start)
            return Write(record, change, start_timers=starts, cascade=more, turn=turn, branch_items=held)

        try:
            fired = self.store.start(
                definition.id, definition.version, person.id, now, change, make_write, key=claim
            )
        except OutcomeUnknown as exc:
            raise exc.of(f"the start of a `{definition.id}` case", key) from exc
        except KeyConflict as exc:
            raise access.key_conflict(self, exc) from None
        done = Result(self._case(fired.case), fired.record, fired.replayed, key)
        return answer(self, fired.case, done, actor, known=(org, person))

    def fire(
        self,
        case_id: int,
        event: str,
        *,
        actor: str,
        payload: Mapping[str, Any] | None = None,
        comment: str | None = None,
        expect_version: int | None = None,
        key: str | None = None,
    ) -> Result:
        """Fire `event` on a case as `actor`. Not permitted and guard refusals are recorded in the
        audit trail and raised; a stale `expect_version` raises Conflict; nothing is half-written.

        The step is stored under the idempotency `key` (one is made when none is given; `Result.key`
        has it): the same fire with the same key returns the first result and writes nothing; the key
        reused by another person, for another case or event, or with another payload or comment is a
        Conflict, recorded as a refusal on the case. `OutcomeUnknown` when the database connection broke
        while committing: retry with the error's `key`, which applies the step at most once."""
        payload = dict(payload or {})
        check_comment(comment)
        if payload:  # first: a payload without a JSON form cannot even be fingerprinted for the key
            _check_size(payload)
        key = new_key() if key is None else check_key(key)
        claim = KeyClaim.fire(key, actor, case_id, event, payload, comment)
        self._org_knowing(actor)
        refusal: list[SopflowError] = []
        acting: list[tuple[Org, Actor]] = []  # the org and the person the step was decided with
        now = self.clock()

        def decide(row: CaseRow, reads: Reads) -> Write:
            refusal.clear()
            # The org and the delegations are read here, in the step's own transaction; the deployed org's
            # hash and whether any grant to the actor may run came with the case, in the step's first
            # statement, so this usually sends nothing.
            org = self.org_in(reads)
            person = self._delegated(org, actor, reads.delegations(actor), now)
            acting[:] = [(org, person)]
            compiled = self.compiled(row.definition_id, row.definition_version)
            access.judge(self, org, person, row, "modify")  # the permission matrix; refused: see below
            if reads.key_clash is not None:
                clash = claim.conflict(reads.key_clash, reveal=False)  # the record is this case's
                refusal.append(clash)
                reason = f"{clash.kind}: {clash.message}"
                return Write(
                    self.audit_record(
                        row, compiled, now, actor=person.id, event=event, to_state=None, accepted=False,
                        payload=payload, comment=comment, reason=reason,
                    )
                )
            if expect_version is not None and row.version != expect_version:
                raise Conflict(
                    f"case {row.id} is at version {row.version}, not {expect_version}: "
                    "someone changed it since you looked",
                    hint=f"run `sopflow show {row.id}` and decide again",
                )
            if not row.open:
                from sopflow.engine.control import closed_error

                # Suspended, cancelled or closed by its parent: its records say which.
                raise closed_error(self, row)
            snapshot = self.snapshot_in(compiled, row, reads, now)
            people = People(
                org,
                lambda role: reads.least_loaded(org.members(role)),
                reads.open_cases,
                reads.least_loaded,
                lambda state: reads.last_turn(row.definition_id, state),
            )
            try:
                step = take_step(compiled, snapshot, person, event, payload, people)
            except Refused as refused:
                refusal.append(refused.error)
                record = self.audit_record(
                    row,
                    compiled,
                    now,
                    actor=person.id,
                    role=refused.role,
                    event=event,
                    to_state=None,
                    accepted=False,
                    payload=payload,
                    comment=comment,
                    reason=f"{refused.error.kind}: {refused.error.message}",
                    detail=refused.detail,
                )
                return Write(record)
            if step.data_change:  # unchanged data was within the limit when it was stored
                _check_size(step.data)
            return self.step_write(compiled, row, org, person, step, payload, comment, now)

        try:
            fired = self.store.fire(case_id, decide, now=now, key=claim, actor=actor)
        except OutcomeUnknown as exc:
            raise exc.of(f"`{event}` on case {case_id}", key) from exc
        except access.REFUSALS as exc:  # recorded in the access log, outside the step's transaction
            raise access.refused(self, exc) from None
        except KeyConflict as exc:
            raise access.key_conflict(self, exc) from None
        if refusal:
            if isinstance(refusal[0], KeyConflict):
                raise access.key_conflict(self, refusal[0])
            raise refusal[0]
        done = Result(self._case(fired.case), fired.record, fired.replayed, key)
        return answer(self, fired.case, done, actor, known=acting[0] if acting else None)

    def snapshot_in(
        self, compiled: CompiledDefinition, row: CaseRow, reads: Reads, now: datetime
    ) -> Snapshot:
        """What a step decides on: the case as its row and audit trail say it, in the step's transaction."""
        votes: tuple[Vote, ...] = ()
        state = compiled.definition.states[row.state]
        if state.approval is not None:
            votes = votes_of(reads.votes(row.id, row.entered_seq))
        # Who fired what is read from the audit trail, and only for a definition that asks (one statement).
        fired = fired_of(reads.fired(row.id)) if compiled.reads_history else ()
        branches = reads.branches(row.id, row.entered_seq) if state.parallel is not None else {}
        lingering = reads.lingering(row.id) if compiled.reads_lingering else {}
        return Snapshot(
            state=row.state,
            data=row.data,
            starter=row.starter,
            assignee=row.assignee,
            submitter=row.submitter,
            votes=votes,
            fired=fired,
            started_at=iso(row.created_at),
            entered_at=iso(row.entered_at),
            now=iso(now),
            branches=branches,
            lingering=lingering,
        )

    def step_write(
        self,
        compiled: CompiledDefinition,
        row: CaseRow,
        org: Org,
        person: Actor,
        step: Step,
        payload: Mapping[str, Any],
        comment: str | None,
        now: datetime,
    ) -> Write:
        definition = compiled.definition
        record = self.audit_record(
            row,
            compiled,
            now,
            actor=person.id,
            role=step.role,
            on_behalf_of=step.on_behalf_of,
            event=step.event,
            to_state=step.to_state,
            accepted=True,
            payload=payload,
            data_change=step.data_change,
            comment=comment,
            detail=step.detail,
        )
        change = CaseChange(
            state=step.to_state,
            open=not definition.states[step.to_state].final,
            data=step.data,
            assignee=step.assignee,
            submitter=person.id if step.moved else row.submitter,
            entered=step.moved,
        )
        timers = on_entry(definition, step.entered, now, org.calendar, moved=step.moved)
        more = subprocesses.cascade(
            self, compiled, row.id, record.seq, row.state, step, person, row.starter, org, now
        )
        entered = definition.states[step.to_state]
        turn = None
        if step.moved and step.assignee and entered.assign and entered.assign.kind == "round_robin":
            turn = (definition.id, step.to_state, step.assignee)
        # Where the branches stood, for the per-item deadlines a step leaving their state ends.
        before = None
        if branches.needs_before(definition, step):
            before = self.store.branches(row.id, row.entered_seq)
        return Write(
            record,
            change,
            start_timers=branches.item_deadlines(definition, step, timers.start),
            cancel_timers=(*timers.cancel, *branches.ended_deadlines(definition, step, before)),
            cascade=more,
            # The only timeout a case can have pending is its current state's: leaving a state without
            # one has nothing to cancel, and the statement is saved.
            cancel_state_timers=timers.leave_state and definition.states[row.state].timeout is not None,
            turn=turn,
            branch_items=branches.held_items(definition, step),
        )

    @staticmethod
    def audit_record(
        row: CaseRow,
        compiled: CompiledDefinition,
        now: datetime,
        *,
        actor: str,
        event: str,
        to_state: str | None,
        accepted: bool,
        role: str | None = None,
        on_behalf_of: str | None = None,
        payload: Mapping[str, Any] | None = None,
        data_change: Mapping[str, Any] | None = None,
        comment: str | None = None,
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """The sealed audit record of one step or refusal on `row`, chained onto its last record."""
        return sealed(
            {
                "case_id": row.id,
                "seq": row.audit_seq + 1,
                "at": iso(now),
                "actor": actor,
                "role": role,
                "on_behalf_of": on_behalf_of,
                "event": event,
                "from_state": row.state,
                "to_state": to_state,
                "outcome": "accepted" if accepted else "refused",
                "payload": dict(payload or {}),
                "data_change": dict(data_change or {}),
                "comment": comment,
                "reason": reason,
                "detail": dict(detail or {}),
                "definition_hash": compiled.definition.content_hash,
                "prev_hash": row.last_hash,
            }
        )

    # -- reading -----------------------------------------------------------------------------------

    def case(self, case_id: int, *, viewer: str | None = None) -> Case:
        """The case as `viewer` may see it (None: the operator); NotFound when it is outside their
        scope, as for a case that does not exist (`engine.access`). Every read below takes `viewer` so."""
        row, how = access.case_row(self, case_id, viewer)
        return access.shown_case(self, self._case(row), row, how)

    def cases(
        self,
        *,
        definition: str | None = None,
        state: str | None = None,
        assignee: str | None = None,
        open: bool | None = None,
        data: Mapping[str, Any] | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        after_id: int | None = None,
        newest_first: bool = False,
        suspended: bool | None = None,
        or_suspended: bool = False,
        viewer: str | None = None,
    ) -> list[Case]:
        """Cases matching every filter given, oldest first, one page of at most `limit`. `suspended`:
        only suspended cases (True) or none (False); `or_suspended` with `open=True`: suspended ones too.
        Each case says whether it is suspended (`Case.suspended`)."""
        check_limit(limit)
        seen = access.scope(self, viewer, "view")
        searched = access.filtered(
            self, seen, viewer, definition=definition, assignee=assignee, data=dict(data or {})
        )
        rows = self.store.cases(
            CaseQuery(
                definition_id=definition,
                state=state,
                assignee=assignee,
                open=open,
                or_suspended=or_suspended,
                suspended=suspended,
                data_equals=dict(data or {}),
                created_before=created_before,
                after_id=after_id,
                limit=limit,
                newest_first=newest_first,
                scope=searched,
            )
        )
        held = self.store.suspended_among([r.id for r in rows if not r.open])
        return [
            access.shown_case(self, replace(self._case(r), suspended=r.id in held), r, access.how(seen, r))
            for r in rows
        ]

    def links(
        self, case_id: int, *, viewer: str | None = None
    ) -> tuple[CaseLink | None, list[CaseLink]]:
        """A case's sub-process links: how its parent started it (None: nobody did), and the children it
        started, oldest first (each with its definition, state and whether it is open)."""
        access.case_row(self, case_id, viewer)
        return self.store.links(case_id)

    def history(self, case_id: int, *, viewer: str | None = None) -> list[AuditRecord]:
        row, how = access.case_row(self, case_id, viewer)
        return access.shown_history(self, row, self.store.history(case_id), how)

    def options(self, case_id: int, actor: str, *, viewer: str | None = None) -> list[Option]:
        """Every event of the case's current state, and whether `actor` may fire it now (and why not).
        Nothing is written."""
        row, how = access.case_row(self, case_id, viewer)
        compiled = self.compiled(row.definition_id, row.definition_version)
        found = self._options(compiled, row, actor)
        return [replace(o, reason=access.shown_text(self, o.reason, how)) for o in found]

    def _options(self, compiled: CompiledDefinition, row: CaseRow, actor: str) -> list[Option]:
        from sopflow.engine.step import CLAIM, START_WORK

        org = self.org()
        person = self._actor(org, actor)
        state = compiled.definition.states[row.state]
        # An event only the clock fires (`by: [$system]`) is nobody's option.
        events = [e for e in state.events if not _clock_only(compiled.alternatives(state.name, e))]
        if state.assign is not None and state.assign.kind == "claim":
            events.append(CLAIM)
        if state.assign is not None and START_WORK not in events:
            events.append(START_WORK)
        snapshot = self._snapshot_read(compiled, row)
        if state.parallel is not None:
            offered = branches.open_events(state.parallel, snapshot.branches)
            events += [f"{b}{branches.SEPARATOR}{e}" for b, e in offered]
        out: list[Option] = []
        for event in events:
            alternatives = compiled.alternatives(state.name, event) or tuple(
                branches.transitions_of(state, snapshot.branches, event)
            )
            by = tuple(dict.fromkeys(r for t in alternatives for r in t.by))
            if state.approval is not None and event in (APPROVE, REJECT):
                by = state.approval.roles
            fields = required_fields(alternatives)
            targets = tuple(dict.fromkeys(t.target for t in alternatives))
            if state.approval is not None and event in (APPROVE, REJECT):
                targets = (state.approval.approved if event == APPROVE else state.approval.rejected,)
            title = alternatives[0].title if alternatives else None
            allowed, reason = may_fire(compiled, snapshot, person, event, org, fields)
            out.append(Option(event, title, allowed, reason, targets, by, fields))
        return out

    def branches(self, case_id: int, *, viewer: str | None = None) -> list[branches.BranchStatus]:
        """Where each branch of the case's parallel state stands ([] when the case is not in one)."""
        row, how = access.case_row(self, case_id, viewer)
        definition = self.compiled(row.definition_id, row.definition_version).definition
        parallel = definition.states[row.state].parallel
        if parallel is not None:
            found = branches.status(parallel, self.store.branches(row.id, row.entered_seq))
        elif definition.states[row.state].final or not self.compiled(
            row.definition_id, row.definition_version
        ).reads_lingering:
            found = []  # a closed case keeps no branch running
        else:
            found = branches.lingering_status(definition, self.store.lingering(row.id))
        return access.shown_branches(self, found, how)

    def schedules(self, definition_id: str) -> list[ScheduleStatus]:
        """Each schedule of the definition's newest version: since when it runs, the last period it
        started (and that period's case), and when its next period is due."""
        from sopflow.engine.scheduler import Scheduler

        return Scheduler(self).status(definition_id, self.clock())

    def deadlines(self, case_id: int, *, viewer: str | None = None) -> list[DeadlineStatus]:
        """The case's running deadlines, soonest first."""
        row, _how = access.case_row(self, case_id, viewer)
        definition = self.definition(row.definition_id, row.definition_version)
        titles = {d.name: d.title for d in definition.deadlines}
        return [
            # A per-item deadline (`NAME@ITEM`) has its deadline's title.
            DeadlineStatus(t.name, titles.get(t.name.split("@", 1)[0]), t.due_at, t.rung)
            for t in self.store.pending_timers(case_id)
            if t.kind == "deadline"
        ]

    def overdue(self, limit: int = 50, *, viewer: str | None = None) -> list[OverdueRow]:
        """Cases with a breached deadline whose span has not ended, oldest breach first, of those `viewer`
        may view (filtered in SQL)."""
        return self.store.overdue(limit, access.scope(self, viewer, "view"))

    def approval_progress(self, case_id: int, *, viewer: str | None = None) -> str | None:
        """For a case waiting in an approval state: the rule, who has voted, what is missing."""
        row, how = access.case_row(self, case_id, viewer)
        return access.shown_text(self, self._approval_progress(row), how)

    def _approval_progress(self, row: CaseRow) -> str | None:
        compiled = self.compiled(row.definition_id, row.definition_version)
        approval = compiled.definition.states[row.state].approval
        if approval is None:
            return None
        votes = self._snapshot_read(compiled, row).votes
        done = ", ".join(f"{v.voter} ({v.role}) {v.decision}d" for v in votes) or "no votes yet"
        approvers = {v.role for v in votes if v.decision == "approve"}
        if approval.rule == "all_of":
            missing = [r for r in approval.roles if r not in approvers]
            need = f"waiting for {', '.join(missing)}" if missing else "complete"
            rule = f"all of {', '.join(approval.roles)}"
        elif approval.rule == "any_of":
            need = f"waiting for one of {', '.join(approval.roles)}"
            rule = f"any of {', '.join(approval.roles)}"
        else:
            count = sum(1 for v in votes if v.decision == "approve")
            need = f"{max(approval.at_least - count, 0)} more of {approval.roles[0]}"
            rule = f"quorum of {approval.at_least} {approval.roles[0]}"
        veto = "one rejection rejects" if approval.veto else "rejections do not veto"
        return f"{rule} ({veto}); {done}; {need}"

    def _snapshot_read(self, compiled: CompiledDefinition, row: CaseRow) -> Snapshot:
        votes: tuple[Vote, ...] = ()
        if compiled.definition.states[row.state].approval is not None:
            votes = votes_of(self.store.votes(row.id, row.entered_seq))
        fired = fired_of(self.store.fired(row.id)) if compiled.reads_history else ()
        parallel = compiled.definition.states[row.state].parallel is not None
        return Snapshot(
            row.state,
            row.data,
            row.starter,
            row.assignee,
            row.submitter,
            votes,
            fired=fired,
            started_at=iso(row.created_at),
            entered_at=iso(row.entered_at),
            now=iso(self.clock()),
            branches=self.store.branches(row.id, row.entered_seq) if parallel else {},
            lingering=self.store.lingering(row.id) if compiled.reads_lingering else {},
        )

    def _case(self, row: CaseRow) -> Case:
        compiled = self.compiled(row.definition_id, row.definition_version)
        return Case(
            id=row.id,
            definition_id=row.definition_id,
            definition_version=row.definition_version,
            state=row.state,
            state_title=compiled.definition.states[row.state].title,
            open=row.open,
            data=row.data,
            version=row.version,
            starter=row.starter,
            assignee=row.assignee,
            submitter=row.submitter,
            created_at=row.created_at,
            updated_at=row.updated_at,
            entered_at=row.entered_at,
        )

    # -- people ------------------------------------------------------------------------------------

    def tasks(self, user_id: str, *, limit: int = 50) -> list[Task]:
        """Every open case where `user_id` can act now (assigned, a role they hold or hold for someone,
        an approval awaiting their vote, a case to claim), most urgent first; of the cases the permission
        matrix lets them view and modify (filtered in SQL), shown as they may view them."""
        org = self.org()
        seen, may = access.scope(self, user_id, "view"), access.scope(self, user_id, "modify")
        found = people.tasks(self, org, self._actor(org, user_id), limit=limit, scope=seen, modify=may)
        shown = [access.shown_case(self, self._case(w.row), w.row, access.how(seen, w.row)) for w in found]
        return [
            Task(case, w.events, w.reason, w.waiting_since, w.due_at, w.deadline)
            for case, w in zip(shown, found, strict=True)
        ]

    def reassign(self, case_id: int, to_user: str, *, actor: str, comment: str | None = None) -> Result:
        """Give the case's current step to `to_user` (audited); for the owning role's manager role or an
        administrator."""
        access.check_case(self, case_id, actor, "modify")
        fired = people.reassign(self, case_id, to_user, actor=actor, comment=comment)
        return answer(self, fired.case, Result(self.case(fired.case.id), fired.record), actor)

    def cancel(self, case_id: int, *, actor: str, reason: str) -> Result:
        """Cancel an open case where it stands, with a reason (audited): its timers end and its open
        sub-process cases close; for an administrator or a role the definition's `control: cancel:` names
        (`engine.control`)."""
        from sopflow.engine import control

        access.check_case(self, case_id, actor, "administer")
        fired = control.cancel(self, case_id, actor=actor, reason=reason)
        return answer(self, fired.case, Result(self._case(fired.case), fired.record), actor)

    def work_item(self, case_id: int, *, viewer: str | None = None) -> WorkItem:
        """The work item of the case's current state: offered, allocated or started, to whom, since when
        (`engine.workitems`)."""
        from sopflow.engine.workitems import work_item

        _row, how = access.case_row(self, case_id, viewer)
        return access.shown_work_item(self, work_item(self, case_id), how)

    def suspend(self, case_id: int, *, actor: str, reason: str) -> Result:
        """Suspend an open case with a reason (audited): it takes no step but resume and cancel, and its
        deadlines and timeouts pause with the time they had left (`engine.control`)."""
        from sopflow.engine import control

        access.check_case(self, case_id, actor, "administer")
        fired = control.suspend(self, case_id, actor=actor, reason=reason)
        return answer(self, fired.case, Result(self._case(fired.case), fired.record), actor)

    def resume(self, case_id: int, *, actor: str, reason: str | None = None) -> Result:
        """Resume a suspended case: its timers run again with the time they had left (`engine.control`)."""
        from sopflow.engine import control

        access.check_case(self, case_id, actor, "administer")
        fired = control.resume(self, case_id, actor=actor, reason=reason)
        return answer(self, fired.case, Result(self._case(fired.case), fired.record), actor)

    def delegate(
        self,
        delegator: str,
        delegate_to: str,
        *,
        actor: str,
        ends_at: datetime,
        starts_at: datetime | None = None,
        roles: Sequence[str] = (),
        reason: str | None = None,
    ) -> DelegationRow:
        """Hand roles to someone for a period (absence, holiday); it ends by itself at `ends_at`."""
        return people.delegate(
            self,
            delegator,
            delegate_to,
            actor=actor,
            ends_at=ends_at,
            starts_at=starts_at,
            roles=roles,
            reason=reason,
        )

    def revoke_delegation(
        self, delegation_id: int, *, actor: str, reason: str | None = None
    ) -> DelegationRow:
        return people.revoke(self, delegation_id, actor=actor, reason=reason)

    def delegations(self, user_id: str | None = None) -> list[DelegationRow]:
        """Delegations not revoked (running, future and ended), newest first."""
        return self.store.delegations(user=user_id)

    # -- insight: reports, baselines, comparisons (`engine.insight`) ---------------------------------

    def report(
        self,
        definition_id: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        by: str = "step",
        viewer: str | None = None,
    ) -> Report:
        """Handling times, SLA, errors, satisfaction, workload and backlog of the cases `viewer` may see."""
        return insight_report.build(self, definition_id, since=since, until=until, by=by, viewer=viewer)

    def report_check(self) -> list[tuple[int, str]]:
        """(case, what differs) for each case whose derived figures are not what its trail gives."""
        return insight_refresh.check(self)

    def set_baseline(
        self, definition_id: str, step: str | None, seconds: float, *, source: str, actor: str
    ) -> BaselineRow:
        """Record a benchmark baseline of a step's median (None: the whole process), with its source."""
        return insight_baseline.set_baseline(self, definition_id, step, seconds, source=source, actor=actor)

    def update_baselines(self, month: str | None = None, *, actor: str = "$system") -> list[BaselineRow]:
        """Record last month's (or `month`'s, YYYY-MM, ended) own medians as baselines; the rows added.
        A person must be an administrator or of each process owner's role (refusals logged)."""
        return insight_baseline.update(self, month, actor=actor)

    def baselines(self, definition_id: str | None = None) -> list[BaselineRow]:
        """Every baseline, oldest first (never overwritten: the newest per step is the current one)."""
        return insight_baseline.history(self, definition_id)

    def compare(
        self,
        definition_id: str,
        version1: int,
        version2: int,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        viewer: str | None = None,
    ) -> Comparison:
        """Version 2 against version 1 over the cases `viewer` may view: durations (Mann–Whitney U), rates
        (Fisher), a verdict; refused (and logged) for a viewer who may view none of the definition's."""
        return insight_compare.compare(
            self, definition_id, version1, version2, since=since, until=until, viewer=viewer
        )

    # -- versions: diff, trials, adoption, migration (`engine.lifecycle`) ---------------------------

    def diff(self, definition_id: str, old: int, new: int) -> Diff:
        """What changed from version `old` to `new` of a definition, in words a process owner reads."""
        return diff(self.definition(definition_id, old), self.definition(definition_id, new))

    def trial_start(self, definition_id: str, versions: Mapping[int, int], *, actor: str) -> LifecycleAct:
        """Split new cases between versions by weight, by a hash of each start's key (audited)."""
        return trials.start(self, definition_id, versions, actor=actor)

    def trial_stop(self, definition_id: str, *, actor: str) -> LifecycleAct:
        """End the running trial: new cases start on the newest version again (audited)."""
        return trials.stop(self, definition_id, actor=actor)

    def adopt(self, definition_id: str, version: int, *, actor: str) -> LifecycleAct:
        """Start every new case on `version` from now on, ending a running trial (audited)."""
        return trials.adopt(self, definition_id, version, actor=actor)

    def trial_status(self, definition_id: str, *, viewer: str | None = None) -> TrialStatus:
        """Which version new cases start on, and the last trial's figures per version over the cases
        `viewer` may view (refused, and logged, for one who may view none of the definition's)."""
        return trials.status(self, definition_id, viewer=viewer)

    def lifecycle_log(self, definition_id: str | None = None) -> list[LifecycleAct]:
        """Every trial, adoption and migration act (accepted and refused), oldest first."""
        return trials.log(self, definition_id)

    def migrate(
        self,
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
        """Move running cases to another version, each in its own transaction with its audit record, or
        (`dry_run`) say per case what would happen and why a case cannot move (`engine.lifecycle.migrate`)."""
        from sopflow.engine.lifecycle.migrate import migrate

        return migrate(
            self, definition_id, from_version, to_version, actor=actor, state_map=state_map,
            defaults=defaults, where=where, dry_run=dry_run, comment=comment, progress=progress,
        )  # fmt: skip

    def access_log(self, actor: str | None = None, *, viewer: str | None = None) -> list[AccessEntry]:
        """The access log, oldest first: every refusal of the permission matrix and every export (of one
        person when `actor` is given); hash-chained, checked by `verify`. For the operator (`viewer`
        None) and administrators (`engine.access_log`)."""
        from sopflow.engine.access_log import read

        return read(self, actor, viewer)

    # -- verifying ---------------------------------------------------------------------------------

    def verify(
        self,
        case_id: int | None = None,
        *,
        progress: Callable[[int], None] | None = None,
        anchors: Sequence[Anchor] = (),
        viewer: str | None = None,
    ) -> VerifyReport:
        """Check the definitions and orgs against their content hashes, every hash chain (or one case's),
        every accepted step against the rules in force when it was taken, the case rows against their
        replay, and the trail against `anchors` (`engine.verify`). One case verified for a `viewer` is
        "not found" (recorded) when outside their view, as for a case that does not exist."""
        if case_id is not None and viewer is not None:
            access.case_row(self, case_id, viewer)
        return verify(self, case_id, progress=progress, anchors=anchors)

    def anchor(self, key: bytes, *, previous: Anchor | None = None) -> Anchor:
        """A keyed snapshot of every case's chain head, to keep outside the database (`engine.anchor`)."""
        from sopflow.engine.anchor import make

        return make(self, key, previous=previous)

    def backup(self, to: Path) -> BackupReport:
        """Back the database up to the new file `to`, restore the copy into a scratch database, verify it
        there and write its manifest beside it (`engine.backup`)."""
        from sopflow.engine.backup import take

        return take(self, to)

    def export(
        self,
        out: BinaryIO,
        fmt: str,
        *,
        definition: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        desensitise_key: bytes | None = None,
        reader: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ExportReport:
        """Stream cases and their events to `out` as csv, jsonl or xes, desensitised with the privacy key
        when one is given (`engine.export`); `reader` is who exports (None: the operator): only the cases
        the permission matrix lets them export, desensitised when it says so; recorded in the access log
        (`engine.access_export`)."""
        from sopflow.engine.access_export import export

        return export(
            self, out, fmt, definition=definition, since=since, until=until, key=desensitise_key,
            reader=reader, progress=progress,
        )  # fmt: skip


def _clock_only(alternatives: Sequence[Transition]) -> bool:
    """Whether only the clock may fire an event written with these alternatives (`by: [$system]`)."""
    return bool(alternatives) and all(t.clock_only for t in alternatives)


def _check_size(value: Mapping[str, Any]) -> None:
    try:
        size = len(canonical_json(value).encode("utf-8"))
    except (ValueError, UnicodeEncodeError) as exc:
        # NaN and Infinity (ValueError) and lone surrogates (UnicodeEncodeError) have no JSON form: the
        # audit trail could not seal them.
        what = "a lone UTF-16 surrogate" if isinstance(exc, UnicodeEncodeError) else "NaN or Infinity"
        raise InvalidData(
            f"the data holds {what}, which JSON cannot carry",
            hint="give numbers as finite numbers and text as UTF-8",
        ) from None
    if size > MAX_DATA_BYTES:
        raise InvalidData(
            f"the data is {size} bytes, more than the {MAX_DATA_BYTES} a case may hold",
            hint="keep documents elsewhere and put their links in the data",
        )
