"""The report a manager reads, as typed values: per process, its cycle time, per step (or person, role,
version, week) its handling time and what went wrong, deadlines kept, errors and satisfaction per month,
workload, the open backlog by age and the flow of cases per week.

Every figure is aggregated in the database (`engine/store/insight.py`); here the rows become values, a
baseline is set beside each step's median, and the few small sums a chart needs are added up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sopflow.engine.definition.model import Definition
from sopflow.engine.errors import UsageError
from sopflow.engine.store import insight as sql

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine

BY = ("step", "person", "role", "version", "week")
"""What `report --by` groups the step figures by."""

AGES = (("< 4h", timedelta(hours=4)), ("4h–1d", timedelta(days=1)), ("1–3d", timedelta(days=3)),
        ("3–7d", timedelta(days=7)))  # fmt: skip
"""The backlog's age bands, by time since the case started; older ones fall in "> 7d"."""

PROCESS = ""
"""The step name a baseline of the whole process (its cycle time) is kept under."""


@dataclass(frozen=True, slots=True)
class Figures:
    """A distribution of durations in seconds: wall-clock handling time (suspensions left out) and
    working time in the org's calendar. Percentiles are nearest-rank."""

    count: int
    mean: float | None
    median: float | None
    p90: float | None
    max: float | None
    working_mean: float | None
    working_median: float | None
    working_p90: float | None
    working_max: float | None


@dataclass(frozen=True, slots=True)
class StepFigure:
    """One group's figures: a step (or person, role, version, week), with the baseline of a step."""

    key: str
    times: Figures
    records: int
    refused: int
    sendbacks: int
    rejections: int
    errors: int
    complaints: int
    baseline: float | None = None
    """The current baseline of the median handling time, seconds."""
    baseline_source: str | None = None
    change: float | None = None
    """(median − baseline) / baseline: −0.2 is 20 % faster than the baseline."""
    flagged: bool = False
    """Worse than the baseline by more than the definition's threshold."""


@dataclass(frozen=True, slots=True)
class DeadlineFigure:
    deadline: str
    spans: int
    ended: int
    met: int
    breached: int
    compliance: float | None
    """met / (ended + breached and still running): the share kept."""
    rungs: tuple[int, int, int]
    """Breaches whose highest escalation rung was 1, 2, 3 or more."""


@dataclass(frozen=True, slots=True)
class WeekCompliance:
    deadline: str
    week: str
    spans: int
    met: int
    compliance: float | None


@dataclass(frozen=True, slots=True)
class MonthFigure:
    month: str
    cases: int
    errors: int
    error_rate: float
    """Errors per case that had a record that month."""
    complaints: int
    scores: int
    satisfaction: float | None
    """CSAT (% of 4 and 5) or NPS (% promoters − % detractors), of the scores given that month."""


@dataclass(frozen=True, slots=True)
class Workload:
    who: str
    open: int
    done: int
    median_working: float | None
    time_put_in: float
    """Working seconds of the visits this person (role) ended."""


@dataclass(frozen=True, slots=True)
class Backlog:
    state: str
    open: int
    ages: tuple[int, ...]
    """Open cases per band of `AGES`, then older."""


@dataclass(frozen=True, slots=True)
class FlowPoint:
    week: str
    state: str
    cumulative: int
    """Visits of `state` ended up to and including `week`."""


@dataclass(frozen=True, slots=True)
class ProcessReport:
    definition_id: str
    title: str
    by: str
    cycle: Figures | None
    """Cycle time of the cases closed in the period."""
    cycle_baseline: float | None
    steps: tuple[StepFigure, ...]
    deadlines: tuple[DeadlineFigure, ...]
    weeks: tuple[WeekCompliance, ...]
    months: tuple[MonthFigure, ...]
    satisfaction_scale: str | None
    people: tuple[Workload, ...]
    roles: tuple[Workload, ...]
    backlog: tuple[Backlog, ...]
    flow: tuple[FlowPoint, ...]
    threshold: float
    states: tuple[tuple[str, str], ...]
    """(state, title) in the definition's order: what the charts draw."""
    edges: tuple[tuple[str, str], ...]
    """(from, to) of every transition, for the flow chart."""

    @property
    def flagged(self) -> tuple[StepFigure, ...]:
        return tuple(s for s in self.steps if s.flagged)


@dataclass(frozen=True, slots=True)
class Report:
    generated_at: datetime
    since: datetime | None
    until: datetime | None
    viewer: str | None
    processes: tuple[ProcessReport, ...]

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["generated_at"] = self.generated_at.isoformat()
        found["since"] = None if self.since is None else self.since.isoformat()
        found["until"] = None if self.until is None else self.until.isoformat()
        for process, plain in zip(self.processes, found["processes"], strict=True):
            plain["flagged"] = [s.key for s in process.flagged]
        return found


def check_period(since: datetime | None, until: datetime | None) -> None:
    """Refuse a period that ends before it starts (an empty window would read as "nothing happened")."""
    if since is not None and until is not None and since >= until:
        raise UsageError("--since is not before --until", hint="give a period that starts before it ends")


def build(
    engine: Engine,
    definition_id: str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    by: str = "step",
    viewer: str | None = None,
    versions: Sequence[int] = (),
) -> Report:
    """The report of one definition (or of each that has records), from the derived tables brought up to
    date first."""
    if by not in BY:
        raise UsageError(f"--by {by} is not a grouping", hint=f"use one of: {', '.join(BY)}")
    check_period(since, until)
    from sopflow.engine.insight.refresh import refresh

    if definition_id is not None:
        engine.definition(definition_id)  # NotFound names it
    refresh(engine, definition_id)
    ids = [definition_id] if definition_id is not None else sql.definitions_with_facts(engine.store)
    now = engine.clock()
    visible = _visible(engine, viewer)
    excluded = sql.orphan_ids(engine.store)
    processes = tuple(
        process_report(
            engine, d, since=since, until=until, by=by, now=now, versions=versions, visible=visible,
            person=_people_as(engine, viewer, d), excluded=excluded,
        )
        for d in ids
    )  # fmt: skip
    return Report(now, since, until, viewer, processes)


def _visible(engine: Engine, viewer: str | None) -> Any:
    """The condition on `cases` admitting what `viewer` may view (engine.access), None for everything."""
    if viewer is None:
        return None
    from sopflow.engine import access

    if access.scope(engine, viewer, "view") is None:
        return None
    return access.viewer_filter(engine, viewer)


def figures_visible(engine: Engine, viewer: str | None, definition_id: str) -> Any:
    """For figures of one definition (`compare`, `trial status`): the condition admitting the cases of it
    `viewer` may view (None: all). A person whose grants reach none of its cases is refused as the
    permission matrix refuses, and the refusal is logged; a desensitised view gets the figures (they are
    aggregates and name no person)."""
    visible = _visible(engine, viewer)
    if visible is None:
        return None
    from sopflow.engine import access

    found = access.scope(engine, viewer, "view")
    if found is not None and not any(
        p.definitions is None or definition_id in p.definitions for p in found.parts
    ):
        assert viewer is not None
        raise access.refused(
            engine,
            access.AccessDenied(
                f"{viewer} may not read the figures of `{definition_id}`: the permission matrix grants "
                "them no view of its cases",
                viewer,
                "view",
                f"definition {definition_id}",
                hint="ask an administrator, or the owner of the org file, for a view grant",
            ),
        )
    return visible


def _people_as(engine: Engine, viewer: str | None, definition_id: str) -> Callable[[str], str] | None:
    """How people are named to `viewer` in the figures of `definition_id`: None (by their ids) unless some
    of its cases reach them only desensitised; then as the tokens an export with the deployment's privacy
    key gives them, so that an analyst can still join a report to an export."""
    if viewer is None:
        return None
    from sopflow.engine import access

    found = access.scope(engine, viewer, "view")
    if found is None or not any(
        p.desensitised and (p.definitions is None or definition_id in p.definitions) for p in found.parts
    ):
        return None
    desensitiser = access.desensitiser(engine)

    def token(user_id: str) -> str:
        return desensitiser.person(user_id) or user_id

    return token


def _figures(d: sql.Distribution | None) -> Figures | None:
    if d is None:
        return None
    return Figures(
        d.count, d.mean, d.median, d.p90, d.max, d.working_mean, d.working_median, d.working_p90,
        d.working_max,
    )  # fmt: skip


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def process_report(
    engine: Engine,
    definition_id: str,
    *,
    since: datetime | None,
    until: datetime | None,
    by: str,
    now: datetime,
    versions: Sequence[int] = (),
    visible: Any = None,
    person: Callable[[str], str] | None = None,
    excluded: tuple[int, ...] = (),
) -> ProcessReport:
    from sopflow.engine.insight.baseline import current

    definition = engine.definition(definition_id)
    scope = sql.Scope(definition_id, since, until, tuple(versions), visible, excluded)
    store = engine.store
    measures = definition.measures
    threshold = measures.threshold if measures else 0.1
    baselines = current(engine, definition_id)
    times = {d.key: d for d in sql.durations(store, scope, by)}
    steps = []
    for c in sql.counts(store, scope, by):
        key = "" if c.key is None else str(c.key)
        if person is not None and by == "person":
            key = person(key)
        figures = _figures(times.get(c.key)) or Figures(0, *([None] * 8))
        base = baselines.get(key) if by == "step" else None
        if base is not None and not math.isfinite(base.seconds):  # a row from before the range check
            base = None
        change = (
            (figures.median - base.seconds) / base.seconds
            if base is not None and figures.median is not None and base.seconds > 0
            else None
        )
        steps.append(
            StepFigure(
                key, figures, c.records, c.refused, c.sendbacks, c.rejections, c.errors, c.complaints,
                None if base is None else base.seconds, None if base is None else base.source, change,
                change is not None and change > threshold,
            )
        )  # fmt: skip
    if by == "step":
        order = {name: i for i, name in enumerate(s.name for s in definition.all_states())}
        steps.sort(key=lambda s: order.get(s.key, len(order)))
    cycle = sql.cycle_times(store, scope)
    return ProcessReport(
        definition_id=definition_id,
        title=str(definition.title),
        by=by,
        cycle=_figures(cycle[0]) if cycle else None,
        cycle_baseline=baselines[PROCESS].seconds
        if PROCESS in baselines and math.isfinite(baselines[PROCESS].seconds)
        else None,
        steps=tuple(steps),
        deadlines=tuple(
            DeadlineFigure(
                str(r[0]),
                int(r[1]),
                int(r[2] or 0),
                int(r[3] or 0),
                int(r[4] or 0),
                _ratio(int(r[3] or 0), int(r[2] or 0) + _running_breaches(r)),
                (int(r[5] or 0), int(r[6] or 0), int(r[7] or 0)),
            )
            for r in sql.sla(store, scope)
        ),
        weeks=tuple(
            WeekCompliance(
                str(r[0]),
                str(r[1]),
                int(r[2]),
                int(r[4] or 0),
                _ratio(int(r[4] or 0), int(r[3] or 0) + _running_breaches(r[1:])),
            )
            for r in sql.sla(store, scope, by_week=True)
        ),
        months=_months(engine, definition, scope),
        satisfaction_scale=measures.satisfaction_scale if measures and measures.satisfaction_field else None,
        people=_people(engine, scope, now, person),
        roles=_roles(engine, definition, scope, now),
        backlog=_backlog(engine, scope, now),
        flow=_flow(engine, scope),
        threshold=threshold,
        states=tuple((s.name, str(s.title)) for s in definition.all_states()),
        edges=_edges(definition),
    )


def _edges(definition: Definition) -> tuple[tuple[str, str], ...]:
    """Every way from one state to another: events, a choice's branches, an approval's outcomes, a
    sub-process's outcomes and a parallel state's join."""
    found: list[tuple[str, str]] = []
    for s in definition.states.values():
        found += [(s.name, t.target) for t in s.transitions if t.target]
        found += [(s.name, b.target) for b in s.choice]
        if s.approval is not None:
            found += [(s.name, s.approval.approved), (s.name, s.approval.rejected)]
        if s.subprocess is not None:
            found += [(s.name, target) for target in s.subprocess.on.values()]
        if s.parallel is not None:
            found.append((s.name, s.parallel.then))
    return tuple(dict.fromkeys(found))


def _running_breaches(row: Sequence[Any]) -> int:
    """Breached spans still running: breached − (ended − met)."""
    ended, met, breached = int(row[2] or 0), int(row[3] or 0), int(row[4] or 0)
    return max(0, breached - (ended - met))


def _months(engine: Engine, definition: Definition, scope: sql.Scope) -> tuple[MonthFigure, ...]:
    measures = definition.measures
    nps = measures is not None and measures.satisfaction_scale == "nps"
    low, high = (6.0, 9.0) if nps else (-1e9, 4.0)
    found = []
    for month, cases, errors, complaints, scores, top, bottom in sql.monthly(engine.store, scope, low, high):
        n = int(scores or 0)
        score: float | None = None
        if n:
            score = 100 * (int(top or 0) - (int(bottom or 0) if nps else 0)) / n
        found.append(
            MonthFigure(
                str(month), int(cases), int(errors or 0), int(errors or 0) / int(cases) if cases else 0.0,
                int(complaints or 0), n, score,
            )
        )  # fmt: skip
    return tuple(found)


def _open(engine: Engine, scope: sql.Scope, now: datetime) -> list[tuple[Any, ...]]:
    return sql.open_cases(engine.store, scope, [now - age for _label, age in AGES])


def _people(
    engine: Engine, scope: sql.Scope, now: datetime, person: Callable[[str], str] | None = None
) -> tuple[Workload, ...]:
    name = person or str
    done = {
        name(str(k)): (n, median, total)
        for k, n, median, total in sql.workload_times(engine.store, scope, "person")
    }
    open_: dict[str, int] = {}
    for row in _open(engine, scope, now):
        if row[1] is not None:
            who = name(str(row[1]))
            open_[who] = open_.get(who, 0) + int(row[2])
    return _workload(open_, done, set())


def _roles(engine: Engine, definition: Definition, scope: sql.Scope, now: datetime) -> tuple[Workload, ...]:
    rows = sql.workload_times(engine.store, scope, "role")
    done = {str(k): (n, median, total) for k, n, median, total in rows if k is not None}
    owner = {s.name: s.owner for s in definition.all_states() if s.owner}
    open_: dict[str, int] = {}
    for row in _open(engine, scope, now):
        role = owner.get(str(row[0]))
        if role is not None:
            open_[role] = open_.get(role, 0) + int(row[2])
    return _workload(open_, done, {"$assignee", "$starter", "$system"})


def _workload(
    open_: dict[str, int], done: dict[str, tuple[int, float | None, float]], leave_out: set[str]
) -> tuple[Workload, ...]:
    empty: tuple[int, float | None, float] = (0, None, 0.0)
    return tuple(
        Workload(who, open_.get(who, 0), *done.get(who, empty))
        for who in sorted((set(open_) | set(done)) - leave_out)
    )


def _backlog(engine: Engine, scope: sql.Scope, now: datetime) -> tuple[Backlog, ...]:
    per_state: dict[str, list[int]] = {}
    for row in _open(engine, scope, now):
        total = int(row[2])
        within = [int(v or 0) for v in row[3:]]
        bands = [within[0]] + [within[i] - within[i - 1] for i in range(1, len(within))]
        bands.append(total - within[-1])
        sums = per_state.setdefault(str(row[0]), [0] * (len(AGES) + 2))
        sums[0] += total
        for i, n in enumerate(bands):
            sums[i + 1] += n
    return tuple(Backlog(state, v[0], tuple(v[1:])) for state, v in sorted(per_state.items()))


def _flow(engine: Engine, scope: sql.Scope) -> tuple[FlowPoint, ...]:
    rows = sql.flow(engine.store, scope)
    weeks = sorted({w for w, _s, _n in rows})
    states = sorted({s for _w, s, _n in rows})
    per: Mapping[tuple[str, str], int] = {(w, s): n for w, s, n in rows}
    found: list[FlowPoint] = []
    for state in states:
        total = 0
        for week in weeks:
            total += per.get((week, state), 0)
            found.append(FlowPoint(week, state, total))
    return tuple(found)
