"""Baselines: the median handling time a step (or the whole process) is held to.

A baseline is either a benchmark figure its owner enters with its source (`set`), or the process's own
median of last month (`update`, which the worker runs at the start of every month). Baselines are
versioned: a new figure is a new row, never an overwrite, and the newest per step is the current one.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sopflow.engine.audit import GENESIS
from sopflow.engine.errors import NotFound, UsageError
from sopflow.engine.store import insight as sql
from sopflow.engine.store.insight import BaselineRow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sopflow.engine.anchor import Anchor
    from sopflow.engine.runtime import Engine
    from sopflow.engine.store import Store
    from sopflow.engine.verify import VerifyFinding

log = logging.getLogger("sopflow.insight")

PROCESS = ""
"""The step of a baseline for the whole process (its cycle time)."""

LONGEST = 366 * 86400
"""The longest baseline, seconds (a year): a longer figure is a typing slip, refused before it is kept."""

ACTION = "set a baseline of"

SOURCE_CHARS = 500
"""The longest source of a benchmark baseline: where the figure comes from, not a document."""


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return True
    return False


def authorise(engine: Engine, definition_id: str, actor: str) -> None:
    """Refuse (and record in the access log) a person who is neither an administrator nor of the process
    owner's role (or a role above it): a baseline decides what every manager's report flags."""
    from sopflow.engine.access import AccessDenied, refused
    from sopflow.engine.errors import NotPermitted
    from sopflow.engine.lifecycle.owner import decide_owner

    org = engine.org()
    try:
        person = engine.actor(actor, org=org)
    except NotFound as unknown:
        raise refused(
            engine,
            AccessDenied(
                unknown.message, actor, "baseline", f"definition {definition_id}", hint=unknown.hint or ""
            ),
        ) from None
    try:
        decide_owner(engine.definition(definition_id), org, person, ACTION)
    except NotPermitted as denied:
        raise refused(
            engine,
            AccessDenied(
                denied.message, person.id, "baseline", f"definition {definition_id}", hint=denied.hint or ""
            ),
        ) from None


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """The first moment of `month` (YYYY-MM, UTC) and of the month after."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}", month) is None:
            raise ValueError(month)
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(f"{month!r} is not a month", hint="write it as YYYY-MM, e.g. 2026-11") from None
    after = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, after


def previous_month(now: datetime) -> str:
    moment = now.astimezone(UTC)
    year, month = (moment.year - 1, 12) if moment.month == 1 else (moment.year, moment.month - 1)
    return f"{year:04d}-{month:02d}"


def set_baseline(
    engine: Engine, definition_id: str, step: str | None, seconds: float, *, source: str, actor: str
) -> BaselineRow:
    """Record a benchmark baseline for a step (None: the whole process's cycle time)."""
    definition = engine.definition(definition_id)
    states = {s.name for s in definition.all_states() if not s.final}
    if step is not None and any(s.name == step and s.final for s in definition.all_states()):
        raise UsageError(
            f"`{step}` is a final state of {definition.key}: nothing is handled there to hold to a baseline",
            hint=f"its steps: {', '.join(sorted(states))}",
        )
    if step is not None and step not in states:
        from sopflow.engine.definition.semantic import did_you_mean

        raise NotFound(
            f"{definition.key} has no step `{step}`",
            hint=did_you_mean(step, states) or f"its steps: {', '.join(sorted(states))}",
        )
    if not seconds > 0:
        raise UsageError("a baseline must be longer than zero", hint="give a duration such as 4h or 1h30m")
    if not (math.isfinite(seconds) and seconds <= LONGEST):
        raise UsageError(
            f"a baseline of {seconds:.0f} s is too long: at most {LONGEST // 86400}d",
            hint="give a duration such as 4h or 1h30m",
        )
    if not source.strip():
        raise UsageError("a benchmark baseline needs its source", hint='add --source "industry report 2026"')
    if len(source) > SOURCE_CHARS or not source.isprintable() or _unencodable(source):
        raise UsageError(
            f"a baseline's source is one line of text of at most {SOURCE_CHARS} characters",
            hint='e.g. --source "industry report 2026, table 3"',
        )
    authorise(engine, definition_id, actor)
    row = {
        "definition_id": definition_id, "step": step or PROCESS, "seconds": float(seconds),
        "kind": "benchmark", "source": source, "period": None, "created_at": engine.clock(),
        "created_by": actor,
    }  # fmt: skip
    sql.add_baselines(engine.store, [row])
    return sql.baselines(engine.store, definition_id)[-1]


def update(engine: Engine, month: str | None = None, *, actor: str = "$system") -> list[BaselineRow]:
    """Record every definition's own medians of `month` (default: last month) as its baselines, per step
    and for the whole process; a month already recorded is left as it is. The rows added."""
    from sopflow.engine.insight.refresh import refresh

    period = month or previous_month(engine.clock())
    start, after = month_bounds(period)
    if after > engine.clock():
        last = previous_month(engine.clock())
        raise UsageError(
            f"{period} has not ended: its medians are not complete yet",
            hint=f"the last complete month is {last}: sopflow baseline update --month {last}",
        )
    refresh(engine)
    definitions = sql.definitions_with_facts(engine.store)
    excluded = sql.orphan_ids(engine.store)
    if not actor.startswith("$"):  # `$system` (the worker) and `$operator` hold the database already
        for definition_id in definitions:
            authorise(engine, definition_id, actor)
    rows = []
    now = engine.clock()
    for definition_id in definitions:
        scope = sql.Scope(definition_id, start, after, excluded=excluded)
        figures = [(str(d.key), d.median) for d in sql.durations(engine.store, scope, "step")]
        figures += [(PROCESS, d.median) for d in sql.cycle_times(engine.store, scope)]
        for step, median in figures:
            if median is not None and median > 0:
                rows.append({
                    "definition_id": definition_id, "step": step, "seconds": median, "kind": "own",
                    "source": f"own median of {period}", "period": period, "created_at": now,
                    "created_by": actor,
                })  # fmt: skip
    before = {r.id for r in sql.baselines(engine.store)}
    sql.add_baselines(engine.store, rows)
    return [r for r in sql.baselines(engine.store) if r.id not in before]


def current(engine: Engine, definition_id: str) -> dict[str, BaselineRow]:
    """The current baseline per step (`PROCESS` for the whole process): the newest."""
    found: dict[str, BaselineRow] = {}
    for row in sql.baselines(engine.store, definition_id):
        found[row.step] = row
    return found


def history(engine: Engine, definition_id: str | None = None) -> list[BaselineRow]:
    if definition_id is not None:
        engine.definition(definition_id)  # NotFound names it
    return sql.baselines(engine.store, definition_id)


def head(store: Store) -> tuple[int, str]:
    """How many baselines there are and the hash of the newest (what an anchor holds of them)."""
    rows = sql.baselines(store)
    return len(rows), rows[-1].hash if rows else GENESIS


def findings(store: Store, anchors: Sequence[Anchor] = ()) -> list[VerifyFinding]:
    """`audit verify`'s check of the baselines: each row that breaks their chain (edited, or one before it
    removed), and against each anchor holding their head, rows removed from the end or rewritten."""
    from sopflow.engine.verify import VerifyFinding, anchored_rows

    rows = sql.baselines(store)
    found = [
        VerifyFinding(None, None, problem, f"baseline {i}") for i, problem in sql.baseline_findings(rows)
    ]
    hashes = [r.hash for r in rows]
    for anchor in anchors:
        found += anchored_rows(anchor.label, anchor.baselines, hashes, "baselines", "rows")
    return found


@dataclass(slots=True)
class MonthlyUpdate:
    """The worker's monthly baseline update: at the first tick of a month, last month's medians."""

    engine: Engine
    done: str | None = None

    def run_due(self, now: datetime) -> list[BaselineRow] | None:
        period = previous_month(now)
        if self.done == period:
            return None
        added = update(self.engine, period)
        self.done = period
        if added:
            log.info("baselines of %s recorded (%d)", period, len(added))
        return added

    def run(self, stop: threading.Event, every: float = 3600.0) -> None:
        while not stop.is_set():
            try:
                self.run_due(self.engine.clock())
            except Exception:  # pragma: no cover - a bug must not end the worker's other duties
                log.exception("the monthly baseline update failed")
            stop.wait(every)
