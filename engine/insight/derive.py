"""The derived rows of one case, computed from its audit trail alone: pure, no I/O.

A *visit* of a state runs from the accepted record that entered it to the accepted record that leaves it;
its handling time is the wall-clock time between the two without the time the case was suspended, and its
working time counts only the org calendar's working hours (`engine.calendar.working_seconds`, exactly as
a working-time deadline counts). Every record that acts in a state (an accepted step or a refused attempt)
gives one `StepFact`; every deadline span one `SpanFact`. The store keeps them in `insight_steps` and
`insight_spans`; `sopflow report --check` and `audit verify` compute them again here and compare.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sopflow.engine.audit import AuditRecord
from sopflow.engine.calendar import working_seconds
from sopflow.engine.definition.model import (
    CANCEL_CASE,
    CLOSED_BY_PARENT,
    CONTROL_RECORDS,
    MIGRATE_CASE,
    REJECT,
    RESUME_CASE,
    SUSPEND_CASE,
    Definition,
    WorkingCalendar,
)

KINDS = ("step", "sendback", "rejection", "error", "complaint", "refused", "timer", "control")
"""What a record counts as, most specific first: a refused attempt; an event the definition declares an
error or a complaint (`measures:`); a rejection (the approval `reject`, or an event named `reject…`); the
clock's records; a suspension, resumption or cancel; a send-back (a step back into a state the case first
entered before the one it leaves); any other step."""

TIMER_EVENTS = frozenset({"deadline_breached", "escalate"})
CLOSING_RECORDS = frozenset({CANCEL_CASE, CLOSED_BY_PARENT})

CalendarAt = Callable[[datetime], WorkingCalendar]
"""The org calendar in force at a moment."""


@dataclass(frozen=True, slots=True)
class StepFact:
    """One record acting in a state; a record that ends a visit carries the visit's durations."""

    case_id: int
    seq: int
    definition_id: str
    definition_version: int
    state: str
    event: str
    actor: str
    role: str | None
    accepted: bool
    ends_visit: bool
    kind: str
    at: datetime
    week: str
    month: str
    entered_at: datetime | None = None
    wall_seconds: float | None = None
    working_seconds: float | None = None
    paused_seconds: float | None = None
    score: float | None = None


@dataclass(frozen=True, slots=True)
class SpanFact:
    """One span of a deadline: from entering its `from` state to entering one of its `until` states."""

    case_id: int
    deadline: str
    started_seq: int
    definition_id: str
    definition_version: int
    started_at: datetime
    ended_at: datetime | None
    week: str
    breached: bool
    rung: int


@dataclass(frozen=True, slots=True)
class CaseFacts:
    steps: tuple[StepFact, ...]
    spans: tuple[SpanFact, ...]


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def week_of(at: datetime, zone: str) -> str:
    """The Monday (ISO date) of the week `at` falls in, in the calendar's time zone."""
    day: date = at.astimezone(ZoneInfo(zone)).date()
    return (day - timedelta(days=day.weekday())).isoformat()


def month_of(at: datetime, zone: str) -> str:
    return at.astimezone(ZoneInfo(zone)).strftime("%Y-%m")


@dataclass(slots=True)
class _Span:
    started_seq: int
    started_at: datetime
    breached: bool = False
    rung: int = 0


def derive(definition: Definition, history: Sequence[AuditRecord], calendar_at: CalendarAt) -> CaseFacts:
    """The facts of one case (`history` in order, from its first record)."""
    measures = definition.measures
    errors = frozenset(measures.errors) if measures else frozenset()
    complaints = frozenset(measures.complaints) if measures else frozenset()
    score_field = measures.satisfaction_field if measures else None
    steps: list[StepFact] = []
    visited: dict[str, int] = {}
    """State → the order in which the case first entered it."""
    entered: datetime | None = None
    paused_since: datetime | None = None
    pauses: list[tuple[datetime, datetime]] = []
    running: dict[str, _Span] = {}
    spans: list[SpanFact] = []
    case_id = history[0].case_id if history else 0
    version = definition.version

    def close_span(name: str, at: datetime | None) -> None:
        span = running.pop(name)
        zone = calendar_at(span.started_at).timezone
        spans.append(
            SpanFact(
                case_id, name, span.started_seq, definition.id, version, span.started_at, at,
                week_of(span.started_at, zone), span.breached, span.rung,
            )
        )  # fmt: skip

    for rec in history:
        at = moment(rec.at)
        accepted = rec.outcome == "accepted"
        if rec.from_state is None:  # the start
            if accepted and rec.to_state is not None:
                entered = at
                visited.setdefault(rec.to_state, len(visited))
                _enter_spans(definition, rec, at, running, close_span)
            continue
        if accepted and rec.event == SUSPEND_CASE:
            paused_since = at
        elif accepted and rec.event == RESUME_CASE and paused_since is not None:
            pauses.append((paused_since, at))
            paused_since = None
        if accepted and rec.event in TIMER_EVENTS:
            _mark_breach(rec, running)
        # A cancel (or a parent closing its child) closes the case where it stands: it ends the visit too.
        closes = accepted and rec.event in CLOSING_RECORDS
        moves = accepted and rec.to_state is not None and (rec.to_state != rec.from_state or closes)
        moves = moves and not _migration(rec, accepted, visited)
        calendar = calendar_at(at)
        fact = StepFact(
            case_id=rec.case_id,
            seq=rec.seq,
            definition_id=definition.id,
            definition_version=version,
            state=rec.from_state,
            event=rec.event,
            actor=rec.actor,
            role=rec.role,
            accepted=accepted,
            ends_visit=moves,
            kind=_kind(rec, accepted, moves, visited, errors, complaints),
            at=at,
            week=week_of(at, calendar.timezone),
            month=month_of(at, calendar.timezone),
            score=_score(rec, score_field) if accepted else None,
        )
        if moves and entered is not None:
            if paused_since is not None:  # a case cancelled while suspended
                pauses.append((paused_since, at))
                paused_since = None
            fact = _with_durations(fact, entered, at, pauses, calendar)
            entered, pauses = at, []
            assert rec.to_state is not None
            visited.setdefault(rec.to_state, len(visited))
            _enter_spans(definition, rec, at, running, close_span)
        steps.append(fact)
    for name in list(running):
        close_span(name, None)
    return CaseFacts(tuple(steps), tuple(sorted(spans, key=lambda s: (s.deadline, s.started_seq))))


def _migration(rec: AuditRecord, accepted: bool, visited: dict[str, int]) -> bool:
    """Whether `rec` is a migration: it renames the state the work goes on in and handles nothing, so the
    visit keeps its start (and the new name its place in the order of first visits) and its actor is
    credited with no work."""
    if not accepted or rec.event != MIGRATE_CASE:
        return False
    if rec.to_state is not None and rec.from_state in visited:
        visited.setdefault(rec.to_state, visited[rec.from_state])
    return True


def _with_durations(
    fact: StepFact,
    entered: datetime,
    at: datetime,
    pauses: Sequence[tuple[datetime, datetime]],
    calendar: WorkingCalendar,
) -> StepFact:
    """The fact with the visit's durations: from `entered` to `at`, less the suspensions in it."""
    paused = sum((min(e, at) - max(s, entered)).total_seconds() for s, e in pauses if e > entered)
    paused_working = sum(
        working_seconds(max(s, entered), min(e, at), calendar) for s, e in pauses if e > entered
    )
    wall = (at - entered).total_seconds() - paused
    working = working_seconds(entered, at, calendar) - paused_working
    return StepFact(
        fact.case_id, fact.seq, fact.definition_id, fact.definition_version, fact.state, fact.event,
        fact.actor, fact.role, fact.accepted, fact.ends_visit, fact.kind, fact.at, fact.week, fact.month,
        entered, round(wall, 6), round(working, 6), round(paused, 6), fact.score,
    )  # fmt: skip


def _kind(
    rec: AuditRecord,
    accepted: bool,
    moves: bool,
    visited: dict[str, int],
    errors: frozenset[str],
    complaints: frozenset[str],
) -> str:
    if not accepted:
        return "refused"
    if rec.event in errors:
        return "error"
    if rec.event in complaints:
        return "complaint"
    if rec.event == REJECT or rec.event.startswith("reject"):
        return "rejection"
    if rec.event in TIMER_EVENTS:
        return "timer"
    if rec.event in CONTROL_RECORDS:
        return "control"
    if moves and rec.to_state in visited and visited[rec.to_state] < visited.get(rec.from_state or "", -1):
        return "sendback"
    return "step"


def _score(rec: AuditRecord, field: str | None) -> float | None:
    if field is None or field not in rec.data_change:
        return None
    change = rec.data_change[field]
    new = change[1] if isinstance(change, (list, tuple)) and len(change) == 2 else None
    if isinstance(new, bool) or not isinstance(new, (int, float)):
        return None
    return float(new)


def _mark_breach(rec: AuditRecord, running: dict[str, _Span]) -> None:
    name = rec.detail.get("deadline")
    if not isinstance(name, str) or name not in running:
        return
    span = running[name]
    span.breached = True
    rung = rec.detail.get("rung")
    if rec.event == "escalate" and isinstance(rung, int) and not isinstance(rung, bool):
        span.rung = max(span.rung, rung)


def _enter_spans(
    definition: Definition,
    rec: AuditRecord,
    at: datetime,
    running: dict[str, _Span],
    close_span: Callable[[str, datetime | None], None],
) -> None:
    """Entering `rec.to_state`: it ends the spans it is an `until` of and starts the deadlines whose `from`
    it is (again, for a deadline that restarts on re-entry)."""
    target = rec.to_state
    for deadline in definition.deadlines:
        if deadline.name in running and target in deadline.until:
            close_span(deadline.name, at)
        if target == deadline.start:
            if deadline.name in running and deadline.restart == "on_reentry":
                close_span(deadline.name, at)
            if deadline.name not in running:
                running[deadline.name] = _Span(rec.seq, at)
