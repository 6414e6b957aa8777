"""Time: firing due timers exactly once (deadline breaches, escalation rungs, state timeouts) and
delivering the notification outbox through channels.

`Worker.tick()` fires what is due and returns (for cron: `sopflow tick`); `Worker.run()` loops until told
to stop (`sopflow worker`). Any number of workers may share one database: a timer is leased before it
is fired, the lease of a dead worker expires, and the effect of a timer and marking it done commit in
one transaction, so a timer fires once even when workers crash.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sopflow.engine.audit import AuditRecord
from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.model import Definition, Escalation, Org
from sopflow.engine.runtime import Engine
from sopflow.engine.step import SYSTEM_ACTOR, People, Refused, Snapshot, take_step
from sopflow.engine.store import (
    CaseChange,
    CaseRow,
    NotificationRow,
    NotificationSpec,
    Reads,
    TimerRow,
    TimerSpec,
    Write,
)
from sopflow.engine.timers import TIMEOUT_PREFIX

log = logging.getLogger("sopflow.worker")

MAX_BACKOFF = timedelta(hours=1)


class Channel(Protocol):
    """Delivers a notification somewhere; raises or returns False on failure (it will be retried)."""

    name: str

    def deliver(self, notification: NotificationRow) -> str:
        """Deliver; returns a short note for the delivery log. Raises DeliveryFailed on failure."""
        ...


class DeliveryFailed(Exception):
    pass


@dataclass
class ConsoleChannel:
    """Writes each notification as one log line (and to a callback, e.g. the CLI's stdout)."""

    write: Callable[[str], None] = print
    name: str = "console"

    def deliver(self, notification: NotificationRow) -> str:
        self.write(f"[notify {notification.recipient}] case {notification.case_id}: {notification.subject}")
        return "written"


@dataclass
class WebhookChannel:
    """POSTs each notification as JSON to a URL; a non-2xx answer or no answer is a failure."""

    url: str
    timeout: float = 5.0
    name: str = "webhook"

    def deliver(self, notification: NotificationRow) -> str:
        body = json.dumps(
            {
                "id": notification.id,
                "case": notification.case_id,
                "recipient": notification.recipient,
                "subject": notification.subject,
                "body": notification.body,
                "attempt": notification.attempts + 1,
            },
            ensure_ascii=False,
        ).encode("utf-8")
        request = urllib.request.Request(  # noqa: S310 - the URL is the operator's configuration
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": f"sopflow-{notification.id}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            exc.close()
            raise DeliveryFailed(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryFailed(f"no answer: {exc}") from None


@dataclass
class TickReport:
    """What one tick did."""

    fired: dict[str, int] = field(default_factory=dict)
    stale: int = 0
    delivered: int = 0
    failed_deliveries: int = 0

    @property
    def total(self) -> int:
        return sum(self.fired.values())


class Worker:
    """Fires due timers and delivers notifications for one engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        name: str | None = None,
        lease: timedelta = timedelta(seconds=60),
        batch: int = 100,
        channels: Sequence[Channel] = (),
    ) -> None:
        self.engine = engine
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = lease
        self.batch = batch
        self.channels: dict[str, Channel] = {c.name: c for c in channels} or {"console": ConsoleChannel()}

    # -- timers ------------------------------------------------------------------------------------

    def tick(self, now: datetime | None = None, *, deliver: bool = True) -> TickReport:
        """Fire every timer due at `now` (default: the engine's clock), then deliver notifications."""
        report = TickReport()
        moment = now or self.engine.clock()
        while True:
            due = self.engine.store.claim_timers(moment, self.name, self.lease, self.batch)
            if not due:
                break
            for timer in due:
                self._fire(timer, moment, report)
        if deliver:
            self.deliver(moment, report)
        return report

    def _fire(self, timer: TimerRow, now: datetime, report: TickReport) -> None:
        outcome = "breached" if timer.kind == "deadline" else "fired"
        fired = self.engine.store.fire_timer(
            timer,
            self.name,
            lambda row, reads: self._decide(timer, row, reads, now),
            now=now,
            outcome=outcome,
        )
        if fired is None:
            report.stale += 1
        else:
            report.fired[timer.kind] = report.fired.get(timer.kind, 0) + 1

    def _decide(self, timer: TimerRow, row: CaseRow, reads: Reads, now: datetime) -> Write | None:
        compiled = self.engine.compiled(row.definition_id, row.definition_version)
        definition = compiled.definition
        if timer.kind == "timeout":
            state = definition.states[row.state]
            if row.entered_seq != timer.entered_seq or timer.name != TIMEOUT_PREFIX + row.state:
                return None
            assert state.timeout is not None
            return self._system_event(
                compiled,
                row,
                reads,
                state.timeout.fire,
                now,
                {"timer": "timeout", "after_seconds": state.timeout.after_seconds},
            )
        deadline = next((d for d in definition.deadlines if d.name == timer.name), None)
        if deadline is None:
            return None
        if timer.kind == "deadline":
            rungs = tuple(
                TimerSpec(
                    "escalation", deadline.name, i, timer.due_at + timedelta(seconds=rung.after_seconds)
                )
                for i, rung in enumerate(deadline.escalate, 1)
            )
            record = self._record(
                compiled,
                row,
                now,
                "deadline_breached",
                row.state,
                {"deadline": deadline.name, "due_at": timer.due_at.isoformat()},
            )
            return Write(record, None, start_timers=rungs)
        return self._escalate(compiled, row, reads, deadline.escalate[timer.rung - 1], timer, now)

    def _escalate(
        self,
        compiled: CompiledDefinition,
        row: CaseRow,
        reads: Reads,
        rung: Escalation,
        timer: TimerRow,
        now: datetime,
    ) -> Write | None:
        definition = compiled.definition
        detail = {"deadline": timer.name, "rung": timer.rung, "action": rung.action, "target": rung.target}
        if rung.action == "fire":
            if rung.target not in definition.states[row.state].events:
                return self._noted(
                    compiled,
                    row,
                    now,
                    {**detail, "skipped": f"`{rung.target}` is not an event of `{row.state}`"},
                )
            return self._system_event(compiled, row, reads, rung.target, now, detail)
        org = self.engine.org_in(reads)
        if rung.action == "reassign":
            chosen = reads.least_loaded(org.members(rung.target))
            record = self._record(
                compiled, row, now, "reassign", row.state, {**detail, "from": row.assignee, "to": chosen}
            )
            change = CaseChange(
                state=row.state,
                open=row.open,
                data=row.data,
                assignee=chosen,
                submitter=row.submitter,
                entered=False,
            )
            return Write(
                record,
                change,
                notify=self._notices(
                    row,
                    definition,
                    org,
                    chosen or rung.target,
                    f"case {row.id} was reassigned to you",
                    detail,
                ),
            )
        record = self._record(compiled, row, now, "escalate", row.state, detail)
        subject = (
            f"{definition.key} case {row.id} is overdue on `{timer.name}` "
            f"(in `{row.state}`, {definition.states[row.state].title})"
        )
        return Write(record, None, notify=self._notices(row, definition, org, rung.target, subject, detail))

    def _notices(
        self,
        row: CaseRow,
        definition: Definition,
        org: Org,
        recipient: str,
        subject: str,
        detail: Mapping[str, Any],
    ) -> tuple[NotificationSpec, ...]:
        members = list(org.members(recipient)) or ([recipient] if recipient in org.users else [])
        emails = {m: org.users[m].email for m in members if org.users[m].email}
        body = {
            "definition": definition.key,
            "state": row.state,
            "assignee": row.assignee,
            "members": members,
            "emails": emails,
            **detail,
        }
        return tuple(NotificationSpec(name, recipient, subject, body) for name in self.channels)

    def _noted(
        self, compiled: CompiledDefinition, row: CaseRow, now: datetime, detail: Mapping[str, Any]
    ) -> Write:
        return Write(self._record(compiled, row, now, "escalate", row.state, detail), None)

    def _system_event(
        self,
        compiled: CompiledDefinition,
        row: CaseRow,
        reads: Reads,
        event: str,
        now: datetime,
        detail: Mapping[str, Any],
    ) -> Write:
        # The org is read in the timer's own transaction (its hash came with the case), as a user's step
        # reads it, not in a connection of its own per timer.
        org = self.engine.org_in(reads)
        snapshot = Snapshot(row.state, row.data, row.starter, row.assignee, row.submitter)
        people = People(org, lambda role: reads.least_loaded(org.members(role)))
        try:
            step = take_step(compiled, snapshot, SYSTEM_ACTOR, event, {}, people)
        except Refused as refused:
            record = self.engine.audit_record(
                row,
                compiled,
                now,
                actor=SYSTEM_ACTOR.id,
                event=event,
                to_state=None,
                accepted=False,
                reason=f"{refused.error.kind}: {refused.error.message}",
                detail={**detail, **refused.detail},
            )
            return Write(record, None)
        step.detail.update(detail)
        return self.engine.step_write(compiled, row, org, SYSTEM_ACTOR, step, {}, None, now)

    def _record(
        self,
        compiled: CompiledDefinition,
        row: CaseRow,
        now: datetime,
        event: str,
        state: str,
        detail: Mapping[str, Any],
    ) -> AuditRecord:
        return self.engine.audit_record(
            row,
            compiled,
            now,
            actor=SYSTEM_ACTOR.id,
            event=event,
            to_state=state,
            accepted=True,
            detail=detail,
        )

    # -- notifications -----------------------------------------------------------------------------

    def deliver(self, now: datetime | None = None, report: TickReport | None = None) -> TickReport:
        """Try every due notification once; failures are logged and retried later with backoff."""
        report = report or TickReport()
        moment = now or self.engine.clock()
        while True:
            batch = self.engine.store.claim_notifications(moment, self.lease, self.batch)
            if not batch:
                return report
            for item in batch:
                channel = self.channels.get(item.channel)
                try:
                    if channel is None:
                        raise DeliveryFailed(f"channel `{item.channel}` is not configured on this worker")
                    note = channel.deliver(item)
                except DeliveryFailed as exc:
                    retry = moment + min(timedelta(seconds=5 * 2**item.attempts), MAX_BACKOFF)
                    self.engine.store.record_delivery(item, moment, False, str(exc), retry)
                    report.failed_deliveries += 1
                    log.warning("delivery of notification %s failed: %s", item.id, exc)
                    continue
                self.engine.store.record_delivery(item, moment, True, note, None)
                report.delivered += 1

    # -- the loop ----------------------------------------------------------------------------------

    def run(
        self, stop: threading.Event, *, idle: float = 1.0, on_tick: Callable[[TickReport], None] | None = None
    ) -> None:
        """Tick until `stop` is set; between ticks wait at most `idle` seconds (less if a timer is due
        sooner). Stopping happens between timers, never in the middle of one."""
        while not stop.is_set():
            report = self.tick()
            if on_tick is not None and (report.total or report.delivered or report.failed_deliveries):
                on_tick(report)
            upcoming = self.engine.store.next_due()
            wait = idle
            if upcoming is not None:
                wait = max(0.0, min(idle, (upcoming - self.engine.clock()).total_seconds()))
            stop.wait(wait)
