"""The SQL of the reports: the derived tables written from the trail, and every figure aggregated in the
database (`engine/insight` turns the rows into a report).

Percentiles are nearest-rank, computed with `row_number()` and `count()` windows partitioned by the group
(both SQLite and PostgreSQL have them): the median of n values is the one ranked ⌈n/2⌉, p90 the one ranked
⌈0.9 n⌉. Nothing here reads a case's rows into Python to aggregate them: each function returns one row per
group.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, case, delete, func, insert, literal, or_, select
from sqlalchemy.exc import IntegrityError

from sopflow.engine.audit import GENESIS, canonical_json, iso
from sopflow.engine.store.tables import (
    cases,
    insight_baselines,
    insight_progress,
    insight_spans,
    insight_steps,
)

if TYPE_CHECKING:
    from sopflow.engine.store.store import Store

_ATTEMPTS = 20
"""How often a baseline write that lost a race for the chain's head is tried again."""

DERIVE_LOCK = 0x736F70_696E7369
"""The PostgreSQL advisory lock a write of derived rows holds for its transaction."""

S = insight_steps.c
SP = insight_spans.c

GROUPS = {
    "step": S.state,
    "person": S.actor,
    "role": S.role,
    "version": S.definition_version,
    "week": S.week,
    "month": S.month,
}
"""What `--by` groups the step figures by."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Which records a figure covers: one definition, optionally some versions, `since` ≤ at < `until`,
    and only cases the viewer may see (`cases_visible`, a condition on `cases`, or None for all)."""

    definition_id: str
    since: datetime | None = None
    until: datetime | None = None
    versions: tuple[int, ...] = ()
    cases_visible: Any = None
    excluded: tuple[int, ...] = ()
    """Case ids whose derived rows no case explains (`orphan_ids`): never counted."""


@dataclass(frozen=True, slots=True)
class Distribution:
    key: Any
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
class Counts:
    key: Any
    records: int
    refused: int
    sendbacks: int
    rejections: int
    errors: int
    complaints: int
    cases: int


@dataclass(frozen=True, slots=True)
class BaselineRow:
    id: int
    definition_id: str
    step: str
    seconds: float
    kind: str
    source: str
    period: str | None
    created_at: datetime
    created_by: str
    prev_hash: str = ""
    hash: str = ""

    def body(self) -> dict[str, Any]:
        """What its hash covers: every column but `id` (its place is its link) and `hash`, `created_at` in
        the audit trail's format."""
        return {
            "definition_id": self.definition_id, "step": self.step, "seconds": self.seconds,
            "kind": self.kind, "source": self.source, "period": self.period,
            "created_at": iso(self.created_at), "created_by": self.created_by, "prev_hash": self.prev_hash,
        }  # fmt: skip


def baseline_hash(body: dict[str, Any]) -> str:
    """The SHA-256 of a baseline's body in canonical JSON: its link in the chain of baselines."""
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def baseline_findings(rows: Sequence[BaselineRow]) -> list[tuple[int, str]]:
    """(id, what is wrong) for each baseline whose content or link breaks the chain (oldest first)."""
    found: list[tuple[int, str]] = []
    expected = GENESIS
    for row in rows:
        if row.prev_hash != expected:
            found.append((row.id, "its link to the baseline before does not match: one before was removed"))
        elif baseline_hash(row.body()) != row.hash:
            found.append((row.id, "its content does not match its hash: it was changed after it was kept"))
        expected = row.hash
    return found


# -- the derived tables ----------------------------------------------------------------------------------


def stale_cases(store: Store, limit: int, definition_id: str | None = None) -> list[int]:
    """Cases whose trail has records the derived tables do not hold yet (at most `limit`)."""
    p = insight_progress.c
    query = (
        select(cases.c.id)
        .select_from(cases.outerjoin(insight_progress, p.case_id == cases.c.id))
        .where(or_(p.seq.is_(None), p.seq < cases.c.audit_seq))
        .order_by(cases.c.id)
        .limit(limit)
    )
    if definition_id is not None:
        query = query.where(cases.c.definition_id == definition_id)
    with store._read() as conn:
        return [int(i) for i in conn.execute(query).scalars()]


def replace_derived(
    store: Store,
    case_ids: Sequence[int],
    steps: Iterable[Any],
    spans: Iterable[Any],
    progress: dict[int, int],
) -> bool:
    """Write the derived rows of `case_ids` (dataclasses with the tables' columns), replacing what they
    held, and how far each case is derived: one transaction. False when another reader wrote them first."""
    ids = list(case_ids)
    step_rows = [asdict(s) for s in steps]
    span_rows = [asdict(s) for s in spans]
    try:
        _replace(store, ids, step_rows, span_rows, progress)
    except IntegrityError:
        # Another reader derived the same cases at the same moment (PostgreSQL): its rows are the same.
        return False
    return True


def _replace(
    store: Store,
    ids: list[int],
    step_rows: list[dict[str, Any]],
    span_rows: list[dict[str, Any]],
    progress: dict[int, int],
) -> None:
    with store._write() as conn, conn.begin():
        if store.dialect == "postgresql":
            # Two readers deriving the same cases at once take turns (SQLite's write lock does this): the
            # second replaces the first's rows instead of colliding with them mid-insert.
            conn.execute(select(func.pg_advisory_xact_lock(DERIVE_LOCK)))
        conn.execute(delete(insight_steps).where(S.case_id.in_(ids)))
        conn.execute(delete(insight_spans).where(SP.case_id.in_(ids)))
        conn.execute(delete(insight_progress).where(insight_progress.c.case_id.in_(ids)))
        if step_rows:
            conn.execute(insert(insight_steps), step_rows)
        if span_rows:
            conn.execute(insert(insight_spans), span_rows)
        if progress:
            conn.execute(insert(insight_progress), [{"case_id": c, "seq": s} for c, s in progress.items()])


def derived_of(store: Store, case_ids: Sequence[int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The stored derived rows of some cases, as column → value, ordered as `derive` gives them."""
    ids = list(case_ids)
    with store._read() as conn:
        steps = [dict(r._mapping) for r in conn.execute(select(insight_steps).where(S.case_id.in_(ids)))]
        spans = [dict(r._mapping) for r in conn.execute(select(insight_spans).where(SP.case_id.in_(ids)))]
    steps.sort(key=lambda r: (r["case_id"], r["seq"]))
    spans.sort(key=lambda r: (r["case_id"], r["deadline"], r["started_seq"]))
    return steps, spans


def derived_case_ids(store: Store, after: int, limit: int) -> list[int]:
    """Ids of the cases the derived tables have been brought up to date for, by id."""
    p = insight_progress.c
    query = select(p.case_id).where(p.case_id > after).order_by(p.case_id).limit(limit)
    with store._read() as conn:
        return [int(i) for i in conn.execute(query).scalars()]


def orphans(store: Store) -> list[tuple[int, str]]:
    """(case id, what is wrong) for derived rows no case explains: of a case that does not exist, or of
    one never derived (no row in insight_progress), in either derived table."""
    p = insight_progress.c
    found: dict[int, str] = {}
    with store._read() as conn:
        for table in (insight_steps, insight_spans):
            ids = select(table.c.case_id).distinct().subquery()
            query = (
                select(ids.c.case_id, cases.c.id, p.case_id)
                .select_from(
                    ids.outerjoin(cases, cases.c.id == ids.c.case_id).outerjoin(
                        insight_progress, p.case_id == ids.c.case_id
                    )
                )
                .where(or_(cases.c.id.is_(None), p.case_id.is_(None)))
            )
            for cid, case_id, _derived in conn.execute(query):
                found.setdefault(
                    int(cid),
                    f"{table.name} holds rows of a case that does not exist"
                    if case_id is None
                    else f"{table.name} holds rows sopflow never derived from its trail",
                )
    return sorted(found.items())


def orphan_ids(store: Store) -> tuple[int, ...]:
    """The case ids of derived rows that no derived case explains (see `orphans`), found with one anti-join
    per table on the primary keys: what every figure leaves out."""
    p = insight_progress.c
    derived = select(p.case_id).join(cases, cases.c.id == p.case_id)
    found: set[int] = set()
    with store._read() as conn:
        for table in (insight_steps, insight_spans):
            query = select(table.c.case_id).distinct().where(table.c.case_id.not_in(derived))
            found.update(int(i) for i in conn.execute(query).scalars())
    return tuple(sorted(found))


def progress_of(store: Store, case_ids: Sequence[int]) -> dict[int, int]:
    p = insight_progress.c
    with store._read() as conn:
        rows = conn.execute(select(p.case_id, p.seq).where(p.case_id.in_(list(case_ids))))
        return {int(r.case_id): int(r.seq) for r in rows}


# -- figures ---------------------------------------------------------------------------------------------


def _where(scope: Scope, at: Any, definition: Any, version: Any, case_id: Any) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = [definition == scope.definition_id]
    if scope.excluded:  # a derived row no case explains never counts (`audit verify` names it)
        found.append(case_id.not_in(scope.excluded))
    if scope.since is not None:
        found.append(at >= scope.since)
    if scope.until is not None:
        found.append(at < scope.until)
    if scope.versions:
        found.append(version.in_(scope.versions))
    if scope.cases_visible is not None:
        found.append(case_id.in_(select(cases.c.id).where(scope.cases_visible)))
    return found


def _steps_where(scope: Scope) -> list[ColumnElement[bool]]:
    return _where(scope, S.at, S.definition_id, S.definition_version, S.case_id)


def _distribution(store: Store, source: Any) -> list[Distribution]:
    """Count, mean, median, p90 and max of `source.w` (wall) and `source.x` (working) per `source.k`."""
    ranked = select(
        source.c.k,
        source.c.w,
        source.c.x,
        func.row_number().over(partition_by=source.c.k, order_by=source.c.w).label("rw"),
        func.row_number().over(partition_by=source.c.k, order_by=source.c.x).label("rx"),
        func.count().over(partition_by=source.c.k).label("n"),
    ).subquery()
    r = ranked.c
    half = (r.n + 1) // 2
    ninety = (r.n * 9 + 9) // 10
    query = (
        select(
            r.k,
            func.max(r.n),
            func.avg(r.w),
            func.max(case((r.rw == half, r.w))),
            func.max(case((r.rw == ninety, r.w))),
            func.max(r.w),
            func.avg(r.x),
            func.max(case((r.rx == half, r.x))),
            func.max(case((r.rx == ninety, r.x))),
            func.max(r.x),
        )
        .group_by(r.k)
        .order_by(r.k)
    )
    with store._read() as conn:
        return [
            Distribution(row[0], int(row[1]), *(None if v is None else float(v) for v in row[2:]))
            for row in conn.execute(query)
        ]


def durations(store: Store, scope: Scope, by: str) -> list[Distribution]:
    """Handling time of the visits that ended in the scope, per group (`GROUPS`)."""
    source = (
        select(GROUPS[by].label("k"), S.wall_seconds.label("w"), S.working_seconds.label("x"))
        .where(S.ends_visit.is_(True), *_steps_where(scope))
        .subquery()
    )
    return _distribution(store, source)


def workload_times(store: Store, scope: Scope, by: str) -> list[tuple[Any, int, float | None, float]]:
    """(person or role, visits ended, median working time, working time in all) per `by` ("person",
    "role"): one window ordered by working time, half the work of `durations`."""
    source = (
        select(GROUPS[by].label("k"), S.working_seconds.label("x"))
        .where(S.ends_visit.is_(True), *_steps_where(scope))
        .subquery()
    )
    ranked = select(
        source.c.k,
        source.c.x,
        func.row_number().over(partition_by=source.c.k, order_by=source.c.x).label("rx"),
        func.count().over(partition_by=source.c.k).label("n"),
    ).subquery()
    r = ranked.c
    query = (
        select(r.k, func.max(r.n), func.max(case((r.rx == (r.n + 1) // 2, r.x))), func.sum(r.x))
        .group_by(r.k)
        .order_by(r.k)
    )
    with store._read() as conn:
        return [
            (row[0], int(row[1]), None if row[2] is None else float(row[2]), float(row[3] or 0.0))
            for row in conn.execute(query)
        ]


def cycle_times(store: Store, scope: Scope, by_version: bool = False) -> list[Distribution]:
    """Cycle time of the cases closed in the scope: the sum of their visits (suspensions left out), per
    version (or one row keyed 0), for cases that are closed now and whose last visit ended in the scope."""
    key = S.definition_version if by_version else literal(0)
    per_case = (
        select(
            key.label("k"),
            func.sum(S.wall_seconds).label("w"),
            func.sum(S.working_seconds).label("x"),
        )
        .select_from(insight_steps.join(cases, cases.c.id == S.case_id))
        .where(
            S.ends_visit.is_(True),
            cases.c.open.is_(False),
            *_where(
                Scope(scope.definition_id, None, None, scope.versions, scope.cases_visible, scope.excluded),
                S.at,
                S.definition_id,
                S.definition_version,
                S.case_id,
            ),
        )
        .group_by(S.case_id, key)
    )
    if scope.since is not None:
        per_case = per_case.having(func.max(S.at) >= scope.since)
    if scope.until is not None:
        per_case = per_case.having(func.max(S.at) < scope.until)
    return _distribution(store, per_case.subquery())


def counts(store: Store, scope: Scope, by: str) -> list[Counts]:
    """Records, refused attempts, send-backs, rejections, errors, complaints and cases per group."""
    key = GROUPS[by]

    def n(kind: str) -> Any:
        return func.sum(case((S.kind == kind, 1), else_=0))

    query = (
        select(
            key, func.count(), n("refused"), n("sendback"), n("rejection"), n("error"), n("complaint"),
            func.count(S.case_id.distinct()),
        )
        .where(*_steps_where(scope))
        .group_by(key)
        .order_by(key)
    )  # fmt: skip
    with store._read() as conn:
        return [Counts(r[0], *(int(v or 0) for v in r[1:])) for r in conn.execute(query)]


def sla(store: Store, scope: Scope, by_week: bool = False) -> list[tuple[Any, ...]]:
    """Per deadline (and week its span started): spans, ended, met, breached, and the highest rung
    reached counted per rung (rung 1, 2, 3 and more)."""
    keys: list[Any] = [SP.deadline, SP.week] if by_week else [SP.deadline]
    where = _where(scope, SP.started_at, SP.definition_id, SP.definition_version, SP.case_id)
    query = (
        select(
            *keys,
            func.count(),
            func.sum(case((SP.ended_at.is_not(None), 1), else_=0)),
            func.sum(case((and_(SP.ended_at.is_not(None), SP.breached.is_(False)), 1), else_=0)),
            func.sum(case((SP.breached.is_(True), 1), else_=0)),
            func.sum(case((SP.rung == 1, 1), else_=0)),
            func.sum(case((SP.rung == 2, 1), else_=0)),
            func.sum(case((SP.rung >= 3, 1), else_=0)),
        )
        .where(*where)
        .group_by(*keys)
        .order_by(*keys)
    )
    with store._read() as conn:
        return [tuple(r) for r in conn.execute(query)]


def monthly(store: Store, scope: Scope, low: float, high: float) -> list[tuple[Any, ...]]:
    """Per month: cases with a record, errors, complaints, scores, scores ≥ `high`, scores ≤ `low`."""
    query = (
        select(
            S.month,
            func.count(S.case_id.distinct()),
            func.sum(case((S.kind == "error", 1), else_=0)),
            func.sum(case((S.kind == "complaint", 1), else_=0)),
            func.count(S.score),
            func.sum(case((S.score >= high, 1), else_=0)),
            func.sum(case((S.score <= low, 1), else_=0)),
        )
        .where(*_steps_where(scope))
        .group_by(S.month)
        .order_by(S.month)
    )
    with store._read() as conn:
        return [tuple(r) for r in conn.execute(query)]


def flow(store: Store, scope: Scope) -> list[tuple[str, str, int]]:
    """(week, state, visits of the state that ended that week): what a cumulative-flow chart adds up."""
    query = (
        select(S.week, S.state, func.count())
        .where(S.ends_visit.is_(True), *_steps_where(scope))
        .group_by(S.week, S.state)
        .order_by(S.week, S.state)
    )
    with store._read() as conn:
        return [(str(r[0]), str(r[1]), int(r[2])) for r in conn.execute(query)]


def open_cases(store: Store, scope: Scope, edges: Sequence[datetime]) -> list[tuple[Any, ...]]:
    """Open cases of the definition per (state, assignee), counted by age: created after edges[0], after
    edges[1], ..., and older (one more column)."""
    c = cases.c
    buckets = [func.sum(case((c.created_at > edge, 1), else_=0)) for edge in edges]
    query = (
        select(c.state, c.assignee, func.count(), *buckets)
        .where(c.open.is_(True), c.definition_id == scope.definition_id)
        .group_by(c.state, c.assignee)
        .order_by(c.state, c.assignee)
    )
    if scope.versions:
        query = query.where(c.definition_version.in_(scope.versions))
    if scope.cases_visible is not None:
        query = query.where(scope.cases_visible)
    with store._read() as conn:
        return [tuple(r) for r in conn.execute(query)]


def definitions_with_facts(store: Store) -> list[str]:
    with store._read() as conn:
        query = select(S.definition_id).distinct().order_by(S.definition_id)
        return [str(d) for d in conn.execute(query).scalars()]


def last_moment(store: Store, definition_id: str) -> datetime | None:
    with store._read() as conn:
        found = conn.execute(select(func.max(S.at)).where(S.definition_id == definition_id)).scalar()
        return found if isinstance(found, datetime) else None


# -- baselines -------------------------------------------------------------------------------------------


def add_baselines(store: Store, rows: Sequence[dict[str, Any]]) -> int:
    """Append baselines (never an update), each chained onto the one before (its `prev_hash` is that one's
    `hash`, unique: two writers at once cannot fork the chain, the second tries again); rows of a period
    already recorded are left out. How many were added."""
    for attempt in range(_ATTEMPTS):
        try:
            return _add_baselines(store, rows)
        except IntegrityError:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _add_baselines(store: Store, rows: Sequence[dict[str, Any]]) -> int:
    b = insight_baselines.c
    added = 0
    with store._write() as conn, conn.begin():
        last = conn.execute(select(b.hash).order_by(b.id.desc()).limit(1)).scalar()
        prev = GENESIS if last is None else str(last)
        for row in rows:
            if row.get("period") is not None:
                exists = conn.execute(
                    select(b.id).where(
                        b.definition_id == row["definition_id"], b.step == row["step"],
                        b.kind == row["kind"], b.period == row["period"],
                    )
                ).first()  # fmt: skip
                if exists is not None:
                    continue
            values = {**row, "prev_hash": prev}
            prev = values["hash"] = baseline_hash(BaselineRow(id=0, **values).body())
            conn.execute(insert(insight_baselines).values(**values))
            added += 1
    return added


def baselines(store: Store, definition_id: str | None = None) -> list[BaselineRow]:
    """Every baseline (of one definition), oldest first: the newest per step is the current one."""
    query = select(insight_baselines).order_by(insight_baselines.c.id)
    if definition_id is not None:
        query = query.where(insight_baselines.c.definition_id == definition_id)
    with store._read() as conn:
        return [BaselineRow(**r._mapping) for r in conn.execute(query)]


def case_definitions(store: Store, case_ids: Sequence[int]) -> dict[int, tuple[str, int, int]]:
    """(definition id, version, last record) of each case."""
    c = cases.c
    query = select(c.id, c.definition_id, c.definition_version, c.audit_seq).where(c.id.in_(list(case_ids)))
    with store._read() as conn:
        return {
            int(r.id): (str(r.definition_id), int(r.definition_version), int(r.audit_seq))
            for r in conn.execute(query)
        }


def samples(store: Store, scope: Scope, state: str | None) -> list[float]:
    """The handling times (wall, seconds) of the visits of `state` in the scope, or with None the cycle
    times of its closed cases: what a two-sample test compares."""
    if state is not None:
        query = select(S.wall_seconds).where(S.ends_visit.is_(True), S.state == state, *_steps_where(scope))
    else:
        query = (
            select(func.sum(S.wall_seconds))
            .select_from(insight_steps.join(cases, cases.c.id == S.case_id))
            .where(S.ends_visit.is_(True), cases.c.open.is_(False), *_steps_where(scope))
            .group_by(S.case_id)
        )
    with store._read() as conn:
        return [float(v) for v in conn.execute(query).scalars() if v is not None]


def case_rates(store: Store, scope: Scope) -> tuple[int, int, int]:
    """(cases, cases with a rejection, cases with a complaint) among the cases with records in scope."""
    per_case = (
        select(
            S.case_id,
            func.max(case((S.kind == "rejection", 1), else_=0)).label("rejected"),
            func.max(case((S.kind == "complaint", 1), else_=0)).label("complained"),
        )
        .where(*_steps_where(scope))
        .group_by(S.case_id)
        .subquery()
    )
    query = select(func.count(), func.sum(per_case.c.rejected), func.sum(per_case.c.complained))
    with store._read() as conn:
        n, rejected, complained = conn.execute(query).one()
        return int(n), int(rejected or 0), int(complained or 0)
