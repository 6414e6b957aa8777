"""`audit verify`: prove that the database still says what its audit trail says.

Four things are checked, and each finding names the record (or the definition, org or anchor) at fault:

1. every stored definition and org equals its content hash (its source text, parsed, hashes to it), and
   every audit record was written under the definition its case runs on;
2. every case's chain is whole (`engine.audit.verify_chain`);
3. every accepted step was allowed: it is decided again (`engine.step`) with the definition of the case,
   the org in force when it was taken and the delegations running then, and must give the record's
   move, role, data change and detail; the case row's derived columns (state, data, starter, submitter,
   assignee, version, the visit's start, its times) must equal what the replay ends with;
4. against anchors (`engine.anchor`) written earlier and kept outside the database: every anchored case
   still exists, holds at least the anchored records, and its anchored head has the anchored hash.

Nothing here writes: verification only reads the store, and builds from the stored texts the definitions
and orgs it replays with (it does not trust the engine's caches, filled before a possible tamper).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sopflow.engine import branches
from sopflow.engine.audit import AuditRecord, canonical_json, iso, verify_chain
from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.model import (
    APPROVE,
    AUTOMATIC_FAILED,
    CANCEL_CASE,
    CLOSED_BY_PARENT,
    MIGRATE_CASE,
    REJECT,
    RESUME,
    RESUME_CASE,
    SUSPEND_CASE,
    SYSTEM,
    Definition,
    Org,
)
from sopflow.engine.errors import SopflowError
from sopflow.engine.lifecycle import chain as lifecycle_chain
from sopflow.engine.step import (
    SYSTEM_ACTOR,
    Actor,
    People,
    Refused,
    Snapshot,
    Step,
    actor_from_org,
    start_step,
    take_step,
)
from sopflow.engine.store import CaseRow, DelegationRow, StoredVote
from sopflow.engine.timers import deadline_of
from sopflow.engine.verify_timers import LiveTimer, TimerReplay

if TYPE_CHECKING:
    from sopflow.engine.anchor import Anchor
    from sopflow.engine.runtime import Engine

NO_CHANGE_SYSTEM_EVENTS = frozenset({"deadline_breached", "escalate"})
"""Records the worker appends without changing the case (a breach noted, an escalation notice)."""

CLOCK_GRACE = timedelta(seconds=60)
"""A deployment or a revocation is dated when it begins, and commits a little later; a step on another
host reads another clock. A step within this much after one may still have been decided under what was
in force before it."""

_SOME_MEMBER = "\x00"
"""Prefix of the replayed assignee of an old record that did not record whom the load picked."""


@dataclass(frozen=True, slots=True)
class VerifyFinding:
    """One thing found wrong: in a case (its id and the record), or elsewhere (`subject` names it)."""

    case_id: int | None
    seq: int | None
    problem: str
    subject: str | None = None

    @property
    def where(self) -> str:
        if self.case_id is None:
            return self.subject or "the database"
        return f"case {self.case_id}, record {self.seq}"

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"case": self.case_id, "seq": self.seq, "problem": self.problem}
        if self.subject is not None:
            found["subject"] = self.subject
        return found


def anchored_rows(
    label: str, held: tuple[int, str] | None, hashes: Sequence[str], subject: str, noun: str
) -> list[VerifyFinding]:
    """An anchor's hold on a hash-chained table (`held`: how many rows it held and the newest one's hash)
    against the rows there now (`hashes`, oldest first): rows cut from the end, which the chain alone cannot
    show, or the held ones rewritten."""
    if held is None:
        return []
    count, digest = held
    if len(hashes) < count:
        problem = f"{label} holds {count} of them, {len(hashes)} remain: {noun} were removed"
        return [VerifyFinding(None, None, problem, subject)]
    if count and hashes[count - 1] != digest:
        return [VerifyFinding(None, None, f"the {noun} {label} holds were rewritten", subject)]
    return []


@dataclass(frozen=True, slots=True)
class VerifyReport:
    cases: int
    records: int
    findings: tuple[VerifyFinding, ...] = field(default_factory=tuple)
    anchors: int = 0
    """How many anchors the trail was checked against."""

    @property
    def ok(self) -> bool:
        return not self.findings


def verify(
    engine: Engine,
    case_id: int | None = None,
    *,
    progress: Callable[[int], None] | None = None,
    anchors: Sequence[Anchor] = (),
) -> VerifyReport:
    """Verify one case or every case (see the module); `anchors` are checked and already trusted (their
    signatures and their series were verified by `engine.anchor`)."""
    checker = _Checker(engine)
    findings = checker.registry(anchors)
    anchored = _anchored_heads(anchors)
    ids: Iterator[int] = iter([case_id]) if case_id is not None else engine.store.iter_case_ids()
    cases = records = 0
    store = engine.store
    for batch in _batches(ids):
        # A batch's trails, timers and keys in a statement each: per case, they cost more than its replay.
        histories, timers = store.histories(batch), store.live_timers_of(batch)
        keys = store.keys_of_cases(batch)
        for cid in batch:
            row = store.case(cid)
            history = histories.get(cid, [])
            cases += 1
            records += len(history)
            found = (
                _chain(row, history)
                or _against_anchors(cid, history, anchored.pop(cid, []))
                or checker.replay(row, history, timers.get(cid, []))
                or checker.links(row, history)
                or _keys(row, history, keys.get(cid, []))
            )
            if found is not None:
                findings.append(found)
            if progress is not None:
                progress(cases)
    if case_id is None:
        for orphan in engine.store.cases_without_row():
            anchored.pop(orphan, None)
            findings.append(
                VerifyFinding(orphan, 1, "the case row is gone but its audit records remain (it was deleted)")
            )
        for cid, points in sorted(anchored.items()):
            seq, _hash, label = max(points)
            findings.append(
                VerifyFinding(
                    cid, seq, f"the case is gone: {label} holds it with {seq} record(s) (it was deleted)"
                )
            )
    from sopflow.engine.insight.refresh import findings as insight_findings

    findings += insight_findings(engine, None if case_id is None else [case_id])
    return VerifyReport(cases, records, tuple(findings), len(anchors))


def _batches(ids: Iterator[int], size: int = 200) -> Iterator[list[int]]:
    batch: list[int] = []
    for cid in ids:
        batch.append(cid)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _chain(row: CaseRow, history: Sequence[AuditRecord]) -> VerifyFinding | None:
    broken = verify_chain(row.id, history, row.last_hash)
    if broken is None and row.audit_seq != len(history):
        return VerifyFinding(
            row.id, len(history), f"the case row says {row.audit_seq} records, the trail holds {len(history)}"
        )
    return None if broken is None else VerifyFinding(broken.case_id, broken.seq, broken.problem)


def _keys(
    row: CaseRow, history: Sequence[AuditRecord], keys: Sequence[tuple[str, str, str, str, int]]
) -> VerifyFinding | None:
    """Every idempotency key of the case names the accepted record it wrote, by the key's own actor and
    for its own operation: a key edited to point elsewhere would hand a retry someone else's result, and
    a key planted for a request not yet made would swallow it."""
    for key, operation, actor, target, seq in keys:
        rec = history[seq - 1] if 1 <= seq <= len(history) else None
        if rec is None or rec.outcome != "accepted":
            return VerifyFinding(
                row.id, seq, f"idempotency key `{key}` names record {seq}, which it did not write"
            )
        wrote = (
            (rec.event == "start" and target == row.definition_id)
            if operation == "start"
            # A branch's step is recorded as `BRANCH.EVENT` when the request named the event alone.
            else (operation == "fire" and target in (rec.event, rec.event.rpartition(".")[2]))
        )
        if not wrote or rec.actor != actor:
            return VerifyFinding(
                row.id,
                seq,
                f"idempotency key `{key}` says {actor} used it to {operation} `{target}`; the record says "
                f"{rec.actor} did `{rec.event}`",
            )
    return None


def _anchored_heads(anchors: Sequence[Anchor]) -> dict[int, list[tuple[int, str, str]]]:
    """Case id → every (seq, hash, anchor label) the anchors hold for it."""
    found: dict[int, list[tuple[int, str, str]]] = {}
    for anchor in anchors:
        for cid, seq, digest in anchor.cases:
            found.setdefault(cid, []).append((seq, digest, anchor.label))
    return found


def _against_anchors(
    case_id: int, history: Sequence[AuditRecord], points: Sequence[tuple[int, str, str]]
) -> VerifyFinding | None:
    """The first anchored head the trail no longer holds as anchored, oldest head first."""
    previous = 0
    for seq, digest, label in sorted(points):
        if seq > len(history):
            return VerifyFinding(
                case_id,
                len(history) + 1,
                f"records {len(history) + 1} to {seq} are gone: {label} holds {seq} record(s) "
                "(the tail was cut)",
            )
        if history[seq - 1].hash != digest:
            span = f"record {seq}" if seq - previous == 1 else f"one of records {previous + 1} to {seq}"
            return VerifyFinding(
                case_id,
                seq,
                f"its hash is not the one {label} holds: {span} was rewritten "
                "and the hashes after it recomputed",
            )
        previous = seq
    return None


@dataclass(slots=True)
class _Replay:
    """A case as its records, replayed so far, say it is."""

    state: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    starter: str | None = None
    assignee: str | None = None
    submitter: str | None = None
    version: int = 0
    entered_seq: int = 0
    entered_at: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    votes: list[tuple[int, StoredVote]] = field(default_factory=list)
    timers: TimerReplay = field(default_factory=TimerReplay)
    fired: list[tuple[str, str]] = field(default_factory=list)
    """(event, person) of every accepted record so far, as the runtime reads them for a step."""
    closed: bool = False
    """Closed by its parent case where it stood (a sub-process's child the parent stopped waiting on)."""
    suspended: AuditRecord | None = None
    """The record that suspended the case, while it is suspended."""
    branches: dict[str, Any] = field(default_factory=dict)
    """Where a parallel state's branches stand, as the last step that gave them."""
    lingering: dict[str, Any] = field(default_factory=dict)
    """Branches that run on after their join, as the last step that gave them."""

    def snapshot(self, now: str) -> Snapshot:
        from sopflow.engine.casework import votes_of

        current = votes_of(v for seq, v in self.votes if seq > self.entered_seq)
        return Snapshot(
            self.state or "",
            self.data,
            self.starter or "",
            self.assignee,
            self.submitter,
            current,
            fired=tuple(self.fired),
            started_at=self.created_at,
            entered_at=self.entered_at,
            now=now,
            branches=self.branches,
            lingering=self.lingering,
        )


class _Checker:
    """What verification needs of the registry: definitions and orgs built from their stored texts, which
    org and which delegations were in force at a moment."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._definitions: dict[tuple[str, int], CompiledDefinition | str] = {}
        self._orgs: list[tuple[int, datetime, Org | None]] = []
        self._log: list[DelegationRow] = []
        self._revoked: dict[int, datetime] = {}

    # -- definitions and orgs ----------------------------------------------------------------------

    def registry(self, anchors: Sequence[Anchor]) -> list[VerifyFinding]:
        """Findings about the stored definitions and orgs: each must equal its content hash, and every
        definition and org an anchor holds must still be stored as it held it."""
        from sopflow.engine.definition.build import build_definition, build_org, content_hash
        from sopflow.engine.definition.loader import parse_yaml

        store = self.engine.store
        findings: list[VerifyFinding] = []
        stored: dict[str, str] = {}
        for row in store.definitions():
            key = f"{row.definition_id}@{row.version}"
            stored[key] = row.content_hash
            subject = f"definition {key}"
            try:
                doc = parse_yaml(row.source_text, row.file)
                actual = content_hash(doc.data)
                if actual != row.content_hash:
                    raise _Tampered(
                        f"its source text hashes to {actual[:12]}…, not its content hash "
                        f"{row.content_hash[:12]}…: the text was rewritten after it was deployed"
                    )
                definition = build_definition(doc)
                if (definition.id, definition.version) != (row.definition_id, row.version):
                    raise _Tampered(f"its source text is {definition.key}, not {key}")
                self._definitions[(row.definition_id, row.version)] = self._compiled(definition)
            except Exception as exc:  # a rewritten text may break the builder anywhere: it is a finding
                problem = _problem(exc)
                self._definitions[(row.definition_id, row.version)] = f"{subject} is not intact"
                findings.append(VerifyFinding(None, None, problem, subject))
        hashes: list[str] = []
        for row_id, deployed in store.org_history():
            hashes.append(deployed.content_hash)
            org: Org | None = None
            subject = f"org {deployed.org_id} (deployment {row_id})"
            try:
                doc = parse_yaml(deployed.source_text, deployed.file)
                actual = content_hash(doc.data)
                if actual != deployed.content_hash:
                    raise _Tampered(
                        f"its source text hashes to {actual[:12]}…, not its content hash "
                        f"{deployed.content_hash[:12]}…: the text was rewritten after it was deployed"
                    )
                org = build_org(doc)
            except Exception as exc:  # a rewritten text may break the builder anywhere: it is a finding
                problem = _problem(exc)
                findings.append(VerifyFinding(None, None, problem, subject))
            self._orgs.append((row_id, deployed.deployed_at, org))
        self._log = store.delegation_log()
        for entry in self._log:
            if entry.kind == "revoke" and entry.revokes is not None:
                self._revoked.setdefault(entry.revokes, entry.created_at)
        from sopflow.engine.verify_registry import check_log, since_anchor

        findings += check_log(self._log, self.orgs_at)
        from sopflow.engine import access_log

        findings += access_log.check(store)
        from sopflow.engine.insight import baseline as insight_baseline

        findings += insight_baseline.findings(store, anchors) + lifecycle_chain.findings(store, anchors)
        org_times = [deployed for _id, deployed, _org in self._orgs]
        for anchor in anchors:
            findings += _registry_against(anchor, stored, hashes)
            findings += since_anchor(anchor, store, org_times, self._log)
            findings += access_log.since_anchor(anchor, store)
        return findings

    def _compiled(self, definition: Definition) -> CompiledDefinition:
        """The engine's compiled definition when it is this one (same content), else a new one."""
        try:
            cached = self.engine.compiled(definition.id, definition.version)
        except SopflowError:
            cached = None
        if cached is not None and cached.definition.content_hash == definition.content_hash:
            return cached
        return CompiledDefinition(definition)

    def orgs_at(self, at: datetime) -> list[Org | None]:
        """The orgs that may have been in force at `at`: the last deployed at or before it, and the ones
        before it while it was deployed less than CLOCK_GRACE before `at` (see there)."""
        if not self._orgs:
            return []
        last = 0
        for i, (_id, deployed, _org) in enumerate(self._orgs):
            if deployed <= at:
                last = i
        found = [self._orgs[last][2]]
        while last > 0 and at - self._orgs[last][1] <= CLOCK_GRACE:
            last -= 1
            found.append(self._orgs[last][2])
        return found

    def actor(self, org: Org, user: str, at: datetime) -> Actor:
        """`user` as `org` knew them at `at`, with the roles the delegations running then handed them."""
        revoked = self._revoked
        delegated: dict[str, str] = {}
        for grant in reversed(self._log):  # newest first, as the step read them
            if grant.kind != "grant" or grant.delegate != user or grant.created_at > at:
                continue
            # Revoked before the step, and by more than CLOCK_GRACE: a revocation is dated before it commits.
            if grant.id in revoked and revoked[grant.id] < at - CLOCK_GRACE:
                continue
            if grant.starts_at <= at < grant.ends_at and grant.delegator in org.users:
                held = org.users[grant.delegator].roles
                for role in grant.roles or held:
                    if role in held:
                        delegated.setdefault(role, grant.delegator)
        return actor_from_org(org, user, delegated)

    # -- a case ------------------------------------------------------------------------------------

    def links(self, row: CaseRow, history: Sequence[AuditRecord]) -> VerifyFinding | None:
        """The first sub-process link of the case, to its parent or its children, that does not hold."""
        from sopflow.engine.verify_links import check_links

        def definition_of(definition_id: str, version: int) -> Definition | None:
            found = self._definitions.get((definition_id, version))
            return found.definition if isinstance(found, CompiledDefinition) else None

        problem = check_links(self.engine.store, row, history, definition_of)
        return None if problem is None else VerifyFinding(row.id, problem[0], problem[1])

    def replay(
        self, row: CaseRow, history: Sequence[AuditRecord], live: Sequence[LiveTimer]
    ) -> VerifyFinding | None:
        from sopflow.engine.lifecycle.verify import first_version

        # A migrated case started on the version its first migration left (`engine.lifecycle.verify`).
        started_on = first_version(row.definition_version, history)
        compiled = self._definitions.get((row.definition_id, started_on))
        key = f"{row.definition_id}@{started_on}"
        if compiled is None:
            return VerifyFinding(row.id, 1, f"its definition {key} is not deployed")
        if isinstance(compiled, str):
            return VerifyFinding(row.id, 1, f"it cannot be replayed: {compiled}")
        definition = compiled.definition
        replay = _Replay()
        for rec in history:
            if rec.event == MIGRATE_CASE and rec.outcome == "accepted":
                moved = self._migrated(row, compiled, replay, rec)
                if isinstance(moved, str):
                    return VerifyFinding(row.id, rec.seq, moved)
                compiled, definition, key = moved, moved.definition, moved.definition.key
                replay.fired.append((rec.event, rec.on_behalf_of or rec.actor))
                continue
            if rec.definition_hash != definition.content_hash:
                return VerifyFinding(
                    row.id,
                    rec.seq,
                    f"it was written under definition {rec.definition_hash[:12]}…, but the case runs on "
                    f"{key} ({definition.content_hash[:12]}…)",
                )
            if rec.outcome != "accepted":
                if rec.seq == 1 or rec.from_state != replay.state:
                    return VerifyFinding(
                        row.id,
                        rec.seq,
                        f"it was refused in `{rec.from_state}`, the case was in `{replay.state}`",
                    )
                at = _moment(rec.at)
                # A timer whose event was refused fired all the same.
                problem = replay.timers.system(definition, rec, at) if rec.actor == SYSTEM and at else None
                if problem is not None:
                    return VerifyFinding(row.id, rec.seq, problem)
                continue
            problem = self._apply(compiled, replay, rec)
            if problem is not None:
                return VerifyFinding(row.id, rec.seq, problem)
            replay.fired.append((rec.event, rec.on_behalf_of or rec.actor))
        if definition.version != row.definition_version:
            return VerifyFinding(
                row.id, len(history), f"the case runs on {row.definition_id}@{row.definition_version}, "
                f"its records give {key}"
            )  # fmt: skip
        return _compare(row, definition, replay, history, self.orgs_at(row.updated_at), live)

    def _migrated(
        self, row: CaseRow, compiled: CompiledDefinition, replay: _Replay, rec: AuditRecord
    ) -> CompiledDefinition | str:
        """A `migrate_case` record decided again (`engine.lifecycle.verify`): the definition after it."""
        from sopflow.engine.lifecycle.verify import check_migration

        at = _moment(rec.at)
        if at is None:
            return f"its time `{rec.at}` is not a time"
        return check_migration(
            compiled, replay, rec,
            definition_of=lambda version: self._definitions.get((row.definition_id, version)),
            orgs=self.orgs_at(at),
            actor_of=lambda org, user: self.actor(org, user, at),
        )  # fmt: skip

    def _apply(self, compiled: CompiledDefinition, replay: _Replay, rec: AuditRecord) -> str | None:
        """Decide the accepted record's step again and fold it into `replay`; what is wrong, or None."""
        if (rec.seq == 1) != (rec.event == "start") or (rec.seq == 1 and rec.from_state is not None):
            return "a case's first record, and only it, is its start"
        if rec.seq > 1 and rec.from_state != replay.state:
            return f"it starts from `{rec.from_state}`, the case was in `{replay.state}`"
        at = _moment(rec.at)
        if at is None:
            return f"its time `{rec.at}` is not a time"
        if replay.closed:
            return "the case was closed by its parent case; it takes no more steps"
        if rec.actor == SYSTEM and rec.event == CLOSED_BY_PARENT:
            return _closed_by_parent(replay, rec)
        if rec.event == CANCEL_CASE:
            return self._cancelled(compiled.definition, replay, rec, at)
        if rec.event in (SUSPEND_CASE, RESUME_CASE):
            return self._suspension(compiled.definition, replay, rec, at)
        if replay.suspended is not None:
            return "the case was suspended: it takes no step but resume and cancel"
        if rec.actor == SYSTEM and rec.event in NO_CHANGE_SYSTEM_EVENTS:
            calendar = next((o.calendar for o in self.orgs_at(at) if o is not None), None)
            return _system_note(compiled.definition, replay, rec) or replay.timers.system(
                compiled.definition, rec, at, calendar
            )
        orgs = self.orgs_at(at)
        if not orgs:
            return "no org was deployed when it was taken"
        why = "the org in force then is not intact"
        for org in orgs:
            if org is None:
                continue
            decided = self._decide(compiled, replay, rec, org, at)
            if isinstance(decided, str):
                why = decided
                continue
            step, assignee = decided
            if step is not None:
                mismatch = _differs(step, rec)
            elif rec.to_state != replay.state:
                mismatch = f"a reassignment moves the case to `{rec.to_state}`"
            else:
                mismatch = None
            if mismatch is not None:
                why = mismatch
                continue
            if rec.actor == SYSTEM:
                late = replay.timers.system(compiled.definition, rec, at)
                if late is not None:
                    return late
            left = replay.state
            before = replay.branches
            _fold(replay, rec, step, assignee, org)
            if step is not None:
                entered = (step.to_state,) if rec.seq == 1 and not step.entered else step.entered
                replay.timers.step(
                    compiled.definition,
                    entered,
                    step.moved or rec.seq == 1,
                    left,
                    at,
                    org.calendar,
                    functools.partial(branches.item_deadlines, compiled.definition, step),
                )
                ended = set(branches.ended_deadlines(compiled.definition, step, before))
                if ended:
                    # A branch's deadline ends with its branch (or its state's join), not on entering a state.
                    pending = replay.timers.pending
                    replay.timers.pending = {k: v for k, v in pending.items() if k[1] not in ended}
                    replay.timers.breached -= ended
            return None
        return why

    def _cancelled(
        self, definition: Definition, replay: _Replay, rec: AuditRecord, at: datetime
    ) -> str | None:
        """A case cancelled where it stood: by someone the rules in force then allowed, in the role its
        record names; it changes nothing but `open`, and ends every timer."""
        from sopflow.engine.control import decide_cancel

        if rec.to_state != replay.state or rec.data_change:
            return f"a {CANCEL_CASE} record changes the case (to `{rec.to_state}`)"
        why = "no org was deployed when it was taken"
        for org in self.orgs_at(at):
            if org is None or rec.actor not in org.users:
                why = f"{rec.actor} was not in the org in force then"
                continue
            try:
                role, behalf = decide_cancel(definition, org, self.actor(org, rec.actor, at))
            except Refused as refused:
                why = f"it was not allowed: {refused.error.message}"
                continue
            if (role, behalf) != (rec.role, rec.on_behalf_of):
                why = f"it names the role `{rec.role}`, the cancel was {rec.actor}'s as `{role}`"
                continue
            _closed_by_parent(replay, rec)
            return None
        return why

    def _suspension(
        self, definition: Definition, replay: _Replay, rec: AuditRecord, at: datetime
    ) -> str | None:
        """A suspension or a resumption: by someone the rules in force then allowed, in the role its record
        names; a suspension records what each pending timer had left, and a resumption starts them again."""
        from sopflow.engine.control import decide_control, paused, resumed

        suspending = rec.event == SUSPEND_CASE
        if rec.to_state != replay.state or rec.data_change:
            return f"a {rec.event} record changes the case (to `{rec.to_state}`)"
        if suspending == (replay.suspended is not None):
            return "it suspends a suspended case" if suspending else "it resumes a case not suspended"
        why = "no org was deployed when it was taken"
        for org in self.orgs_at(at):
            if org is None or rec.actor not in org.users:
                why = f"{rec.actor} was not in the org in force then"
                continue
            try:
                role, behalf = decide_control(definition, org, self.actor(org, rec.actor, at), "suspend")
            except Refused as refused:
                why = f"it was not allowed: {refused.error.message}"
                continue
            if (role, behalf) != (rec.role, rec.on_behalf_of):
                why = f"it names the role `{rec.role}`, the step was {rec.actor}'s as `{role}`"
                continue
            if suspending:
                pending = [(k, n, r, due, None) for (k, n, r), due in replay.timers.pending.items()]
                given = paused(definition, pending, at, org.calendar)
                said = [{k: v for k, v in e.items() if k != "seq"} for e in rec.detail.get("paused", [])]
                if canonical_json(given) != canonical_json(said):
                    why = "the time its timers had left is not what its records give"
                    continue
                replay.timers.pending.clear()
                replay.suspended = rec
            else:
                assert replay.suspended is not None
                for spec in resumed(definition, replay.suspended.detail.get("paused", []), at, org.calendar):
                    replay.timers.pending[(spec.kind, spec.name, spec.rung)] = spec.due_at
                replay.suspended = None
            replay.version += 1
            replay.updated_at = rec.at
            return None
        return why

    def _decide(
        self, compiled: CompiledDefinition, replay: _Replay, rec: AuditRecord, org: Org, at: datetime
    ) -> tuple[Step | None, str | None] | str:
        """The step the rules give for `rec` under `org` and the assignee after it (a reassignment has
        no `Step`); or why the rules refuse it."""
        from sopflow.engine import people as people_module

        def least_loaded_of(members: Sequence[str]) -> str | None:
            # The pick among those not passed by (`not_by`) is recorded: it must be one of them.
            recorded = rec.detail.get("assignee")
            return str(recorded) if recorded in members else "\x00not one of them"

        def least_loaded(role: str) -> str | None:
            members = org.members(role)
            recorded = rec.detail.get("assignee", _SOME_MEMBER)
            if recorded in members or (recorded is None and not members):
                return str(recorded) if recorded is not None else None
            return _SOME_MEMBER + role if "assignee" not in rec.detail else "\x00not a member"

        held = rec.detail.get("held")
        wip = rec.detail.get("wip")
        # A claim under a role's wip_limit records what the person held then, a pick on entry what each
        # candidate held: decided again with it.
        open_cases: Callable[[str], int] | None = (lambda _user: int(held)) if isinstance(held, int) else None
        branch_wip = rec.detail.get("branch_wip")
        if isinstance(branch_wip, dict) and isinstance(branch_wip.get("held"), dict):
            # Branches given to the least loaded: decided again from what each person held then.
            wip = {"held": {**(wip or {}).get("held", {}), **branch_wip["held"]}}
        if isinstance(wip, dict) and isinstance(wip.get("held"), dict):
            counts = {str(m): n for m, n in wip["held"].items() if isinstance(n, int)}
            open_cases = lambda user: counts.get(user, 0)  # noqa: E731
        people = People(org, least_loaded, open_cases, least_loaded_of, lists_checked=False)
        recorded = rec.detail.get("assignee")
        if isinstance(recorded, str):
            # A round-robin pick depends on the cases before it: the member recorded is given the turn
            # (it must be one of the role, which `_assignee` then checks by picking the one after it).
            people = replace(people, last_turn=lambda state: _before(org, compiled, state, recorded))
        try:
            if rec.actor == SYSTEM:
                person = SYSTEM_ACTOR
                # A sub-process's resumption answers its child's closing, not a timer: links check it.
                problem = None
                if rec.event != RESUME:
                    problem = _system_cause(compiled.definition, replay, rec, org)
                if problem is not None:
                    return problem
                if rec.event == "reassign":
                    return None, rec.detail.get("to")
            else:
                person = self.actor(org, rec.actor, at)
            if rec.event == "start":
                data = {name: change[1] for name, change in rec.data_change.items()}
                step = start_step(compiled, person, data, people, rec.at)
                return step, step.assignee
            if rec.event == "reassign" and person.id != SYSTEM:
                to = rec.detail.get("to")
                if not isinstance(to, str) or to not in org.users:
                    return f"it reassigns to `{to}`, who is not in the org in force then"
                state = compiled.definition.states[replay.state or ""]
                role = people_module.reassign_role(org, state, person.id, to, replay.assignee)
                if role != rec.role:
                    return f"it names the role `{rec.role}`, the reassignment was {rec.actor}'s as `{role}`"
                return None, to
            step = take_step(compiled, replay.snapshot(rec.at), person, rec.event, rec.payload, people)
            if step.detail.get("stayed") and "stayed" not in rec.detail:
                # Written before a transition back to its own state stayed: it re-entered the state then.
                step = take_step(
                    compiled, replay.snapshot(rec.at), person, rec.event, rec.payload, people, stay=False
                )
        except Refused as refused:
            return f"it was not allowed: {refused.error.message}"
        except SopflowError as exc:
            return f"it was not allowed: {exc.message}"
        return step, step.assignee


class _Tampered(Exception):
    pass


def _before(org: Org, compiled: CompiledDefinition, state: str, recorded: str) -> str | None:
    """The member whose turn came before `recorded` in a round-robin state: the turn then falls to the
    recorded member exactly when they are one of the role (None: the rule gives the first member)."""
    assign = compiled.definition.states[state].assign
    members = org.members(assign.value) if assign is not None else ()
    return members[members.index(recorded) - 1] if recorded in members else None


def _closed_by_parent(replay: _Replay, rec: AuditRecord) -> str | None:
    """A child closed where it stood by its parent: it changes nothing but `open`, and ends every timer
    (that its parent's record did so is checked with the links)."""
    if rec.to_state != replay.state or rec.data_change:
        return f"a {CLOSED_BY_PARENT} record changes the case (to `{rec.to_state}`)"
    replay.closed = True
    replay.version += 1
    replay.updated_at = rec.at
    replay.timers.pending.clear()
    replay.timers.breached.clear()
    return None


def _system_note(definition: Definition, replay: _Replay, rec: AuditRecord) -> str | None:
    """A breach or escalation notice: it changes nothing, and names a deadline of the definition."""
    name = rec.detail.get("deadline")
    if not isinstance(name, str) or deadline_of(definition, name) is None:
        return f"it notes deadline `{name}`, which the definition does not have"
    if rec.to_state != replay.state:
        return f"a {rec.event} record moves the case to `{rec.to_state}`"
    return None


def _system_cause(definition: Definition, replay: _Replay, rec: AuditRecord, org: Org) -> str | None:
    """The system acts only for a timer: a state's timeout, or an escalation rung of a deadline; and it
    starts a case only for a schedule of the definition."""
    if rec.event == "start":
        name = rec.detail.get("schedule")
        if any(s.name == name for s in definition.schedules):
            return None
        return f"the system started the case for a schedule `{name}` the definition does not have"
    state = definition.states.get(replay.state or "")
    if rec.detail.get("timer") == "timeout":
        # An automatic state's work ends in its answer (the timeout's event) or in its error.
        failed = state is not None and state.automatic is not None and rec.event == AUTOMATIC_FAILED
        if state is None or state.timeout is None or (state.timeout.fire != rec.event and not failed):
            return f"the system fired `{rec.event}` for a timeout that `{replay.state}` does not have"
        return None
    deadline = deadline_of(definition, str(rec.detail.get("deadline")))
    rung_number = rec.detail.get("rung")
    if deadline is None or not isinstance(rung_number, int) or not 1 <= rung_number <= len(deadline.escalate):
        return f"the system fired `{rec.event}` without a timer of the definition that fires it"
    rung = deadline.escalate[rung_number - 1]
    if rec.event == "reassign":
        to = rec.detail.get("to")
        if rung.action != "reassign" or (to is not None and to not in org.members(rung.target)):
            return f"the system reassigned to `{to}`, which rung {rung_number} of `{deadline.name}` does not"
        return None
    if rung.action != "fire" or rung.target != rec.event:
        return f"the system fired `{rec.event}`, which rung {rung_number} of `{deadline.name}` does not"
    return None


def _differs(step: Step, rec: AuditRecord) -> str | None:
    """How the record differs from the step the rules give, or None."""
    if step.to_state != rec.to_state:
        return f"it moves to `{rec.to_state}`, the rules give `{step.to_state}`"
    # A start's record names the role only (the runtime never records whom a starter acted for).
    behalf = None if step.event == "start" else step.on_behalf_of
    if (step.role, behalf) != (rec.role, rec.on_behalf_of):
        said = rec.role + (f" for {rec.on_behalf_of}" if rec.on_behalf_of else "") if rec.role else "no role"
        given = step.role + (f" for {behalf}" if behalf else "") if step.role else "none"
        return f"it says {rec.actor} acted as {said}, the rules give {given}"
    if canonical_json(step.data_change) != canonical_json(dict(rec.data_change)):
        return "its data change is not the one the rules give"
    for name, value in step.detail.items():
        if name == "assignee" and name not in rec.detail:
            continue  # written before the load's pick was recorded: `_compare` checks the role instead
        if canonical_json(value) != canonical_json(rec.detail.get(name)):
            return f"its `{name}` is not the one the rules give"
    return None


def _fold(replay: _Replay, rec: AuditRecord, step: Step | None, assignee: str | None, org: Org) -> None:
    """`replay` after the accepted step `rec` (a reassignment when `step` is None)."""
    if step is not None and (step.moved or rec.event == "start"):
        replay.submitter = rec.actor
        replay.entered_seq = rec.seq
        replay.entered_at = rec.at
    if rec.seq == 1:
        replay.starter = rec.actor
        replay.created_at = rec.at
    if step is not None:
        replay.state = step.to_state
        replay.data = step.data
        if rec.event in (APPROVE, REJECT):
            replay.votes.append((rec.seq, StoredVote(rec.actor, rec.role, rec.event, rec.on_behalf_of)))
        if "branches" in step.detail:
            replay.branches = step.detail["branches"]
        if "lingering" in step.detail:
            replay.lingering = step.detail["lingering"]
    replay.assignee = assignee
    replay.version += 1
    replay.updated_at = rec.at


def _compare(
    row: CaseRow,
    definition: Definition,
    replay: _Replay,
    history: Sequence[AuditRecord],
    orgs: Sequence[Org | None],
    live: Sequence[LiveTimer],
) -> VerifyFinding | None:
    """The first column of the case row that its replay does not give."""
    seq = len(history)
    state = definition.states.get(replay.state or "")
    expected: list[tuple[str, Any, Any]] = [
        ("state", row.state, replay.state),
        (
            "open",
            row.open,
            state is not None and not state.final and not replay.closed and replay.suspended is None,
        ),
        ("data", canonical_json(row.data), canonical_json(replay.data)),
        ("starter", row.starter, replay.starter),
        ("submitter", row.submitter, replay.submitter),
        ("version", row.version, replay.version),
        ("entered_seq", row.entered_seq, replay.entered_seq),
        ("entered_at", iso(row.entered_at), replay.entered_at),
        ("created_at", iso(row.created_at), replay.created_at),
        ("updated_at", iso(row.updated_at), replay.updated_at),
    ]
    for column, stored, replayed in expected:
        if stored != replayed:
            return VerifyFinding(
                row.id, seq, f"the case's {column} is {_shown(stored)}, its records give {_shown(replayed)}"
            )
    if replay.assignee is not None and replay.assignee.startswith(_SOME_MEMBER):
        role = replay.assignee[len(_SOME_MEMBER) :]
        if not any(org is not None and row.assignee in org.members(role) for org in orgs):
            return VerifyFinding(row.id, seq, f"the case's assignee {row.assignee} does not hold {role}")
    elif row.assignee != replay.assignee:
        return VerifyFinding(
            row.id,
            seq,
            f"the case's assignee is {_shown(row.assignee)}, its records give {_shown(replay.assignee)}",
        )
    timers = replay.timers.differs(live)
    return None if timers is None else VerifyFinding(row.id, seq, timers)


def _registry_against(anchor: Anchor, stored: Mapping[str, str], orgs: Sequence[str]) -> list[VerifyFinding]:
    found: list[VerifyFinding] = []
    for key, digest in sorted(anchor.definitions.items()):
        if key not in stored:
            found.append(
                VerifyFinding(None, None, f"it is gone: {anchor.label} holds it", f"definition {key}")
            )
        elif stored[key] != digest:
            found.append(
                VerifyFinding(
                    None, None, f"its content hash is not the one {anchor.label} holds", f"definition {key}"
                )
            )
    for i, digest in enumerate(anchor.orgs):
        if i >= len(orgs) or orgs[i] != digest:
            found.append(
                VerifyFinding(
                    None,
                    None,
                    f"it is not the org {anchor.label} holds as deployment {i + 1} (deleted or rewritten)",
                    f"org deployment {i + 1}",
                )
            )
            break
    return found


def _problem(exc: Exception) -> str:
    if isinstance(exc, SopflowError):
        return exc.message
    if isinstance(exc, _Tampered):
        return str(exc)
    return f"its source text cannot be read back ({type(exc).__name__}: {exc})"


def _moment(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _shown(value: Any) -> str:
    return "none" if value is None else f"`{value}`"
