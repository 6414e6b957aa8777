"""Run cases of a definition in memory, with no database: for `sopflow simulate`, for tests that walk the
documented paths, and as the reference the durable runtime is checked against (replay).

A simulated case keeps the same audit records, hash chain included, that the runtime would store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sopflow.engine.audit import GENESIS, AuditRecord, iso, seal, utc_now
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

__all__ = ["SimCase", "Simulation", "iso", "utc_now"]  # iso and utc_now are engine.audit's, kept here too


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
        step = start_step(self.compiled, actor, data, self.people)
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
            step = take_step(self.compiled, case.snapshot, actor, event, payload, self.people)
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
