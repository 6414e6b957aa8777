"""Schedules: a cron expression croniter reads, and start data (with the period) that the definition's
`data` schema accepts, so that a scheduled start is never refused at run time when nobody is watching."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from sopflow.engine.definition.model import WorkingCalendar, thawed_json
from sopflow.engine.definition.semantic.context import Context
from sopflow.engine.errors import Problem
from sopflow.engine.schedule import cron_problem, start_data

CODES = ("bad-cron", "bad-schedule-data")
"""The codes `check_schedules` reports."""
CRON_HINT = (
    "five fields, minute hour day-of-month month day-of-week: `0 17 L * *` is 17:00 on the last day of "
    "each month"
)
SAMPLE_PERIOD = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)


def check_schedules(ctx: Context) -> Iterator[Problem]:
    defn = ctx.defn
    schema = thawed_json(defn.data_schema)
    try:
        validator = Draft202012Validator(schema)
        Draft202012Validator.check_schema(schema)
    except SchemaError:
        validator = None  # bad-data-schema says so; the start data cannot be checked against it
    properties = schema.get("properties") if isinstance(schema, dict) else None
    for s in defn.schedules:
        problem = cron_problem(s.cron)
        if problem is not None:
            yield ctx.problem((*s.path, "cron"), "bad-cron", f"`{s.cron}`: {problem}", CRON_HINT)
        if not isinstance(properties, dict) or s.period_field not in properties:
            yield ctx.problem(
                s.path,
                "bad-schedule-data",
                f"the schedule puts its period in `{s.period_field}`, which `data` does not declare",
                f"add `{s.period_field}: {{type: string}}` to the properties of `data`",
                key=True,
            )
            continue
        if validator is None:
            continue
        data = start_data(s, SAMPLE_PERIOD, WorkingCalendar())
        error = next(iter(sorted(validator.iter_errors(data), key=lambda e: list(e.path))), None)
        if error is not None:
            where = ".".join(str(p) for p in error.path) or "the data"
            yield ctx.problem(
                (*s.path, "data") if ctx.raw((*s.path, "data")) is not None else s.path,
                "bad-schedule-data",
                f"a case this schedule starts would be refused: {where}: {error.message}",
                "give the schedule's `data` every field `data` requires, with a valid value",
                key=ctx.raw((*s.path, "data")) is None,
            )
