"""Starting cases on a calendar: every due period of every deployed definition's schedules, once.

The worker (and `sopflow tick`) calls `Scheduler.start_due` on each tick. A period is due when its
occurrence comes after the schedule was first deployed (the earliest deployed version of the definition
that has a schedule of that name) and its moment, moved to a working day, has come. Periods missed while
no worker ran are all started when one returns, oldest first. The case starts on the newest version of
the definition (or the adopted one, or the one a running trial's split gives the occurrence, when that
version has the schedule: `engine.lifecycle.trials`), by the system, with the schedule's data and the
period in its `period_field`; its start record names the schedule and the period (and the trial), and
`audit verify` accepts a start by the system only for a schedule of the definition.

Exactly once: `Store.start_period` inserts the period's row in the same transaction as the case, and the
row's primary key refuses a second start (a second worker finds it, or on PostgreSQL skips a period
another worker holds and comes back to it on its next look).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sopflow.engine.audit import iso
from sopflow.engine.casework import start_change, start_record
from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.model import Org, Schedule
from sopflow.engine.lifecycle import trials
from sopflow.engine.runtime import Engine
from sopflow.engine.schedule import Period, occurrences, period_label, start_data
from sopflow.engine.step import SYSTEM_ACTOR, People, start_step
from sopflow.engine.store import Write
from sopflow.engine.store.records import DefinitionRow
from sopflow.engine.timers import on_entry

SPREAD = 16
"""A round longer than this is begun at a random place (see `Scheduler.start_due`)."""
LOOK_AHEAD = timedelta(days=800)
"""How far `status` looks for a schedule's next period (a yearly one, moved, is found)."""
BATCH = 200
"""Periods tried per round: what other workers started meanwhile is read again after each round, so
that workers sharing the work skip it instead of trying it."""


@dataclass(frozen=True, slots=True)
class DuePeriod:
    compiled: CompiledDefinition
    schedule: Schedule
    period: Period


@dataclass(frozen=True, slots=True)
class ScheduleStatus:
    """What `sopflow defs show` says about one schedule."""

    name: str
    schedule: Schedule
    since: datetime
    next_due: datetime | None
    last_period: str | None
    last_case: int | None
    started: int


class Scheduler:
    """Starts the due periods of the schedules of an engine's deployed definitions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._rows: tuple[tuple[str, int], ...] = ()
        self._anchors: dict[tuple[str, str], tuple[CompiledDefinition, datetime]] = {}
        self._settled: dict[tuple[str, str], datetime] = {}
        """Per schedule, a period up to which every period was seen started: later looks begin there,
        so that a tick with nothing due reads nothing (forgotten when the deployed versions change)."""

    def start_due(self, now: datetime, limit: int | None = None) -> int:
        """Start every period due at `now` (at most `limit`), oldest first; how many this worker started.

        The due periods are worked out once; before each round of BATCH of them, the periods started
        meanwhile (by other workers) are read again and left out."""
        if not self._schedules():
            return 0
        org = self.engine.org()
        plan = [(item, list(periods)) for item, periods in self._plan(now, org)]
        last = {(c.definition.id, s.name): periods[-1].period for (c, s, _), periods in plan if periods}
        started = 0
        skipped = False
        while limit is None or started < limit:
            batch: list[DuePeriod] = []
            for (compiled, schedule, since), periods in plan:
                if not periods:
                    continue
                # Only the round's window is read: what came before it was seen started already.
                window = periods[: BATCH * 2]
                done = self.engine.store.started_periods(
                    compiled.definition.id, schedule.name, since, window[-1].period
                )
                periods[:] = [p for p in periods if p.period not in done]
                batch += [DuePeriod(compiled, schedule, p) for p in periods[:BATCH]]
            if not batch:
                if not skipped:
                    self._settle(plan, last)
                return started
            progress = 0
            if len(batch) > SPREAD:
                # Several workers look at the same round: each begins it at its own place, so that
                # they seldom try the same period; a short round (a month or two missed) keeps its order.
                turn = secrets.randbelow(len(batch))
                batch = batch[turn:] + batch[:turn]
            for item in batch:
                if limit is not None and started >= limit:
                    break
                # A period another worker holds (PostgreSQL) is skipped at once; the other workers do
                # the same, so several workers leapfrog through the list instead of queueing.
                if self.start(item, now, org):
                    started += 1
                    progress += 1
            if progress == 0:
                # Every period of the round is held by other workers: leave it to them, go on.
                skipped = True
                for _item, periods in plan:
                    del periods[:BATCH]
        return started

    def _settle(
        self,
        plan: list[tuple[tuple[CompiledDefinition, Schedule, datetime], list[Period]]],
        last: dict[tuple[str, str], datetime],
    ) -> None:
        """Remember, for each schedule whose due periods were all seen started, the last of them. Not for
        a schedule that moves periods to the previous working day: a later period may be due before an
        earlier one, so what is due is not a prefix of its occurrences."""
        for (compiled, schedule, _since), periods in plan:
            key = (compiled.definition.id, schedule.name)
            if not periods and key in last and schedule.working_day != "previous":
                self._settled[key] = last[key]

    def due(self, now: datetime) -> Iterator[DuePeriod]:
        """The periods due at `now` that no case was started for yet, oldest first per schedule."""
        for (compiled, schedule, since), periods in self._plan(now, self.engine.org()):
            done = self.engine.store.started_periods(compiled.definition.id, schedule.name, since)
            for period in periods:
                if period.period not in done:
                    yield DuePeriod(compiled, schedule, period)

    def _plan(
        self, now: datetime, org: Org
    ) -> list[tuple[tuple[CompiledDefinition, Schedule, datetime], list[Period]]]:
        """Each schedule (its newest definition, itself, since when it runs) with its periods due at
        `now` by the calendar of `org`, started or not."""
        calendar = org.calendar
        plan = []
        for (definition_id, name), (compiled, since) in self._schedules().items():
            schedule = next(s for s in compiled.definition.schedules if s.name == name)
            after = max(since, self._settled.get((definition_id, name), since))
            plan.append(((compiled, schedule, after), list(occurrences(schedule, calendar, after, now))))
        return plan

    def start(self, item: DuePeriod, now: datetime, org: Org | None = None) -> bool:
        """Start the case of one period (under `org`, default the deployed one); False when it was (or
        is being) started by another worker."""
        compiled, schedule, period = item.compiled, item.schedule, item.period
        # A trial or an adopted version decides the version, keyed by the occurrence: a period started
        # again lands on the same version. One without the schedule leaves it on the newest version.
        key = f"schedule:{schedule.name}:{iso(period.period)}"
        version, trial = trials.version_for(self.engine, compiled.definition.id, key)
        if version is not None and version != compiled.definition.version:
            chosen = self.engine.compiled(compiled.definition.id, version)
            same = next((s for s in chosen.definition.schedules if s.name == schedule.name), None)
            if same is None:
                trial = None
            else:
                compiled, schedule = chosen, same
        definition = compiled.definition
        org = org or self.engine.org()
        data = start_data(schedule, period.period, org.calendar)
        step = start_step(compiled, SYSTEM_ACTOR, data, _people(self.engine, org), iso(now))
        timers = on_entry(definition, step.entered, now, org.calendar, moved=True)
        change = start_change(definition, step, SYSTEM_ACTOR.id)
        detail = {
            **step.detail,
            "schedule": schedule.name,
            "period": period_label(period.period, org.calendar),
            "due_at": iso(period.due),
        }
        if trial is not None:
            detail["trial"] = trial

        def make_write(case_id: int) -> Write:
            record = start_record(case_id, definition, step, SYSTEM_ACTOR.id, now, detail)
            return Write(record, change, start_timers=timers.start)

        fired = self.engine.store.start_period(
            definition.id,
            definition.version,
            schedule.name,
            period.period,
            period.due,
            now,
            change,
            make_write,
        )
        return fired is not None

    def status(self, definition_id: str, now: datetime) -> list[ScheduleStatus]:
        """Each schedule of the definition's newest version: since when it runs, its next period, the
        last period it started and that period's case."""
        org = self.engine.org()
        last = self.engine.store.last_periods(definition_id)
        out = []
        for (did, name), (compiled, since) in self._schedules().items():
            if did != definition_id:
                continue
            schedule = next(s for s in compiled.definition.schedules if s.name == name)
            period, case, count = last.get(name, (None, None, 0))
            after = max(since, now) if period is None else max(since, now, period)
            upcoming = next(occurrences(schedule, org.calendar, after, after + LOOK_AHEAD), None)
            out.append(
                ScheduleStatus(
                    name,
                    schedule,
                    since,
                    None if upcoming is None else upcoming.due,
                    None if period is None else period_label(period, org.calendar),
                    case,
                    count,
                )
            )
        return out

    def _schedules(self) -> dict[tuple[str, str], tuple[CompiledDefinition, datetime]]:
        """(definition id, schedule name) → the newest version's compiled definition and the moment the
        schedule was first deployed. Read again only when the deployed versions change."""
        keys = tuple(self.engine.store.definition_keys())
        if keys == self._rows:
            return self._anchors
        rows: dict[str, list[DefinitionRow]] = {}
        for row in self.engine.store.definitions():
            rows.setdefault(row.definition_id, []).append(row)
        anchors: dict[tuple[str, str], tuple[CompiledDefinition, datetime]] = {}
        for definition_id, versions in rows.items():
            versions.sort(key=lambda r: r.version)
            newest = self.engine.compiled(definition_id, versions[-1].version)
            for schedule in newest.definition.schedules:
                first = min(
                    r.deployed_at
                    for r in versions
                    if any(
                        s.name == schedule.name
                        for s in self.engine.compiled(definition_id, r.version).definition.schedules
                    )
                )
                anchors[(definition_id, schedule.name)] = (newest, first)
        self._rows, self._anchors, self._settled = keys, anchors, {}
        return anchors


def _people(engine: Engine, org: Org) -> People:
    store = engine.store
    return People(
        org, lambda role: store.least_loaded(org.members(role)), store.open_cases, store.least_loaded
    )
