"""Meaning checks on a built definition (and on an org): what the JSON Schema cannot see.

Each check is a small function that yields `Problem`s pointing at the line and column the process
owner has to change, with a stable code and, where it helps, a hint (often "did you mean ...?").
`check_definition` runs them all and returns every problem, sorted by position, so one run of
`sopflow validate` shows everything that is wrong.

The checks live in modules by subject: `graph` (the states and how they connect), `actors` (roles,
approvals, who may act), `guards` (events and their guards), `timing` (durations, timeouts,
deadlines), `schemas` (the embedded JSON Schemas and the fields they declare) and `org` (the org
file); `context` holds what they share.
"""

from __future__ import annotations

from sopflow.engine.definition.loader import Document
from sopflow.engine.definition.model import Definition, Org
from sopflow.engine.definition.semantic.actors import check_actors, check_owners, check_quorum, check_roles
from sopflow.engine.definition.semantic.automatic import CODES as AUTOMATIC_CODES
from sopflow.engine.definition.semantic.automatic import check_automatic
from sopflow.engine.definition.semantic.context import Check, Context, did_you_mean, sort_problems
from sopflow.engine.definition.semantic.control import CODES as CONTROL_CODES
from sopflow.engine.definition.semantic.control import check_control, check_reentry
from sopflow.engine.definition.semantic.duties import CODES as DUTY_CODES
from sopflow.engine.definition.semantic.duties import (
    check_approval_fields,
    check_clock_events,
    check_computes,
    check_exclusions,
    check_self_exclusion,
    check_start,
    check_user_fields,
)
from sopflow.engine.definition.semantic.graph import (
    check_choice_branches,
    check_choice_mixed,
    check_final_exits,
    check_finishing,
    check_reachability,
    check_state_kinds,
    check_unknown_states,
)
from sopflow.engine.definition.semantic.guards import (
    check_alternative_payloads,
    check_duplicate_events,
    check_guards,
)
from sopflow.engine.definition.semantic.measures import CODES as MEASURE_CODES
from sopflow.engine.definition.semantic.measures import check_measures
from sopflow.engine.definition.semantic.org import ORG_CHECKS, ORG_CODES, check_org
from sopflow.engine.definition.semantic.parallel import CODES as PARALLEL_CODES
from sopflow.engine.definition.semantic.parallel import check_parallel
from sopflow.engine.definition.semantic.privacy import CODES as PRIVACY_CODES
from sopflow.engine.definition.semantic.privacy import check_privacy
from sopflow.engine.definition.semantic.schedules import CODES as SCHEDULE_CODES
from sopflow.engine.definition.semantic.schedules import check_schedules
from sopflow.engine.definition.semantic.schemas import (
    check_data_fields,
    check_schema_keywords,
    check_schema_numbers,
    check_schema_satisfiable,
    check_schema_validity,
)
from sopflow.engine.definition.semantic.subprocesses import CODES as SUBPROCESS_CODES
from sopflow.engine.definition.semantic.subprocesses import check_subprocess_fields
from sopflow.engine.definition.semantic.timing import (
    check_deadline_closes,
    check_deadline_ends,
    check_durations,
    check_escalations,
    check_events,
    check_rungs_after_breach,
    check_timed_guards,
)
from sopflow.engine.errors import Problem

__all__ = [
    "DEFINITION_CHECKS",
    "ORG_CHECKS",
    "ORG_CODES",
    "SEMANTIC_CODES",
    "Check",
    "check_definition",
    "check_org",
    "did_you_mean",
    "sort_problems",
]

SEMANTIC_CODES = (
    "unknown-state",
    "unreachable-state",
    "cannot-finish",
    "no-final-state",
    "final-state-exits",
    "state-kind-conflict",
    "choice-mixed",
    "choice-without-else",
    "else-not-last",
    "else-with-when",
    "unknown-role",
    "duplicate-event",
    "bad-duration",
    "unknown-event",
    "bad-escalation",
    "deadline-never-ends",
    "no-actor",
    "bad-quorum",
    "unknown-data-field",
    "unknown-payload-field",
    "no-owner",
    "bad-data-schema",
    "unknown-schema-keyword",
    "unsatisfiable-schema",
    "payload-in-choice",
    "deadline-outlives-case",
    "alternatives-differ",
    "timed-event-guard",
    "quorum-needs-submitter",
    "escalation-before-breach",
    *SCHEDULE_CODES,
    *DUTY_CODES,
    *SUBPROCESS_CODES,
    *PARALLEL_CODES,
    *AUTOMATIC_CODES,
    *CONTROL_CODES,
    *PRIVACY_CODES,
    *MEASURE_CODES,
)
"""Every code `check_definition` itself reports (guard problems carry the expression module's codes)."""


DEFINITION_CHECKS: tuple[Check, ...] = (
    check_unknown_states,
    check_reachability,
    check_finishing,
    check_final_exits,
    check_state_kinds,
    check_choice_mixed,
    check_choice_branches,
    check_roles,
    check_quorum,
    check_actors,
    check_owners,
    check_duplicate_events,
    check_events,
    check_durations,
    check_deadline_ends,
    check_deadline_closes,
    check_escalations,
    check_alternative_payloads,
    check_timed_guards,
    check_data_fields,
    check_schema_validity,
    check_schema_numbers,
    check_schema_keywords,
    check_schema_satisfiable,
    check_guards,
    check_rungs_after_breach,
    check_schedules,
    check_exclusions,
    check_self_exclusion,
    check_start,
    check_computes,
    check_user_fields,
    check_clock_events,
    check_approval_fields,
    check_subprocess_fields,
    check_parallel,
    check_automatic,
    check_reentry,
    check_control,
    check_privacy,
    check_measures,
)


def check_definition(defn: Definition, doc: Document, org: Org | None) -> list[Problem]:
    """Every meaning problem of the definition (role checks only when an org is given), sorted."""
    ctx = Context(defn, doc, org)
    return sort_problems(p for check in DEFINITION_CHECKS for p in check(ctx))
