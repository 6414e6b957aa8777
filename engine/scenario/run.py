"""Running scenarios against the real engine on a fake clock.

Each scenario starts one case in a database of its own (a throwaway SQLite file by default), with the
scenario's definition and org deployed, so deadlines, escalations, timeouts and notifications behave as
in production: a clock step moves the fake clock from one due timer to the next and lets the worker fire
each at its time. With a database given (`sopflow test --db URL`), each scenario runs in a scratch place
of its own inside that database (engine/store/scratch.py), which is left as it was.

The first expectation that does not hold ends its scenario: later steps would start from a case that is
not what the owner described.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sopflow.engine.audit import AuditRecord
from sopflow.engine.calendar import add_working_time
from sopflow.engine.definition.model import Org
from sopflow.engine.definition.validate import subprocess_files
from sopflow.engine.errors import NotAvailable, SopflowError
from sopflow.engine.runtime import Engine
from sopflow.engine.scenario.model import (
    Advance,
    Control,
    Expect,
    ExpectedNotice,
    Fire,
    Scenario,
    ScenarioFile,
)
from sopflow.engine.step import SYSTEM_ACTOR
from sopflow.engine.store import NotificationRow, Store
from sopflow.engine.worker import Worker

MAX_TIMER_ROUNDS = 10_000
"""A clock step fires at most this many due moments: a timer that re-arms itself forever must not hang."""


class FakeClock:
    """The time the engine and its worker read; only the scenario moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class _Recorder:
    """A notification channel that only records: scenarios read what was sent from the outbox."""

    name: str = "scenario"

    def deliver(self, notification: NotificationRow) -> str:
        return "recorded"


# -- results -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Difference:
    """The first expectation of a scenario that did not hold."""

    step: int
    """0 for the start, then 1, 2, ..."""
    where: str
    """The step in words: `step 3 (fire approve as wang.fang)`."""
    line: int
    what: str
    """What differs: state, refused, assignee, data.FIELD, deadlines, timers_fired, notifications."""
    expected: Any
    actual: Any

    def render(self) -> str:
        return (
            f"{self.where}, line {self.line}: {self.what}: expected {show(self.expected)}, "
            f"got {show(self.actual)}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "where": self.where,
            "line": self.line,
            "what": self.what,
            "expected": self.expected,
            "actual": self.actual,
        }


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    file: str
    name: str
    line: int
    seconds: float
    difference: Difference | None = None

    @property
    def passed(self) -> bool:
        return self.difference is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "name": self.name,
            "line": self.line,
            "passed": self.passed,
            "seconds": round(self.seconds, 4),
            "difference": self.difference.as_dict() if self.difference else None,
        }


@dataclass(frozen=True, slots=True)
class RunReport:
    results: tuple[ScenarioResult, ...]
    seconds: float

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    @property
    def ok(self) -> bool:
        return self.failed == 0


def show(value: Any) -> str:
    """A value as a reader of the scenario file would write it."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


# -- where scenarios run ---------------------------------------------------------------------------


class Databases:
    """Where each scenario's case runs: an empty database of its own, so that no scenario sees another's
    cases. By default a throwaway SQLite file; with a database URL given, a scratch place inside that
    database (a schema on PostgreSQL, a file beside it on SQLite), removed when the scenario ends."""

    def __init__(self, url: str | None = None, *, verify: bool = False) -> None:
        self.url = url
        self.verify = verify
        """Also verify each case's audit trail (hash chain and replay) when its scenario ends."""
        self._folder: Path | None = None
        self._engines: dict[tuple[Path, Path], tuple[Engine, Path]] = {}
        self._count = 0

    @contextmanager
    def engine(self, files: ScenarioFile, clock: FakeClock) -> Iterator[Engine]:
        """An engine with `files`' definition and org deployed, reading time from `clock`."""
        if self.url is not None:
            with self._scratch_engine(files, clock) as sop:
                yield sop
            return
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="sopflow-test-", dir=_memory_folder()))
        key = (files.definition_file.resolve(), files.org_file.resolve())
        found = self._engines.get(key)
        if found is None:
            # One engine per scenario file, deployed once into a template database; each scenario gets
            # a copy of it (a millisecond) under a store of its own, and the engine keeps the definition
            # and org it has compiled: deploying and compiling again per scenario cost more than the
            # scenario itself.
            template = self._folder / f"template-{len(self._engines) + 1}.db"
            found = (Engine(f"sqlite:///{template}", durable=False, clock=clock), template)
            found[0].deploy([files.definition_file, *subprocess_files(files.definition_file), files.org_file])
            found[0].store.close()
            self._engines[key] = found
        sop, template = found
        self._count += 1
        target = self._folder / f"scenario-{self._count}.db"
        shutil.copyfile(template, target)
        sop.store = Store(f"sqlite:///{target}", durable=False, create=False)
        sop.clock = clock
        try:
            yield sop
        finally:
            sop.store.close()
            target.unlink(missing_ok=True)

    @contextmanager
    def _scratch_engine(self, files: ScenarioFile, clock: FakeClock) -> Iterator[Engine]:
        from sopflow.engine.store.scratch import Scratch

        assert self.url is not None
        scratch = Scratch(self.url)
        url = scratch.make()
        try:
            with Engine(url, durable=False, clock=clock) as sop:
                sop.deploy([files.definition_file, *subprocess_files(files.definition_file), files.org_file])
                yield sop
        finally:
            scratch.remove(url)

    def close(self) -> None:
        self._engines.clear()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def _memory_folder() -> str | None:
    """A folder in memory (Linux's /dev/shm) when there is one: the throwaway databases are opened, closed
    and deleted per scenario, and on a busy disk that took most of a run. None: the usual temp folder."""
    shm = Path("/dev/shm")  # noqa: S108 - a private folder is made inside it with mkdtemp
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def run_files(
    loaded: Sequence[tuple[ScenarioFile, Org]],
    *,
    database: str | None = None,
    verify: bool = False,
    on_result: Callable[[ScenarioResult], None] | None = None,
) -> RunReport:
    """Run every scenario of every file, in order; `on_result` hears of each as it finishes. With `verify`,
    each case's audit trail is verified too when its scenario ends (what `sopflow audit verify` does)."""
    began = time.perf_counter()
    results: list[ScenarioResult] = []
    databases = Databases(database, verify=verify)
    try:
        for files, org in loaded:
            for scenario in files.scenarios:
                result = run_scenario(files, scenario, org, databases)
                results.append(result)
                if on_result is not None:
                    on_result(result)
    finally:
        databases.close()
    return RunReport(tuple(results), time.perf_counter() - began)


def run_scenario(files: ScenarioFile, scenario: Scenario, org: Org, databases: Databases) -> ScenarioResult:
    began = time.perf_counter()
    clock = FakeClock(scenario.at)
    with databases.engine(files, clock) as sop:
        difference = _Play(sop, clock, org, files.definition_id, databases.verify).scenario(scenario)
    return ScenarioResult(files.file, scenario.name, scenario.line, time.perf_counter() - began, difference)


# -- one case, step by step ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one step did to the case: refused (and why) or not, the timers it fired, what it sent."""

    refused: SopflowError | None
    timers_fired: tuple[str, ...]
    notifications: tuple[tuple[str, str], ...]
    """(recipient, subject) of each notification sent."""
    records: tuple[AuditRecord, ...]


class CaseDriver:
    """One case on an engine with a fake clock: start it, fire events, move the clock. Shared by the
    scenario runner and `sopflow simulate`."""

    def __init__(self, sop: Engine, clock: FakeClock, org: Org) -> None:
        self.sop = sop
        self.clock = clock
        self.org = org
        self.worker = Worker(sop, name="sopflow-test", channels=[_Recorder()])
        self.case_id: int | None = None

    def start(self, definition_id: str, actor: str, data: Mapping[str, Any]) -> Outcome:
        try:
            result = self.sop.start(definition_id, data, actor=actor)
        except SopflowError as exc:
            return Outcome(exc, (), (), ())
        self.case_id = result.case.id
        return Outcome(None, (), (), (result.record,))

    def fire(
        self,
        event: str,
        actor: str,
        payload: Mapping[str, Any],
        comment: str | None = None,
        *,
        child: bool = False,
    ) -> Outcome:
        # A person's step fires no timer and sends no notification (only the worker does), so the
        # trail and the outbox are read around clock steps only.
        assert self.case_id is not None
        try:
            target = self.open_child() if child else self.case_id
            result = self.sop.fire(target, event, actor=actor, payload=payload, comment=comment)
        except SopflowError as exc:
            return Outcome(exc, (), (), ())
        return Outcome(None, (), (), (result.record,))

    def control(self, act: str, actor: str, reason: str | None) -> Outcome:
        """Suspend, resume or cancel the case as `actor` (a suspend or cancel without a reason is
        refused, as the engine refuses it)."""
        assert self.case_id is not None
        try:
            if act == "resume":
                result = self.sop.resume(self.case_id, actor=actor, reason=reason)
            elif act == "suspend":
                result = self.sop.suspend(self.case_id, actor=actor, reason=reason or "")
            else:
                result = self.sop.cancel(self.case_id, actor=actor, reason=reason or "")
        except SopflowError as exc:
            return Outcome(exc, (), (), ())
        return Outcome(None, (), (), (result.record,))

    def open_child(self) -> int:
        """The case's open sub-process case (NotAvailable when it waits on none)."""
        assert self.case_id is not None
        found = [c.case_id for c in self.sop.links(self.case_id)[1] if c.open]
        if not found:
            raise NotAvailable(
                f"case {self.case_id} waits on no sub-process: it has no open child case",
                hint="fire the event on the case itself (leave out `child: true`)",
            )
        return found[-1]

    def advance(self, seconds: int, *, working: bool = False) -> Outcome:
        """Move the clock on, firing each due timer at its own time, as a worker that never sleeps would."""
        assert self.case_id is not None
        records = len(self.sop.history(self.case_id))
        notices = len(self.sop.store.notification_log(self.case_id))
        now = self.clock.now
        if working:
            target = add_working_time(now, seconds, self.org.calendar) if seconds else now
        else:
            target = now + timedelta(seconds=seconds)
        for _ in range(MAX_TIMER_ROUNDS):
            due = self.sop.store.next_due()
            if due is None or due > target:
                break
            self.clock.now = max(due, self.clock.now)
            if not self.worker.tick().total:
                break  # a timer leased elsewhere: it is not ours to fire now
        self.clock.now = target
        self.worker.tick()
        new = self.sop.history(self.case_id)[records:]
        sent = tuple(
            (str(n["recipient"]), str(n["subject"]))
            for n in self.sop.store.notification_log(self.case_id)[notices:]
        )
        fired = tuple(name for name in (timer_name(r) for r in new) if name is not None)
        return Outcome(None, fired, sent, tuple(new))


def timer_name(record: AuditRecord) -> str | None:
    """The timer a record of the system's was written for: DEADLINE when breached, DEADLINE/N for rung N
    of its escalation ladder, timeout:STATE for a state's timeout; None for a person's step."""
    if record.actor != SYSTEM_ACTOR.id:
        return None
    detail = record.detail
    if "rung" in detail and "deadline" in detail:
        return f"{detail['deadline']}/{detail['rung']}"
    if record.event == "deadline_breached":
        return str(detail.get("deadline"))
    if detail.get("timer") == "timeout":
        return f"timeout:{record.from_state}"
    return None


class _Play:
    """Plays one scenario and compares each step with what the owner expects."""

    def __init__(self, sop: Engine, clock: FakeClock, org: Org, definition_id: str, verify: bool) -> None:
        self.verify = verify
        self.sop = sop
        self.driver = CaseDriver(sop, clock, org)
        self.definition_id = definition_id

    def scenario(self, scenario: Scenario) -> Difference | None:
        start = scenario.start
        outcome = self.driver.start(self.definition_id, start.actor, start.data)
        where = f"start (as {start.actor})"
        if outcome.refused is not None or self.driver.case_id is None or start.expect.refused is not None:
            return self._refusal(0, where, start.line, start.expect, outcome)
        found = self._check(0, where, start.line, start.expect, outcome)
        if found is not None:
            return found
        for step in scenario.steps:
            action = step.action
            before = self.sop.case(self.driver.case_id)
            if isinstance(action, Control):
                outcome = self.driver.control(action.act, action.actor, action.reason)
            elif isinstance(action, Fire):
                outcome = self.driver.fire(
                    action.event, action.actor, action.payload, action.comment, child=action.child
                )
            else:
                outcome = self._advance(action)
            where = step.describe()
            if outcome.refused is not None or step.expect.refused is not None:
                found = self._refusal(step.number, where, step.line, step.expect, outcome)
                if found is None and outcome.refused is not None:
                    after = self.sop.case(self.driver.case_id)
                    if (after.state, after.version, canonical(after.data)) != (
                        before.state,
                        before.version,
                        canonical(before.data),
                    ):
                        found = Difference(
                            step.number, where, step.line, "case", "left as it was", "changed by a refusal"
                        )
            if found is None:
                found = self._check(step.number, where, step.line, step.expect, outcome)
            if found is not None:
                return found
        if self.verify and not self.sop.verify(self.driver.case_id).ok:
            last = scenario.steps[-1] if scenario.steps else None
            where = last.describe() if last else "start"
            line = last.line if last else start.line
            return Difference(len(scenario.steps), where, line, "audit trail", "verified", "broken")
        return None

    def _advance(self, action: Advance) -> Outcome:
        return self.driver.advance(action.seconds, working=action.working)

    @staticmethod
    def _refusal(number: int, where: str, line: int, expect: Expect, outcome: Outcome) -> Difference | None:
        refused = outcome.refused
        if refused is None:
            return Difference(number, where, line, "refused", expect.refused, "accepted")
        if expect.refused != refused.kind:
            expected = expect.refused or "accepted"
            return Difference(number, where, line, "refused", expected, f"{refused.kind}: {refused.message}")
        return None

    def _check(
        self, number: int, where: str, line: int, expect: Expect, outcome: Outcome
    ) -> Difference | None:
        assert self.driver.case_id is not None
        case = self.sop.case(self.driver.case_id)

        def differ(what: str, expected: Any, actual: Any) -> Difference:
            return Difference(number, where, line, what, expected, actual)

        if expect.state is not None and case.state != expect.state:
            return differ("state", expect.state, case.state)
        if expect.child_state is not None or expect.child_deadlines is not None:
            children = self.sop.links(case.id)[1]
            child_state = children[-1].state if children else "(no sub-process case)"
            if expect.child_state is not None and child_state != expect.child_state:
                return differ("child_state", expect.child_state, child_state)
            running = sorted(d.name for d in self.sop.deadlines(children[-1].case_id)) if children else []
            if expect.child_deadlines is not None and running != sorted(expect.child_deadlines):
                return differ("child_deadlines", sorted(expect.child_deadlines), running)
        if expect.branches is not None:
            standing = {b.name: b.state for b in self.sop.branches(case.id)}
            found = {name: standing.get(name, "(no such open branch)") for name in expect.branches}
            if found != dict(expect.branches):
                return differ("branches", dict(expect.branches), found)
        if expect.assignee_given and case.assignee != expect.assignee:
            return differ("assignee", expect.assignee, case.assignee)
        for name, value in (expect.data or {}).items():
            if name not in case.data:
                return differ(f"data.{name}", value, "(no such field in the case's data)")
            if not same(case.data[name], value):
                return differ(f"data.{name}", value, case.data[name])
        if expect.deadlines is not None:
            running = sorted(d.name for d in self.sop.deadlines(case.id))
            if running != sorted(expect.deadlines):
                return differ("deadlines", sorted(expect.deadlines), running)
        if expect.timers_fired is not None and list(outcome.timers_fired) != list(expect.timers_fired):
            return differ("timers_fired", list(expect.timers_fired), list(outcome.timers_fired))
        if expect.notifications is not None and not _notices_match(
            expect.notifications, outcome.notifications
        ):
            wanted = [_notice_text(n) for n in expect.notifications]
            return differ(
                "notifications", wanted, [f"to {to}: {subject}" for to, subject in outcome.notifications]
            )
        return None


def _notices_match(expected: Sequence[ExpectedNotice], sent: Sequence[tuple[str, str]]) -> bool:
    """Whether each expected notification is one sent, one for one (order does not matter)."""
    if len(expected) != len(sent):
        return False
    left = list(sent)
    for notice in expected:
        match = next(
            (
                i
                for i, (to, subject) in enumerate(left)
                if to == notice.to and (notice.subject_contains is None or notice.subject_contains in subject)
            ),
            None,
        )
        if match is None:
            return False
        left.pop(match)
    return True


def _notice_text(notice: ExpectedNotice) -> str:
    words = f" containing `{notice.subject_contains}`" if notice.subject_contains else ""
    return f"to {notice.to}{words}"


def canonical(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def same(actual: Any, expected: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0, and mappings and lists compare item by item."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return actual == expected
    if isinstance(actual, Mapping) and isinstance(expected, Mapping):
        return actual.keys() == expected.keys() and all(same(actual[k], expected[k]) for k in actual)
    if isinstance(actual, list | tuple) and isinstance(expected, list | tuple):
        return len(actual) == len(expected) and all(same(a, e) for a, e in zip(actual, expected, strict=True))
    return bool(actual == expected)
