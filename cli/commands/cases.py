"""Commands for operators: start, fire, show, list, history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sopflow.cli.main import emit, settings
from sopflow.cli.render import ago, dumps, table, text

if TYPE_CHECKING:
    from sopflow.engine.audit import AuditRecord
    from sopflow.engine.runtime import Case, Engine, Result


def case_dict(case: Case) -> dict[str, Any]:
    return {
        "id": case.id,
        "definition": case.definition_key,
        "state": case.state,
        "state_title": {"zh": case.state_title.zh, "en": case.state_title.en},
        "open": case.open,
        "version": case.version,
        "data": dict(case.data),
        "starter": case.starter,
        "assignee": case.assignee,
        "created_at": case.created_at.isoformat(),
        "updated_at": case.updated_at.isoformat(),
        "entered_at": case.entered_at.isoformat(),
    }


def record_dict(rec: AuditRecord) -> dict[str, Any]:
    body = rec.body()
    body["hash"] = rec.hash
    return body


def _data(data_json: str | None, data_file: Path | None) -> dict[str, Any]:
    from sopflow.cli.commands.definitions import _parse_json
    from sopflow.engine.errors import UsageError

    if data_json is not None and data_file is not None:
        raise UsageError("give --data or --data-file, not both", hint="drop one of them")
    if data_file is not None:
        try:
            raw = data_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"cannot read `{data_file}`: {exc}", hint="check the path given to --data-file"
            ) from None
        return _parse_json(raw, f"`{data_file}`")
    return _parse_json(data_json, "--data")


def _case_id(raw: str) -> int:
    from sopflow.engine.errors import UsageError

    value = raw.lstrip("#")
    if not value.isdigit():
        raise UsageError(f"`{raw}` is not a case number", hint="case numbers are shown by `sopflow list`")
    return int(value)


def _result(result: Result) -> None:
    if settings().json:
        emit(
            {
                "case": case_dict(result.case),
                "record": record_dict(result.record),
                "replayed": result.replayed,
            }
        )
        return
    case = result.case
    again = " (already done: this key was used before, nothing new was written)" if result.replayed else ""
    click.echo(
        f"case {case.id} ({case.definition_key}) is now in {case.state}: {text(case.state_title)}{again}"
    )
    for route in result.record.detail.get("routes", []):
        click.echo(f"  routed by {route['choice']}: {route['when']} {dumps(route['values'])} → {route['to']}")
    outcome = result.record.detail.get("outcome")
    if outcome == "pending":
        click.echo("  vote recorded; the approval is still pending")


@click.command()
@click.argument("definition")
@click.option("--data", "data_json", help="The case's data, as a JSON object.")
@click.option("--data-file", type=click.Path(path_type=Path), help="A JSON file with the case's data.")
@click.option("--key", help="An idempotency key: starting again with the same key returns the same case.")
@click.option("--version", type=int, help="A definition version (default: the newest deployed).")
def start(
    definition: str, data_json: str | None, data_file: Path | None, key: str | None, version: int | None
) -> None:
    """Start a case of a deployed definition, as the --as user."""
    s = settings()
    result = s.engine().start(
        definition, _data(data_json, data_file), actor=s.actor(), key=key, version=version
    )
    _result(result)


@click.command()
@click.argument("case")
@click.argument("event")
@click.option("--data", "data_json", help="The event's payload, as a JSON object.")
@click.option("--comment", help="A comment, kept in the audit trail.")
@click.option("--expect-version", type=int, help="Refuse (conflict) if the case changed since this version.")
@click.option("--key", help="An idempotency key: firing again with the same key writes nothing.")
def fire(
    case: str,
    event: str,
    data_json: str | None,
    comment: str | None,
    expect_version: int | None,
    key: str | None,
) -> None:
    """Fire EVENT on CASE as the --as user (exit 1 if refused; the refusal is audited)."""
    s = settings()
    result = s.engine().fire(
        _case_id(case),
        event,
        actor=s.actor(),
        payload=_data(data_json, None),
        comment=comment,
        expect_version=expect_version,
        key=key,
    )
    _result(result)


@click.command()
@click.argument("case")
def show(case: str) -> None:
    """A case: its state, data, who may do what now (and why not), and its deadlines."""
    s = settings()
    engine = s.engine()
    c = engine.case(_case_id(case))
    definition = engine.definition(c.definition_id, c.definition_version)
    viewer = s.user
    options = engine.options(c.id, viewer) if viewer else []
    deadlines = engine.deadlines(c.id)
    now = engine.clock()
    if s.json:
        emit(
            {
                "case": case_dict(c),
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
            }
        )
        return
    state = definition.states[c.state]
    click.echo(f"case {c.id}  {c.definition_key}  {text(definition.title)}")
    click.echo(f"state    {c.state}: {text(state.title)}" + ("" if c.open else "  (closed)"))
    if state.owner:
        click.echo(f"owner    {state.owner}" + (f"   assignee: {c.assignee}" if c.assignee else ""))
    if state.output:
        click.echo(f"output   {text(state.output)}")
    if state.instructions:
        click.echo(f"do       {text(state.instructions)}")
    click.echo(
        f"started  by {c.starter}, {ago(c.created_at, now)} ago; in this state for {ago(c.entered_at, now)}"
        f"; version {c.version}"
    )
    click.echo(
        "data     " + json.dumps(dict(c.data), ensure_ascii=False, indent=2).replace("\n", "\n         ")
    )
    approval = engine.approval_progress(c.id)
    if approval is not None:
        click.echo(f"approval {approval}")
    for d in deadlines:
        click.echo(f"deadline {d.describe(now)}")
    if not c.open:
        return
    if not viewer:
        click.echo("(pass --as USER to see what that person may do now)")
        return
    click.echo(f"what {viewer} may do now:")
    for o in options:
        mark = "yes" if o.allowed else "no "
        why = f"  ({o.reason})" if o.reason else ""
        vote = state.approval is not None and o.event in ("approve", "reject")
        where = ", ".join(o.targets) or "(stays)"
        if vote:
            where = f"{where} when the rule is met (a vote)"
        click.echo(f"  {mark} {o.event} → {where}{why}")


@click.command("list")
@click.option("--definition", help="Only cases of this definition id.")
@click.option("--state", help="Only cases in this state.")
@click.option("--mine", is_flag=True, help="Only cases assigned to the --as user.")
@click.option("--all", "include_closed", is_flag=True, help="Include closed cases.")
@click.option("--where", "where", multiple=True, help="FIELD=JSON: a data field equals a value (repeatable).")
@click.option("--limit", default=50, show_default=True, help="At most this many (oldest first).")
@click.option("--after", type=int, help="Only cases after this case number (to page).")
@click.option("--overdue", is_flag=True, help="Cases with a breached deadline, oldest breach first.")
def list_cases(
    definition: str | None,
    state: str | None,
    mine: bool,
    include_closed: bool,
    where: tuple[str, ...],
    limit: int,
    after: int | None,
    overdue: bool,
) -> None:
    """Cases, oldest first: by definition, state, assignee or data field; or the overdue ones."""
    s = settings()
    engine = s.engine()
    if overdue:
        rows = engine.overdue(limit=limit)
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
                    (r.case_id, r.definition_id, r.state, r.assignee or "", r.name, ago(r.due_at, now))
                    for r in rows
                ],
            )
        )
        return
    data: dict[str, Any] = {}
    for item in where:
        name, _, raw = item.partition("=")
        try:
            data[name] = json.loads(raw)
        except json.JSONDecodeError:
            data[name] = raw
    cases = engine.cases(
        definition=definition,
        state=state,
        assignee=s.actor() if mine else None,
        open=None if include_closed else True,
        data=data,
        limit=limit,
        after_id=after,
    )
    if s.json:
        emit([case_dict(c) for c in cases])
        return
    now = engine.clock()
    click.echo(
        table(
            ["case", "definition", "state", "assignee", "age", "in state"],
            [
                (
                    c.id,
                    c.definition_key,
                    c.state,
                    c.assignee or "",
                    ago(c.created_at, now),
                    ago(c.entered_at, now),
                )
                for c in cases
            ],
        )
    )


@click.command()
@click.argument("case")
def history(case: str) -> None:
    """A case's audit trail: every step and refused attempt, who, when, in which role."""
    s = settings()
    records = s.engine().history(_case_id(case))
    if s.json:
        emit([record_dict(r) for r in records])
        return
    rows = []
    for r in records:
        who = r.actor + (f" for {r.on_behalf_of}" if r.on_behalf_of else "")
        move = f"{r.from_state or '·'} → {r.to_state}" if r.outcome == "accepted" else f"REFUSED: {r.reason}"
        note = r.comment or ""
        rows.append((r.seq, r.at[:19].replace("T", " "), who, r.role or "", r.event, move, note))
    click.echo(table(["#", "at (UTC)", "actor", "role", "event", "step", "comment"], rows))


def print_case_summary(engine: Engine, case_id: int) -> None:
    click.echo(
        table(
            ["#", "actor", "event", "step"],
            [
                (
                    r.seq,
                    r.actor,
                    r.event,
                    f"{r.from_state or '·'} → {r.to_state}"
                    if r.outcome == "accepted"
                    else f"REFUSED ({r.reason})",
                )
                for r in engine.history(case_id)
            ],
        )
    )


COMMANDS = [start, fire, show, list_cases, history]
