"""What the case commands print about a case, a record and a step's result, shared by the command
modules (`start`, `fire`, `reassign`, `tasks` …) so that none imports another's helpers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sopflow.cli.main import emit, settings
from sopflow.cli.render import dumps, safe, text

if TYPE_CHECKING:
    from sopflow.engine.audit import AuditRecord
    from sopflow.engine.runtime import Case, Result


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


def route_words(route: dict[str, Any]) -> str:
    """A choice the step took, in words: `routed at routing to major_reform_approval: tier is
    "major_reform" (data.tier == "major_reform")`."""
    values = route.get("values") or {}
    facts = ", ".join(f"{name} is {safe(dumps(value), 60)}" for name, value in values.items())
    when = route.get("when") or "else"
    if when == "else":
        why = "no other condition held" + (f" ({facts})" if facts else "")
    else:
        why = f"{facts} ({when})" if facts else f"{when} held"
    return f"routed at {route['choice']} to {route['to']}: {why}"


def print_result(result: Result) -> None:
    """A start's or a step's outcome: the case's new state, how choices routed it, a pending vote."""
    if settings().json:
        emit(
            {
                "case": case_dict(result.case),
                "record": record_dict(result.record),
                "replayed": result.replayed,
                "key": result.key,
            }
        )
        return
    case = result.case
    again = " (already done: this key was used before, nothing new was written)" if result.replayed else ""
    click.echo(
        f"case {case.id} ({case.definition_key}) is now in {case.state}: {text(case.state_title)}{again}"
    )
    for route in result.record.detail.get("routes", []):
        click.echo(f"  {route_words(route)}")
    outcome = result.record.detail.get("outcome")
    if outcome == "pending":
        click.echo("  vote recorded; the approval is still pending")


def whole_file_target(path: Path, option: str) -> Path:
    """Where an option that writes one whole file (`--out`, `--html`) writes: a symlink's target, never the
    link. A path that is there and not a regular file (a device, a FIFO, a folder) or in a folder that
    does not exist is refused before any work: the file is written beside it and renamed over it, which
    would replace a device or a FIFO instead of writing to it."""
    from sopflow.engine.errors import UsageError

    target = path.expanduser().resolve()
    if not target.parent.is_dir():
        raise UsageError(
            f"the folder `{target.parent}` does not exist", hint="create it, or name a file in one"
        )
    if target.exists() and not target.is_file():
        raise UsageError(
            f"`{path}` is not a regular file: {option} writes one whole file and would replace it",
            hint=f"name a new or existing regular file, or leave out {option} to write to standard output"
            if option == "--out"
            else f"name a new or existing regular file, e.g. {option} report.html",
        )
    return target
