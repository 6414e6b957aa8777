"""Keeping the derived tables equal to the trail, and proving that they are.

`refresh` derives the cases whose trail grew since they were last derived (`insight_progress`), a batch
at a time, each batch in one transaction: a report starts with it, the worker runs it on every tick, so
the step itself never pays for the figures. `check` derives every case again from its trail and names
each case whose stored rows differ (`sopflow report --check`, `audit verify`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING

from sopflow.engine.definition.model import Org, WorkingCalendar
from sopflow.engine.insight.derive import CaseFacts, derive
from sopflow.engine.store import insight as sql

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine
    from sopflow.engine.verify import VerifyFinding

BATCH = 500


class Calendars:
    """The org calendar in force at a moment, from the org history (the first org before any was)."""

    def __init__(self, engine: Engine) -> None:
        from sopflow.engine.definition.build import build_org
        from sopflow.engine.definition.loader import parse_yaml

        built: dict[str, Org] = {}
        self._history: list[tuple[datetime, WorkingCalendar]] = []
        for _id, row in engine.store.org_history():
            org = built.get(row.content_hash)
            if org is None:
                org = built[row.content_hash] = build_org(parse_yaml(row.source_text, row.file))
            self._history.append((row.deployed_at, org.calendar))

    def at(self, moment: datetime) -> WorkingCalendar:
        if not self._history:
            return WorkingCalendar()
        found = self._history[0][1]
        for deployed, calendar in self._history:
            if deployed <= moment:
                found = calendar
        return found


def facts_of(engine: Engine, case_ids: list[int], calendars: Calendars) -> dict[int, tuple[CaseFacts, int]]:
    """The facts of each case computed from its trail, with the last record they cover."""
    owners = sql.case_definitions(engine.store, case_ids)
    histories = engine.store.histories(case_ids)
    found: dict[int, tuple[CaseFacts, int]] = {}
    for cid in case_ids:
        history = histories.get(cid, [])
        if cid not in owners or not history:
            continue
        definition_id, version, _last = owners[cid]
        definition = engine.definition(definition_id, version)
        found[cid] = (derive(definition, history, calendars.at), history[-1].seq)
    return found


def refresh(
    engine: Engine, definition_id: str | None = None, *, progress: Callable[[int], None] | None = None
) -> int:
    """Derive every case whose trail grew since it was last derived; how many cases were."""
    calendars = Calendars(engine)
    done = 0
    while True:
        ids = sql.stale_cases(engine.store, BATCH, definition_id)
        if not ids:
            return done
        facts = facts_of(engine, ids, calendars)
        sql.replace_derived(
            engine.store,
            ids,
            (s for f, _ in facts.values() for s in f.steps),
            (s for f, _ in facts.values() for s in f.spans),
            {cid: last for cid, (_f, last) in facts.items()},
        )
        done += len(ids)
        if progress is not None:
            progress(done)
        if len(facts) < len(ids):  # a case with no row or no trail: audit verify names it
            return done


def check(engine: Engine, case_ids: list[int] | None = None) -> list[tuple[int, str]]:
    """(case, what differs) for every derived case whose stored rows are not what its trail gives."""
    calendars = Calendars(engine)
    problems: list[tuple[int, str]] = [] if case_ids is not None else sql.orphans(engine.store)
    after = 0
    while True:
        if case_ids is not None:
            batch, case_ids = case_ids[:BATCH], case_ids[BATCH:]
        else:
            batch = sql.derived_case_ids(engine.store, after, BATCH)
        if not batch:
            return problems
        after = batch[-1]
        facts = facts_of(engine, batch, calendars)
        stored_steps, stored_spans = sql.derived_of(engine.store, batch)
        covered = sql.progress_of(engine.store, batch)
        for cid in batch:
            if cid not in covered:
                continue
            fact = facts.get(cid)
            steps = [asdict(s) for s in fact[0].steps if s.seq <= covered[cid]] if fact else []
            spans = [asdict(s) for s in fact[0].spans] if fact else []
            mine = [r for r in stored_steps if r["case_id"] == cid]
            my_spans = [r for r in stored_spans if r["case_id"] == cid]
            if fact is not None and fact[1] > covered[cid]:
                continue  # derived before its last records: the next refresh derives it again
            problem = _differs(steps, mine, "insight_steps", "seq") or _differs(
                spans, my_spans, "insight_spans", "started_seq"
            )
            if problem is not None:
                problems.append((cid, problem))


def _differs(
    expected: list[dict[str, object]], stored: list[dict[str, object]], table: str, key: str
) -> str | None:
    if len(expected) != len(stored):
        return f"{table} holds {len(stored)} row(s), its trail gives {len(expected)}"
    for want, have in zip(expected, stored, strict=True):
        for column, value in want.items():
            got = have.get(column)
            if isinstance(value, float) and isinstance(got, (int, float)):
                if abs(value - float(got)) > 1e-5:
                    return f"{table} row {want[key]}: {column} is {got}, its trail gives {value}"
            elif value != got:
                return f"{table} row {want[key]}: {column} is {got!r}, its trail gives {value!r}"
    return None


def findings(engine: Engine, case_ids: list[int] | None = None) -> list[VerifyFinding]:
    """`audit verify`'s check of the derived figures: one finding per case whose stored figures are not
    what its trail gives (the figures a report shows could not be trusted)."""
    from sopflow.engine.verify import VerifyFinding

    return [
        VerifyFinding(cid, None, f"its report figures differ from its trail: {problem}", "insight")
        for cid, problem in check(engine, case_ids)
    ]
