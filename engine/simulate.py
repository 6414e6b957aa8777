"""Run cases of a definition in memory, with no database: for tests that walk the documented paths, and as
the reference the durable runtime is checked against (replay). `ClockedSimulation`, for `sopflow
simulate`, runs a case on the real engine in a throwaway database instead, so that time can pass.

A simulated case keeps the same audit records, hash chain included, that the runtime would store.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sopflow.engine.audit import GENESIS, AuditRecord, iso, seal, utc_now
from sopflow.engine.branches import BranchStatus
from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.model import APPROVE, REJECT, Org
from sopflow.engine.errors import SopflowError
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

if TYPE_CHECKING:
    from sopflow.engine.runtime import Case

__all__ = [
    "ClockStep",
    "ClockedSimulation",
    "SimCase",
    "SimulatedStep",
    "Simulation",
    "iso",
    "utc_now",
]  # iso and utc_now are engine.audit's, kept here too


@dataclass
class SimCase:
    """A case in memory: its snapshot and its audit records."""

    id: int
    definition_key: str
    snapshot: Snapshot
    history: list[AuditRecord] = field(default_factory=list)
    entered_seq: int = 1

    @property
    def state(self) -> str:
        return self.snapshot.state

    @property
    def data(self) -> Mapping[str, Any]:
        return self.snapshot.data


class Simulation:
    """Cases of one definition, run in memory by the people of one org."""

    def __init__(
        self, compiled: CompiledDefinition, org: Org, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.compiled = compiled
        self.org = org
        self.clock = clock
        self.cases: list[SimCase] = []
        self.people = People(org, self._least_loaded)
        self._actors: dict[str, Actor] = {}

    def _least_loaded(self, role: str) -> str | None:
        members = self.org.members(role)
        if not members:
            return None
        load = {m: 0 for m in members}
        for case in self.cases:
            who = case.snapshot.assignee
            if who in load and not self.compiled.definition.states[case.state].final:
                load[who] += 1
        return min(members, key=lambda m: load[m])

    def actor(self, user_id: str) -> Actor:
        found = self._actors.get(user_id)
        if found is None:  # the org never changes under a simulation, nor do its people
            found = self._actors[user_id] = actor_from_org(self.org, user_id)
        return found

    def start(self, user_id: str, data: Mapping[str, Any]) -> SimCase:
        actor = self.actor(user_id)
        step = start_step(self.compiled, actor, data, self.people, iso(self.clock()))
        case = SimCase(
            id=len(self.cases) + 1,
            definition_key=self.compiled.definition.key,
            snapshot=Snapshot(state="", data={}, starter=actor.id),
        )
        self._apply(case, actor, step, payload={}, comment=None)
        self.cases.append(case)
        return case

    def fire(
        self,
        case: SimCase,
        user_id: str,
        event: str,
        payload: Mapping[str, Any] | None = None,
        comment: str | None = None,
    ) -> Step:
        """Fire an event as a user; refusals are recorded in the case's history, then raised."""
        actor = self.actor(user_id)
        payload = dict(payload or {})
        try:
            snapshot = replace(case.snapshot, now=iso(self.clock()))
            step = take_step(self.compiled, snapshot, actor, event, payload, self.people)
        except Refused as refused:
            self._record(case, actor, event, refused.role, payload, comment, refused)
            raise refused.error from None
        self._apply(case, actor, step, payload, comment)
        return step

    def _apply(
        self, case: SimCase, actor: Actor, step: Step, payload: Mapping[str, Any], comment: str | None
    ) -> None:
        record = self._append(
            case,
            actor=actor.id,
            role=step.role,
            on_behalf_of=step.on_behalf_of,
            event=step.event,
            from_state=step.from_state or None,
            to_state=step.to_state,
            outcome="accepted",
            payload=payload,
            data_change=step.data_change,
            comment=comment,
            detail=step.detail,
        )
        snap = case.snapshot
        if step.moved:
            case.entered_seq = record.seq
            votes: tuple[Vote, ...] = ()
            submitter: str | None = actor.id
        else:
            submitter = snap.submitter
            votes = snap.votes
            if step.event in (APPROVE, REJECT):
                last = step.detail["votes"][-1]
                votes = (*votes, Vote(last["voter"], last["role"], last["decision"]))
        case.snapshot = Snapshot(
            state=step.to_state,
            data=step.data,
            starter=snap.starter,
            assignee=step.assignee,
            submitter=submitter,
            votes=votes,
            fired=(*snap.fired, (step.event, step.on_behalf_of or actor.id)),
            started_at=snap.started_at or record.at,
            entered_at=record.at if step.moved or snap.entered_at is None else snap.entered_at,
            # Where a parallel state's branches stand, as the step's record gives them.
            branches=step.detail.get("branches", {} if step.moved else snap.branches),
            lingering=step.detail.get("lingering", snap.lingering),
        )

    def _record(
        self,
        case: SimCase,
        actor: Actor,
        event: str,
        role: str | None,
        payload: Mapping[str, Any],
        comment: str | None,
        refused: Refused,
    ) -> None:
        error: SopflowError = refused.error
        self._append(
            case,
            actor=actor.id,
            role=role,
            on_behalf_of=None,
            event=event,
            from_state=case.state,
            to_state=None,
            outcome="refused",
            payload=payload,
            data_change={},
            comment=comment,
            reason=f"{error.kind}: {error.message}",
            detail=refused.detail,
        )

    def _append(self, case: SimCase, **fields: Any) -> AuditRecord:
        prev = case.history[-1].hash if case.history else GENESIS
        record = seal(
            AuditRecord(
                case_id=case.id,
                seq=len(case.history) + 1,
                at=iso(self.clock()),
                definition_hash=self.compiled.definition.content_hash,
                prev_hash=prev,
                **fields,
            )
        )
        case.history.append(record)
        return record


@dataclass(frozen=True, slots=True)
class SimulatedStep:
    """What a step did to a case of a `ClockedSimulation`, as `Step` says it for a `Simulation`."""

    event: str
    from_state: str
    to_state: str
    entered: tuple[str, ...]
    """Every state the case entered, in order (the choices it passed, then where it came to rest)."""
    detail: Mapping[str, Any]

    @property
    def moved(self) -> bool:
        return bool(self.entered)


@dataclass(frozen=True, slots=True)
class ClockStep:
    """What moving the clock did: the timers that fired (as `sopflow test` names them) and the
    notifications sent, as (recipient, subject)."""

    now: datetime
    timers_fired: tuple[str, ...]
    notifications: tuple[tuple[str, str], ...]


class ClockedSimulation:
    """One case run on the real engine in a throwaway SQLite database, on a clock that moves only when
    told to: deadlines, escalations, timeouts and notifications fire as in production. For `sopflow
    simulate` (whose steps may move the clock) and, through `engine.scenario`, for `sopflow test`."""

    def __init__(
        self, definition_file: Path, org_file: Path, org: Org, start: datetime | None = None
    ) -> None:
        from sopflow.engine.runtime import Engine
        from sopflow.engine.scenario.load import DEFAULT_START
        from sopflow.engine.scenario.run import CaseDriver, FakeClock

        self.org = org
        self.clock = FakeClock(start or datetime(*DEFAULT_START, tzinfo=ZoneInfo(org.calendar.timezone)))
        self._folder = tempfile.mkdtemp(prefix="sopflow-simulate-")
        self.engine = Engine(f"sqlite:///{self._folder}/simulate.db", durable=False, clock=self.clock)
        try:
            from sopflow.engine.definition.validate import subprocess_files

            self.engine.deploy([definition_file, *subprocess_files(definition_file), org_file])
        except BaseException:
            self.close()
            raise
        self.driver = CaseDriver(self.engine, self.clock, org)

    def close(self) -> None:
        self.engine.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> ClockedSimulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, definition_id: str, user_id: str, data: Mapping[str, Any]) -> None:
        outcome = self.driver.start(definition_id, user_id, data)
        if outcome.refused is not None:
            raise outcome.refused

    @property
    def state(self) -> str:
        return self._case().state

    @property
    def data(self) -> Mapping[str, Any]:
        return self._case().data

    @property
    def assignee(self) -> str | None:
        return self._case().assignee

    @property
    def branches(self) -> list[BranchStatus]:
        """Where each branch of the case's parallel state stands ([] outside one)."""
        case = self._case()
        return self.engine.branches(case.id) if case.open else []

    def fire(
        self, user_id: str, event: str, payload: Mapping[str, Any] | None = None, *, child: bool = False
    ) -> SimulatedStep:
        """Fire an event as a user (on the case's open sub-process case with `child`); a refusal is
        recorded in the case's history, then raised."""
        outcome = self.driver.fire(event, user_id, dict(payload or {}), child=child)
        if outcome.refused is not None:
            raise outcome.refused
        record = outcome.records[0]
        assert self.driver.case_id is not None
        moved = self.engine.store.case(record.case_id).entered_seq == record.seq
        routes = [str(r["choice"]) for r in record.detail.get("routes", [])]
        to_state = record.to_state or ""
        return SimulatedStep(
            event=event,
            from_state=record.from_state or "",
            to_state=to_state,
            entered=(*routes, to_state) if moved else (),
            detail=record.detail,
        )

    def control(self, user_id: str, act: str, reason: str | None) -> None:
        """Suspend, resume or cancel the case as a user; a refusal is recorded, then raised."""
        outcome = self.driver.control(act, user_id, reason)
        if outcome.refused is not None:
            raise outcome.refused

    def advance(self, seconds: int, *, working: bool = False) -> ClockStep:
        """Move the clock on (by working time if `working`), firing each due timer at its own time."""
        outcome = self.driver.advance(seconds, working=working)
        now = self.clock.now.astimezone(ZoneInfo(self.org.calendar.timezone))
        return ClockStep(now, outcome.timers_fired, outcome.notifications)

    def _case(self) -> Case:
        assert self.driver.case_id is not None
        return self.engine.case(self.driver.case_id)
