"""Time: firing due timers exactly once (deadline breaches, escalation rungs, state timeouts) and
delivering the notification outbox through channels.

`Worker.tick()` fires what is due and returns (for cron: `sopflow tick`); `Worker.run()` loops until told
to stop (`sopflow worker`). Any number of workers may share one database: a timer is leased before it
is fired, the lease of a dead worker expires, and the effect of a timer and marking it done commit in
one transaction, so a timer fires once even when workers crash. A notification is leased the same way,
and only the holder of its lease records its delivery: a worker whose lease ran out while a slow channel
delivered finds the notification taken over, skips it and logs that.

Leases are measured on the clock when they are taken, not from the time a tick fires things for, so a
long tick never hands out leases that have already run out.

`run()` rides out a database that goes away (a restart, a crash, an outage, SQLite's lock held past the
busy timeout, a full disk): the cycle fails as a whole, the worker waits with capped, jittered backoff
and tries again, logging the failure once and the recovery once; its `health` tells a supervisor when it
last completed a cycle. Errors no retry can fix (credentials, the wrong schema) end it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sopflow.engine import automatic
from sopflow.engine.audit import AuditRecord
from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.model import AUTOMATIC_DONE, AUTOMATIC_FAILED, Definition, Escalation, Org
from sopflow.engine.errors import Conflict, DatabaseUnavailable, InvalidData, OutcomeUnknown, SopflowError
from sopflow.engine.runtime import Engine
from sopflow.engine.scheduler import Scheduler
from sopflow.engine.step import SYSTEM_ACTOR, People, Refused, take_step
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
from sopflow.engine.store.database import LOCK_WAIT
from sopflow.engine.timers import TIMEOUT_PREFIX, deadline_of, rung_due

log = logging.getLogger("sopflow.worker")

MAX_BACKOFF = timedelta(hours=1)
"""The longest wait between two attempts at delivering one notification."""
RETRY_FIRST_S = 0.5
"""The first wait after a cycle failed because the database was unavailable; it doubles up to the cap."""
RETRY_CAP_S = 30.0
"""The longest wait between two attempts at reaching the database."""


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
    lost_claims: int = 0
    """Timers and notifications another worker took over while this one worked on them (skipped)."""

    @property
    def total(self) -> int:
        return sum(self.fired.values())


@dataclass
class Backoff:
    """Waits between attempts at something that fails for a while: doubling from `first` up to `cap`,
    each wait drawn between half and all of that ("equal jitter"), so that workers which failed together
    do not all come back at the same moment."""

    first: float = RETRY_FIRST_S
    cap: float = RETRY_CAP_S
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next(self) -> float:
        """The seconds to wait after one more failure."""
        self.failures += 1
        ceiling = min(self.cap, self.first * 2.0 ** min(self.failures - 1, 32))
        return ceiling / 2 + self.rng.uniform(0.0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class Health:
    """What a supervisor needs to tell a worker that waits for its database from one that is stuck: a
    healthy worker completes a cycle at least every `idle` seconds; a waiting one has `failing_since`
    and its `last_error`, and still reports after every attempt; a stuck one stops reporting at all."""

    worker: str
    started_at: datetime
    last_success: datetime | None = None
    """When the last cycle (fire what is due, deliver, look for the next due timer) completed."""
    failing_since: datetime | None = None
    """When the database became unavailable (None while it answers)."""
    failures: int = 0
    """Cycles that failed in a row."""
    last_error: str | None = None
    """The last failure's message (kept after a recovery, for the record)."""
    last_attempt: datetime | None = None

    @property
    def state(self) -> str:
        if self.failing_since is not None:
            return "waiting for the database"
        return "running" if self.last_success is not None else "starting"

    def as_dict(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {
            "worker": self.worker,
            "pid": os.getpid(),
            "state": self.state,
            "started_at": iso(self.started_at),
            "last_success": iso(self.last_success),
            "last_attempt": iso(self.last_attempt),
            "failing_since": iso(self.failing_since),
            "failures": self.failures,
            "last_error": self.last_error,
        }


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
        retry_cap: float = RETRY_CAP_S,
    ) -> None:
        self.engine = engine
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = lease
        self.batch = batch
        self.channels: dict[str, Channel] = {c.name: c for c in channels} or {"console": ConsoleChannel()}
        self.retry_cap = retry_cap
        self.health = Health(self.name, datetime.now(UTC))
        self.scheduler = Scheduler(engine)

    # -- timers ------------------------------------------------------------------------------------

    def tick(self, now: datetime | None = None, *, deliver: bool = True) -> TickReport:
        """Fire every timer due at `now` (default: the engine's clock), then deliver notifications.
        Leases are taken on the engine's clock at each claim, whatever `now` says."""
        report = TickReport()
        moment = now or self.engine.clock()
        # Cases a schedule starts first: their first timers then fire in the same tick when due.
        started = self.scheduler.start_due(moment)
        if started:
            report.fired["schedule"] = started
        tried: set[int] = set()
        while True:
            due = self.engine.store.claim_timers(
                moment, self.name, self.lease, self.batch, at=self.engine.clock()
            )
            fresh = [t for t in due if t.id not in tried]
            if not fresh:
                break
            for timer in fresh:
                tried.add(timer.id)
                self._fire(timer, moment, report)
        if deliver:
            self.deliver(moment, report)
        return report

    def _fire(self, timer: TimerRow, now: datetime, report: TickReport) -> None:
        outcome = "breached" if timer.kind == "deadline" else "fired"
        # An automatic state's work is done before the transaction that records its outcome.
        try:
            work = self._automatic_work(timer) if timer.kind == "timeout" else None
        except automatic.TakenOver as exc:
            log.warning("timer %s of case %s: %s", timer.id, timer.case_id, exc)
            report.lost_claims += 1
            return
        try:
            fired = self.engine.store.fire_timer(
                timer,
                self.name,
                lambda row, reads: self._decide(timer, row, reads, now, work),
                now=now,
                outcome=outcome,
            )
        except Conflict as exc:
            # The case kept changing under people's steps: the timer keeps its lease, which runs out,
            # and it is fired by a later tick. Another case's business never ends this worker.
            log.warning("timer %s of case %s put off: %s", timer.id, timer.case_id, exc.message)
            return
        if fired is None:
            report.stale += 1
        else:
            report.fired[timer.kind] = report.fired.get(timer.kind, 0) + 1

    def _automatic_work(self, timer: TimerRow) -> automatic.Outcome | None:
        """The outcome of the work of the automatic state the timer is for (None when it is not one's)."""
        row = self.engine.store.case(timer.case_id)
        state = self.engine.compiled(row.definition_id, row.definition_version).definition.states[row.state]
        work = state.automatic
        if work is None or row.entered_seq != timer.entered_seq or timer.name != TIMEOUT_PREFIX + row.state:
            return None
        call = automatic.AutomaticCall(
            row.id, row.definition_id, row.state, row.data, automatic.key_of(row.id, row.entered_seq)
        )

        def note(tries: int, error: str) -> bool:
            # Each failed try is kept with the timer (and renews its lease): a worker that takes the timer
            # over after a crash makes only the tries left.
            until = self.engine.clock() + self.lease
            return self.engine.store.note_attempt(timer, self.name, tries, error, until)

        return automatic.perform(
            work, call, self.engine.handlers, tried=timer.attempts, last_error=timer.last_error, note=note
        )

    def _decide(
        self,
        timer: TimerRow,
        row: CaseRow,
        reads: Reads,
        now: datetime,
        work: automatic.Outcome | None = None,
    ) -> Write | None:
        compiled = self.engine.compiled(row.definition_id, row.definition_version)
        definition = compiled.definition
        if timer.kind == "timeout":
            state = definition.states[row.state]
            if row.entered_seq != timer.entered_seq or timer.name != TIMEOUT_PREFIX + row.state:
                return None
            assert state.timeout is not None
            if state.automatic is not None:
                return self._automatic_step(compiled, row, reads, now, work)
            write = self._system_event(
                compiled,
                row,
                reads,
                state.timeout.fire,
                now,
                {"timer": "timeout", "after_seconds": state.timeout.after_seconds},
            )
            if not state.timeout.notify:
                return write
            # A timeout may tell people as well as fire: whether its event was taken or refused, they
            # hear of it in the same transaction.
            org = self.engine.org_in(reads)
            subject = (
                f"{definition.key} case {row.id}: the timeout of `{row.state}` "
                f"({definition.states[row.state].title}) fired `{state.timeout.fire}`"
            )
            detail = {"timer": "timeout", "fire": state.timeout.fire}
            notices = tuple(
                n
                for recipient in state.timeout.notify
                for n in self._notices(row, definition, org, recipient, subject, detail)
            )
            return replace(write, notify=(*write.notify, *notices))
        deadline = deadline_of(definition, timer.name)
        if deadline is None:
            return None
        if timer.kind == "deadline":
            # The span's start is the time of the record that started the timer: a rung `from: start`
            # counts from it, and the breach records it so that `audit verify` counts rungs the same way.
            started = reads.record_at(row.id, timer.entered_seq)
            span_start = datetime.fromisoformat(started) if started is not None else timer.due_at
            calendar = self.engine.org_in(reads).calendar
            rungs = tuple(
                TimerSpec(
                    "escalation",
                    timer.name,  # a per-item deadline's rungs are its item's
                    i,
                    rung_due(deadline, rung, timer.due_at, span_start, calendar),
                )
                for i, rung in enumerate(deadline.escalate, 1)
            )
            detail = {"deadline": timer.name, "due_at": timer.due_at.isoformat()}
            if deadline.escalate:
                detail["span_started_at"] = span_start.isoformat()
            record = self._record(compiled, row, now, "deadline_breached", row.state, detail)
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

    def _automatic_step(
        self,
        compiled: CompiledDefinition,
        row: CaseRow,
        reads: Reads,
        now: datetime,
        work: automatic.Outcome | None,
    ) -> Write:
        """The system step recording an automatic state's work: its answer, or its error."""
        if work is None:
            # The case entered the state after the work was looked for: leave the timer to its lease.
            raise Conflict(f"case {row.id} entered `{row.state}` while its work was being looked for")
        detail = {
            "timer": "timeout",
            "after_seconds": 0,
            "automatic": {"key": automatic.key_of(row.id, row.entered_seq), "tries": work.tries},
        }
        if work.event == AUTOMATIC_DONE:
            try:
                return self._system_event(compiled, row, reads, AUTOMATIC_DONE, now, detail, work.payload)
            except InvalidData as exc:
                # An answer the data cannot take is a failure a person must look at, not a retry.
                failed = {"error": f"the answer does not fit the case's data: {exc.message}"}
                return self._system_event(compiled, row, reads, AUTOMATIC_FAILED, now, detail, failed)
        return self._system_event(compiled, row, reads, AUTOMATIC_FAILED, now, detail, work.payload)

    def _system_event(
        self,
        compiled: CompiledDefinition,
        row: CaseRow,
        reads: Reads,
        event: str,
        now: datetime,
        detail: Mapping[str, Any],
        payload: Mapping[str, Any] | None = None,
    ) -> Write:
        # The org is read in the timer's own transaction (its hash came with the case), as a user's step
        # reads it, not in a connection of its own per timer.
        org = self.engine.org_in(reads)
        # As a person's step sees the case: `case.*` in a guard and `fired:` exclusions need its trail.
        snapshot = self.engine.snapshot_in(compiled, row, reads, now)
        people = People(
            org,
            lambda role: reads.least_loaded(org.members(role)),
            reads.open_cases,
            reads.least_loaded,
            lambda state: reads.last_turn(row.definition_id, state),
        )
        try:
            step = take_step(compiled, snapshot, SYSTEM_ACTOR, event, dict(payload or {}), people)
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
        return self.engine.step_write(compiled, row, org, SYSTEM_ACTOR, step, dict(payload or {}), None, now)

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
        """Try every notification due at `now` once; failures are logged and retried later with backoff.
        Each attempt is recorded with the moment it ended, by this worker only if it still holds the
        notification's lease; one it lost to another worker is skipped and logged."""
        report = report or TickReport()
        moment = now or self.engine.clock()
        store = self.engine.store
        while True:
            batch = store.claim_notifications(
                moment, self.name, self.lease, self.batch, at=self.engine.clock()
            )
            if not batch:
                return report
            for item in batch:
                channel = self.channels.get(item.channel)
                try:
                    if channel is None:
                        raise DeliveryFailed(f"channel `{item.channel}` is not configured on this worker")
                    note = channel.deliver(item)
                except DeliveryFailed as exc:
                    at = self.engine.clock()
                    retry = max(moment, at) + min(timedelta(seconds=5 * 2**item.attempts), MAX_BACKOFF)
                    if store.record_delivery(item, self.name, at, False, str(exc), retry):
                        report.failed_deliveries += 1
                        log.warning("delivery of notification %s failed: %s", item.id, exc)
                    else:
                        self._lost(item, report)
                    continue
                if store.record_delivery(item, self.name, self.engine.clock(), True, note, None):
                    report.delivered += 1
                else:
                    self._lost(item, report)

    def _lost(self, item: NotificationRow, report: TickReport) -> None:
        report.lost_claims += 1
        log.warning(
            "notification %s: another worker took it over after this worker's lease of %s s ran out "
            "(a slow channel?); its attempt is not recorded here",
            item.id,
            self.lease.total_seconds(),
        )

    # -- the loop ----------------------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event,
        *,
        idle: float = 1.0,
        on_tick: Callable[[TickReport], None] | None = None,
        on_health: Callable[[Health], None] | None = None,
    ) -> None:
        """Tick until `stop` is set; between ticks wait at most `idle` seconds (less if a timer is due
        sooner). Stopping happens between timers, never in the middle of one.

        A cycle the database could not serve is tried again after a capped, jittered backoff: a
        `DatabaseUnavailable`, or an `OutcomeUnknown` (the connection broke while a timer's effect was
        committing; a timer is safe to try again, its effect and its completion commit together). The
        failure is logged when it starts and when its message changes, the recovery once. `on_health`
        hears `health` after every cycle, failed or not. Any other error ends the loop: a
        `ConfigurationError` (credentials, the schema) needs a person. On the way out the worker hands
        back the leases it holds, so other workers take those timers at once."""
        backoff = Backoff(cap=self.retry_cap)
        quiet = _QuietWhileFailing(self.health)
        store_log = logging.getLogger("sopflow.store")
        store_log.addFilter(quiet)
        try:
            while not stop.is_set():
                try:
                    report = self.tick()
                    upcoming = self.engine.store.next_due()
                except (DatabaseUnavailable, OutcomeUnknown) as exc:
                    self._failed(exc)
                    if on_health is not None:
                        on_health(self.health)
                    stop.wait(backoff.next())
                    continue
                if backoff.failures:
                    backoff.reset()
                    self._recovered()
                self.health.last_success = self.health.last_attempt = datetime.now(UTC)
                if on_health is not None:
                    on_health(self.health)
                if on_tick is not None and (
                    report.total or report.delivered or report.failed_deliveries or report.lost_claims
                ):
                    on_tick(report)
                wait = idle
                if upcoming is not None:
                    wait = max(0.0, min(idle, (upcoming - self.engine.clock()).total_seconds()))
                stop.wait(wait)
        finally:
            store_log.removeFilter(quiet)
            self._release()

    def _failed(self, exc: SopflowError) -> None:
        health = self.health
        health.last_attempt = datetime.now(UTC)
        health.failures += 1
        if health.failing_since is None or exc.message != health.last_error:
            log.warning("%s; retrying with backoff (up to %g s apart)", exc.message, self.retry_cap)
        if health.failing_since is None:
            health.failing_since = health.last_attempt
        health.last_error = exc.message

    def _recovered(self) -> None:
        health = self.health
        since = health.failing_since
        waited = 0.0 if since is None else (datetime.now(UTC) - since).total_seconds()
        log.warning(
            "the database answers again after %.1f s (%d failed attempts); carrying on",
            waited,
            health.failures,
        )
        health.failing_since = None
        health.failures = 0
        # The claims taken before the failure are still this worker's until their lease runs out; handed
        # back, what they hold is fired now instead.
        self._release()

    def _release(self) -> None:
        with contextlib.suppress(SopflowError):  # best effort: else the leases run out by themselves
            self.engine.store.release_leases(self.name)


def open_patiently(
    open_engine: Callable[[], Engine], stop: threading.Event, *, retry_cap: float = RETRY_CAP_S
) -> Engine | None:
    """`open_engine()`, tried again with backoff while the database is unavailable (a worker started
    before its database, or during an outage); None when `stop` is set first. A ConfigurationError that
    no retry can fix is raised."""
    backoff = Backoff(cap=retry_cap)
    last: str | None = None
    while not stop.is_set():
        try:
            engine = open_engine()
        except DatabaseUnavailable as exc:
            if exc.message != last:
                log.warning("%s; retrying with backoff (up to %g s apart)", exc.message, retry_cap)
                last = exc.message
            stop.wait(backoff.next())
            continue
        if last is not None:
            log.warning("the database answers; starting")
        return engine
    return None


@dataclass
class HealthFile:
    """Writes a worker's health as JSON to `path` after every cycle (`Worker.run(on_health=...)`): a new
    file renamed over the old one, so a reader never sees half of it."""

    path: str
    _trouble: str | None = field(default=None, init=False, repr=False)
    """The last failure to write, so that it is logged once, not after every cycle."""

    def __call__(self, health: Health) -> None:
        target = Path(self.path)
        fresh = target.with_name(f".{target.name}.{os.getpid()}")
        try:
            fresh.write_text(json.dumps(health.as_dict(), indent=2) + "\n", encoding="utf-8")
            fresh.replace(target)
        except OSError as exc:
            if str(exc) != self._trouble:
                log.warning("cannot write the health file %s: %s", target, exc)
            self._trouble = str(exc)
            return
        self._trouble = None


class _QuietWhileFailing(logging.Filter):
    """Drops the store's "waiting for the write lock" notices while the worker is already reporting that
    the database is unavailable: the failure is logged once, not at every retry."""

    def __init__(self, health: Health) -> None:
        super().__init__()
        self.health = health

    def filter(self, record: logging.LogRecord) -> bool:
        return self.health.failing_since is None or not getattr(record, LOCK_WAIT, False)


class _LineHandler(logging.Handler):
    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self._write = write

    def emit(self, record: logging.LogRecord) -> None:
        self._write(record.getMessage())


@contextlib.contextmanager
def log_lines_to(write: Callable[[str], None]) -> Iterator[None]:
    """While inside, sopflow's log records (logger `sopflow` and below, INFO and up) go to `write` as
    plain message lines, never with a traceback, and not to the application's other handlers."""
    logger = logging.getLogger("sopflow")
    handler = _LineHandler(write)
    logger.addHandler(handler)
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
