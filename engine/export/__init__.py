"""Exports of cases and their events, streamed: CSV (one row per event), JSON Lines (one case per line) and
XES (IEEE 1849, for process-mining tools), each optionally desensitised (`engine.privacy`).

Cases are read a batch at a time (`engine.store.export`) and written as they come, so memory stays flat
in the number of cases. A desensitised export keeps, of every field its definition marks `x-sensitive`,
what the class allows; replaces every person (who started, holds or took a step) with a token; and drops
what may hold anything (comments, reasons, the facts behind a step). `scope` holds the export to the cases
the reader may export (`engine.access`, applied in SQL).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from sopflow.engine.audit import AuditRecord
from sopflow.engine.definition.model import AUTOMATIC_DONE, AUTOMATIC_FAILED, CONTROL_RECORDS, RESUME
from sopflow.engine.errors import NotFound, UsageError
from sopflow.engine.export.csv import CsvWriter
from sopflow.engine.export.jsonl import JsonLinesWriter
from sopflow.engine.export.xes import XesWriter
from sopflow.engine.privacy import DROP, Desensitiser, marks_of
from sopflow.engine.store.export import ExportQuery, cases_with_trails, count
from sopflow.engine.store.records import CaseRow, Scope

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine

FORMATS = ("csv", "jsonl", "xes")
Progress = Callable[[int, int], None]
"""Called with (cases written, cases in the export) as the export goes."""


@dataclass(frozen=True, slots=True)
class ExportReport:
    format: str
    cases: int
    events: int
    desensitised: bool
    key_id: str | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "cases": self.cases,
            "events": self.events,
            "desensitised": self.desensitised,
            "key_id": self.key_id,
            "seconds": round(self.seconds, 3),
        }


class Writer(Protocol):
    """What each format implements: a header, each case with its events, an end."""

    def begin(self, meta: Mapping[str, Any]) -> None: ...

    def case(self, case: Mapping[str, Any], events: list[dict[str, Any]]) -> None: ...

    def end(self) -> None: ...


WRITERS: dict[str, Callable[[BinaryIO], Writer]] = {
    "csv": CsvWriter,
    "jsonl": JsonLinesWriter,
    "xes": XesWriter,
}


def export(
    engine: Engine,
    out: BinaryIO,
    fmt: str,
    *,
    definition: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    desensitiser: Desensitiser | None = None,
    reader: str | None = None,
    progress: Progress | None = None,
    scope: Scope | None = None,
) -> ExportReport:
    """Write the cases the filters select, with their events, to `out` in `fmt` (see the module)."""
    started = time.perf_counter()
    if fmt not in WRITERS:
        raise UsageError(f"`{fmt}` is not an export format", hint=f"use one of {', '.join(FORMATS)}")
    if since is not None and until is not None and since >= until:
        raise UsageError("--since is not before --until", hint="give a period that starts before it ends")
    if definition is not None and engine.store.definition(definition) is None:
        raise NotFound(f"no definition `{definition}` is deployed", hint="see `sopflow defs list`")
    query = ExportQuery(definition, since, until, scope)
    total = count(engine.store.engine, query)
    writer = WRITERS[fmt](out)
    writer.begin(
        {
            "definition": definition,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "desensitised": desensitiser is not None,
            "key_id": desensitiser.key_id if desensitiser else None,
            "reader": reader,
        }
    )
    views = Views(engine, desensitiser)
    cases = events = 0
    for row, trail in cases_with_trails(engine.store.engine, query):
        case, steps = views.of(row, trail)
        if fmt == "xes":
            # Process mining reads every event as an activity: only the steps of the process go in.
            steps = [s for s in steps if views.is_activity(row, s["event"])]
        writer.case(case, steps)
        cases += 1
        events += len(steps)
        if progress is not None:
            progress(cases, total)
    writer.end()
    return ExportReport(
        fmt,
        cases,
        events,
        desensitiser is not None,
        desensitiser.key_id if desensitiser else None,
        time.perf_counter() - started,
    )


STEPS = frozenset({"start", "claim", "start_work", AUTOMATIC_DONE, AUTOMATIC_FAILED, RESUME})
"""Steps a process takes besides its definition's events: the start, a task claimed and its work begun,
an automatic step done (or handed to a person), a sub-process's case come back."""


class Views:
    """A case and its records as an export (or a desensitised read, `engine.access`) shows them,
    desensitised when a desensitiser is given; the
    marks of each definition version are read once."""

    def __init__(self, engine: Engine, desensitiser: Desensitiser | None) -> None:
        self.engine = engine
        self.d = desensitiser
        self._marks: dict[tuple[str, int], tuple[dict[str, Any], dict[str, dict[str, Any]]]] = {}
        self._activities: dict[tuple[str, int], frozenset[str]] = {}

    def marks(self, definition_id: str, version: int) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        key = (definition_id, version)
        if key not in self._marks:
            defn = self.engine.definition(definition_id, version)
            data = marks_of(defn.data_schema)
            payloads: dict[str, dict[str, Any]] = {}
            for s in defn.all_states():
                for t in s.transitions:
                    if t.payload is not None:
                        # A payload field also named like a marked data field is treated as that field.
                        payloads.setdefault(t.event, dict(data)).update(marks_of(t.payload))
            self._marks[key] = (data, payloads)
        return self._marks[key]

    def is_activity(self, row: CaseRow, event: str) -> bool:
        """Whether `event` is a step of the case's process: the start, or an event of its definition
        version (a person's, an automatic step's or a timer's). Deadline breaches, escalations,
        reassignments, suspensions, cancellations and migrations are records about the case, not steps."""
        key = (row.definition_id, row.definition_version)
        if key not in self._activities:
            defn = self.engine.definition(*key)
            events = {event for s in defn.all_states() for event in s.events}
            self._activities[key] = frozenset(events - CONTROL_RECORDS) | STEPS
        return event in self._activities[key]

    def of(self, row: CaseRow, trail: list[AuditRecord]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        d = self.d
        case: dict[str, Any] = {
            "case": row.id,
            "definition": row.definition_id,
            "version": row.definition_version,
            "state": row.state,
            "open": row.open,
            "starter": row.starter,
            "assignee": row.assignee,
            "submitter": row.submitter,
            "created_at": _iso(row.created_at),
            "updated_at": _iso(row.updated_at),
            "data": row.data,
        }
        steps = [_step(r) for r in trail]
        if d is None:
            return case, steps
        data_marks, payload_marks = self.marks(row.definition_id, row.definition_version)
        case["data"] = d.data(data_marks, row.data)
        for name in ("starter", "assignee", "submitter"):
            case[name] = d.person(case[name])
        for step in steps:
            step["actor"] = d.person(step["actor"])
            step["on_behalf_of"] = d.person(step["on_behalf_of"])
            step["payload"] = d.data(payload_marks.get(step["event"], data_marks), step["payload"])
            step["data_change"] = dict(_changes(d, data_marks, step["data_change"]))
            # Free text and the facts behind a step may hold anything: a desensitised export leaves them out.
            step["comment"] = step["reason"] = None
            step["detail"] = {}
        return case, steps


def _changes(
    d: Desensitiser, marks: Mapping[str, Any], change: Mapping[str, Any]
) -> Iterator[tuple[str, Any]]:
    for name, pair in change.items():
        if name not in marks:
            yield name, pair
            continue
        kept = [d.data({name: marks[name]}, {name: v}).get(name, DROP) for v in pair]
        if all(v is not DROP for v in kept):
            yield name, kept


def _step(r: AuditRecord) -> dict[str, Any]:
    return {
        "seq": r.seq,
        "at": r.at,
        "event": r.event,
        "from_state": r.from_state,
        "to_state": r.to_state,
        "outcome": r.outcome,
        "actor": r.actor,
        "role": r.role,
        "on_behalf_of": r.on_behalf_of,
        "payload": dict(r.payload),
        "data_change": dict(r.data_change),
        "comment": r.comment,
        "reason": r.reason,
        "detail": dict(r.detail),
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
