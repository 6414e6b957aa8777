"""Pieces of case handling that the runtime and the people module both use, so that neither reaches into
the other: the bounds of a page of cases, the votes of an approval as the step counts them, an event's
required payload fields, and a dry run of one event for one person.

The dependency runs one way: `runtime` imports `people` and this module; `people` imports this module
and never `runtime`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sopflow.engine.audit import AuditRecord, iso, seal
from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.model import APPROVE, REJECT, Definition, Org, Transition
from sopflow.engine.errors import InvalidData, SopflowError, UsageError
from sopflow.engine.step import Actor, People, Refused, Snapshot, Step, Vote, take_step
from sopflow.engine.store import CaseChange, StoredVote

MAX_PAGE = 10_000


def start_change(definition: Definition, step: Step, submitter: str) -> CaseChange:
    """The new case's row as a start step leaves it: in its first state, entered."""
    return CaseChange(
        state=step.to_state,
        open=not definition.states[step.to_state].final,
        data=step.data,
        assignee=step.assignee,
        submitter=submitter,
        entered=True,
    )


def start_record(
    case_id: int,
    definition: Definition,
    step: Step,
    actor: str,
    now: datetime,
    detail: Mapping[str, Any],
) -> AuditRecord:
    """The sealed first record of a case: who started it, into which state, with which data."""
    return seal(
        AuditRecord(
            case_id=case_id,
            seq=1,
            at=iso(now),
            actor=actor,
            role=step.role,
            event="start",
            from_state=None,
            to_state=step.to_state,
            outcome="accepted",
            definition_hash=definition.content_hash,
            prev_hash="0" * 64,
            data_change=step.data_change,
            detail=detail,
        )
    )


def check_limit(limit: int) -> None:
    """A page of cases holds 1 to 10,000."""
    if limit < 1 or limit > MAX_PAGE:
        raise UsageError(
            f"limit {limit} is out of range",
            hint=f"use 1 to {MAX_PAGE} and page with after_id",
        )


def votes_of(stored: Iterable[StoredVote]) -> tuple[Vote, ...]:
    """The votes of an approval as the step's rules count them: a vote cast on someone's behalf is theirs."""
    return tuple(
        Vote(v.on_behalf_of or v.voter, v.role or "", "approve" if v.event == APPROVE else "reject")
        for v in stored
        if v.event in (APPROVE, REJECT)
    )


def fired_of(stored: Iterable[StoredVote]) -> tuple[tuple[str, str], ...]:
    """(event, person) of a case's accepted steps as the step's rules see them: a step taken on someone's
    behalf is theirs, as a vote is."""
    return tuple((v.event, v.on_behalf_of or v.voter) for v in stored)


def required_fields(alternatives: Sequence[Transition]) -> tuple[str, ...]:
    """The payload fields an event requires (those of its first alternative)."""
    return tuple(f for t in alternatives[:1] if t.payload for f in t.payload.get("required", ()))


def may_fire(
    compiled: CompiledDefinition,
    snapshot: Snapshot,
    person: Actor,
    event: str,
    org: Org,
    fields: tuple[str, ...],
) -> tuple[bool, str | None]:
    """Whether `person` may fire `event` on a case as `snapshot` shows it (nothing is written), and if
    not, why; `fields` are the payload fields the event requires, which a dry run cannot give."""
    people = People(org, lambda role: org.members(role)[0] if org.members(role) else None)
    try:
        take_step(compiled, snapshot, person, event, {}, people)
    except Refused as refused:
        return False, refused.error.message
    except InvalidData as exc:
        if fields:
            return True, f"needs {', '.join(fields)}"
        return False, exc.message
    except SopflowError as exc:
        return False, exc.message
    return True, None


MAX_COMMENT_BYTES = 16 * 1024
"""A comment above this size (in UTF-8) is refused: it is a note in the audit trail, not a document."""


def check_comment(comment: str | None) -> None:
    """Refuse (InvalidData) a comment larger than MAX_COMMENT_BYTES, or one that is not text (a lone
    surrogate, as a terminal that is not UTF-8 hands over)."""
    if comment is None:
        return
    try:
        size = len(comment.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidData(
            f"the comment is not text: character {exc.start + 1} is half of a UTF-16 surrogate pair "
            "(a terminal or file that is not UTF-8)",
            hint="give the comment as UTF-8 text",
        ) from None
    if size > MAX_COMMENT_BYTES:
        raise InvalidData(
            f"the comment is {size} bytes, more than the {MAX_COMMENT_BYTES} a comment may hold",
            hint="keep documents elsewhere and put their links in the comment or the payload",
        )
