"""Commands for operators: start, fire, show, list, history."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from sopflow.cli.main import emit, settings
from sopflow.cli.output import case_dict, print_result, record_dict
from sopflow.cli.params import CASE, JSON_FILE, JSON_OBJECT, LIMIT, VERSION, WHERE, Where, data_of
from sopflow.cli.render import ago, safe_lines, table, text

if TYPE_CHECKING:
    from collections.abc import Callable

    from sopflow.engine.audit import AuditRecord
    from sopflow.engine.definition.model import State
    from sopflow.engine.runtime import Case, Engine


@click.command()
@click.argument("definition")
@click.option("--data", "data_json", type=JSON_OBJECT, help="The case's data, as a JSON object.")
@click.option("--data-file", type=JSON_FILE, help="A file holding the case's data as a JSON object.")
@click.option(
    "--key",
    help="An idempotency key (default: a new one): the same start again with it returns the same case.",
)
@click.option("--version", type=VERSION, help="A definition version (default: the newest deployed).")
def start(
    definition: str,
    data_json: dict[str, Any] | None,
    data_file: dict[str, Any] | None,
    key: str | None,
    version: int | None,
) -> None:
    """Start a case of a deployed definition, as the --as user."""
    s = settings()
    result = s.engine().start(
        definition, data_of(data_json, data_file), actor=s.actor(), key=key, version=version
    )
    print_result(result)


@click.command()
@click.argument("case", type=CASE)
@click.argument("event")
@click.option("--data", "data_json", type=JSON_OBJECT, help="The event's payload, as a JSON object.")
@click.option("--data-file", type=JSON_FILE, help="A file holding the payload as a JSON object.")
@click.option("--comment", help="A comment, kept in the audit trail (at most 16 KiB).")
@click.option(
    "--expect-version", type=VERSION, help="Refuse (conflict) if the case changed since this version."
)
@click.option(
    "--key", help="An idempotency key (default: a new one): the same step again with it writes nothing."
)
@click.option(
    "--branch",
    help="In a parallel state: the branch the event is for (needed only when several open branches have it).",
)
def fire(
    case: int,
    event: str,
    data_json: dict[str, Any] | None,
    data_file: dict[str, Any] | None,
    comment: str | None,
    expect_version: int | None,
    key: str | None,
    branch: str | None,
) -> None:
    """Fire EVENT on CASE as the --as user (exit 1 if refused; the refusal is audited)."""
    s = settings()
    result = s.engine().fire(
        case,
        f"{branch}.{event}" if branch else event,
        actor=s.actor(),
        payload=data_of(data_json, data_file),
        comment=comment,
        expect_version=expect_version,
        key=key,
    )
    print_result(result)


@click.command()
@click.argument("case", type=CASE)
def show(case: int) -> None:
    """A case: its state, data, who may do what now (and why not), and its deadlines."""
    s = settings()
    engine = s.engine()
    viewer = s.user  # None: the operator, who sees every case (docs/operations.md)
    c = engine.case(case, viewer=viewer)
    definition = engine.definition(c.definition_id, c.definition_version)
    options = engine.options(c.id, viewer, viewer=viewer) if viewer else []
    deadlines = engine.deadlines(c.id, viewer=viewer)
    now = engine.clock()
    parent, children = engine.links(c.id, viewer=viewer)
    branches = engine.branches(c.id, viewer=viewer) if c.open else []
    if s.json:
        emit(
            {
                "case": case_dict(c),
                "parent": None
                if parent is None
                else {"case": parent.parent_case_id, "record": parent.parent_seq},
                "children": [
                    {"case": k.case_id, "definition": k.definition_id, "state": k.state, "open": k.open}
                    for k in children
                ],
                "options": [
                    {
                        "event": o.event,
                        "allowed": o.allowed,
                        "reason": o.reason,
                        "by": list(o.by),
                        "targets": list(o.targets),
                        "payload_fields": list(o.payload_fields),
                    }
                    for o in options
                ],
                "deadlines": [d.as_dict(now) for d in deadlines],
                "branches": [b.as_dict() for b in branches],
            }
        )
        return
    echo = _safe_echo
    state = definition.states[c.state]
    echo(f"case {c.id}  {c.definition_key}  {text(definition.title)}")
    _echo_state(echo, engine, c, state, now, viewer)
    if state.owner:
        echo(f"owner    {state.owner}" + (f"   assignee: {c.assignee}" if c.assignee else ""))
    if state.output:
        echo(f"output   {text(state.output)}")
    if state.instructions:
        echo(f"do       {text(state.instructions)}")
    echo(
        f"started  by {c.starter}, {ago(c.created_at, now)} ago; in this state for {ago(c.entered_at, now)}"
        f"; version {c.version}"
    )
    if c.starter == "$system":
        # The system starts a case only for a schedule; its start record says which, and the period.
        first = engine.history(c.id, viewer=viewer)[0].detail
        if "schedule" in first:
            echo(f"schedule {first['schedule']}, period {first.get('period')}")
    echo("data     " + json.dumps(dict(c.data), ensure_ascii=False, indent=2).replace("\n", "\n         "))
    if parent is not None:
        echo(f"parent   case {parent.parent_case_id} (started this case by its record {parent.parent_seq})")
    for k in children:
        echo(f"child    case {k.case_id}  {k.definition_id}  {k.state}  {'open' if k.open else 'closed'}")
    for b in branches:
        who = ", ".join(x for x in (b.owner, b.assignee and f"assignee: {b.assignee}") if x)
        who += " (running on after the join)" if b.after_join else ""
        echo(f"branch   {b.name}: {b.state} ({text(b.state_title)})" + (" done" if b.done else f"  {who}"))
    approval = engine.approval_progress(c.id, viewer=viewer)
    if approval is not None:
        echo(f"approval {approval}")
    for d in deadlines:
        echo(f"deadline {d.describe(now)}")
    if not c.open:
        return
    if not viewer:
        echo("(pass --as USER to see what that person may do now)")
        return
    echo(f"what {viewer} may do now:")
    for o in options:
        mark = "yes" if o.allowed else "no "
        why = f"  ({o.reason})" if o.reason else ""
        vote = state.approval is not None and o.event in ("approve", "reject")
        where = ", ".join(o.targets) or "(stays)"
        if vote:
            where = f"{where} when the rule is met (a vote)"
        echo(f"  {mark} {o.event} → {where}{why}")


def _echo_state(
    echo: Callable[[str], None], engine: Engine, c: Case, state: State, now: datetime, viewer: str | None
) -> None:
    """The state line, and where its work item stands: offered, allocated or started (and by whom)."""
    item = engine.work_item(c.id, viewer=viewer)
    closed = "  (suspended: resume it to go on)" if item.status == "suspended" else "  (closed)"
    echo(f"state    {c.state}: {text(state.title)}" + ("" if c.open else closed))
    if item.status == "offered":
        echo(f"work     offered to {item.offered_to}: nobody has claimed it")
    elif item.status == "started" and item.started_at is not None:
        echo(f"work     started by {item.started_by}, {ago(item.started_at, now)} ago")
    elif item.status == "allocated":
        echo(f"work     allocated to {item.assignee}, not started yet")


def _safe_echo(line: str) -> None:
    """Print a line of `show`: the case's data and people's names are shown, never acted on."""
    click.echo(safe_lines(line))


@click.command("list")
@click.option("--definition", help="Only cases of this definition id.")
@click.option("--state", help="Only cases in this state.")
@click.option("--mine", is_flag=True, help="Only cases assigned to the --as user.")
@click.option("--all", "include_closed", is_flag=True, help="Include closed cases.")
@click.option("--suspended", is_flag=True, help="Only suspended cases (open ones list them too).")
@click.option(
    "--where",
    "where",
    type=WHERE,
    multiple=True,
    help="FIELD=VALUE: a data field equals a JSON value or a bare word (repeatable).",
)
@click.option("--limit", type=LIMIT, default=50, show_default=True, help="At most this many (oldest first).")
@click.option("--after", type=CASE, help="Only cases after this case number (to page).")
@click.option("--overdue", is_flag=True, help="Cases with a breached deadline, oldest breach first.")
def list_cases(
    definition: str | None,
    state: str | None,
    mine: bool,
    include_closed: bool,
    suspended: bool,
    where: tuple[Where, ...],
    limit: int,
    after: int | None,
    overdue: bool,
) -> None:
    """Cases, oldest first: by definition, state, assignee or data field; or the overdue ones. Open
    cases and suspended ones (marked so), which are still open work; --all adds the closed ones."""
    s = settings()
    engine = s.engine()
    if overdue:
        rows = engine.overdue(limit=limit, viewer=s.user)
        now = engine.clock()
        if s.json:
            emit(
                [
                    {
                        "case": r.case_id,
                        "deadline": r.name,
                        "due_at": r.due_at.isoformat(),
                        "overdue_seconds": round((now - r.due_at).total_seconds()),
                        "definition": r.definition_id,
                        "state": r.state,
                        "assignee": r.assignee,
                    }
                    for r in rows
                ]
            )
            return
        click.echo(
            table(
                ["case", "definition", "state", "assignee", "deadline", "overdue by"],
                [
                    (
                        r.case_id,
                        r.definition_id,
                        r.state,
                        r.assignee or "",
                        r.name,
                        _overdue_by(r.due_at, now),
                    )
                    for r in rows
                ],
            )
        )
        return
    data = {w.field: w.value for w in where}
    cases = engine.cases(
        definition=definition,
        state=state,
        assignee=s.actor() if mine else None,
        open=None if include_closed or suspended else True,
        or_suspended=True,
        suspended=True if suspended else None,
        data=data,
        limit=limit,
        after_id=after,
        viewer=s.user,
    )
    if s.json:
        emit([{**case_dict(c), "suspended": c.suspended} for c in cases])
        return
    now = engine.clock()
    click.echo(
        table(
            ["case", "definition", "state", "assignee", "age", "in state"],
            [
                (
                    c.id,
                    c.definition_key,
                    f"{c.state} (suspended)" if c.suspended else c.state,
                    c.assignee or "",
                    ago(c.created_at, now),
                    ago(c.entered_at, now),
                )
                for c in cases
            ],
        )
    )


def _linked(record: AuditRecord) -> str:
    """The sub-process link a record carries, in words (empty for most records)."""
    from sopflow.engine.definition.model import CLOSED_BY_PARENT, RESUME

    parent = record.detail.get("parent")
    if isinstance(parent, dict):
        how = "closed by" if record.event == CLOSED_BY_PARENT else "sub-process of"
        return f" [{how} case {parent.get('case')}]"
    if record.event == RESUME and record.outcome == "accepted":
        return f" [case {record.payload.get('case')} closed: {record.payload.get('outcome')}]"
    return ""


@click.command()
@click.argument("case", type=CASE)
def history(case: int) -> None:
    """A case's audit trail: every step and refused attempt, who, when, in which role."""
    s = settings()
    records = s.engine().history(case, viewer=s.user)
    if s.json:
        emit([record_dict(r) for r in records])
        return
    rows = []
    for r in records:
        who = r.actor + (f" for {r.on_behalf_of}" if r.on_behalf_of else "")
        move = f"{r.from_state or '·'} → {r.to_state}" if r.outcome == "accepted" else f"REFUSED: {r.reason}"
        move += _linked(r)
        role = ROLE_WORDS.get(r.role or "", r.role or "")
        rows.append((r.seq, r.at[:19].replace("T", " "), who, role, r.event, move, r.comment or ""))
    # One line per record, about a terminal wide: long reasons and comments are cut (`--json` has them
    # whole), and a comment's line breaks are shown as \n.
    limits = {2: 24, 3: 24, 4: 20, 5: 44, 6: 40}
    click.echo(table(["#", "at (UTC)", "actor", "role", "event", "step", "comment"], rows, limits=limits))


ROLE_WORDS = {"$assignee": "(assignee)", "$starter": "(starter)"}
"""How history names the people a step allows by their place in the case rather than by a role."""


def _overdue_by(due_at: datetime, now: datetime) -> str:
    """The breach's age; a deadline that a tick run for a later time marked before it is due, as such."""
    return ago(due_at, now) if due_at <= now else f"not yet: due in {ago(now, due_at)}"


COMMANDS = [start, fire, show, list_cases, history]
