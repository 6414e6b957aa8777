"""Commands that act on a whole case (cancel, suspend, resume) or on its work item (start-work)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from sopflow.cli.main import emit, settings
from sopflow.cli.output import case_dict, record_dict
from sopflow.cli.params import CASE
from sopflow.cli.render import text

if TYPE_CHECKING:
    from sopflow.engine.runtime import Result


@click.command()
@click.argument("case", type=CASE)
@click.option("--reason", required=True, help="Why, kept in the audit trail (at most 16 KiB).")
def cancel(case: int, reason: str) -> None:
    """Cancel CASE where it stands, with a reason: it closes, its deadlines and timeouts end and its open
    sub-process cases close. For an administrator or a role the definition names under `control: cancel:`;
    audited either way."""
    _done(settings().engine().cancel(case, actor=settings().actor(), reason=reason), "cancelled")


@click.command()
@click.argument("case", type=CASE)
@click.option("--reason", required=True, help="Why, e.g. waiting for the customer (at most 16 KiB).")
def suspend(case: int, reason: str) -> None:
    """Suspend CASE where it stands, with a reason: it takes no step but resume and cancel, and its
    deadlines and timeouts pause with the time they had left. For an administrator or a role the
    definition names under `control: suspend:`; audited either way."""
    _done(settings().engine().suspend(case, actor=settings().actor(), reason=reason), "suspended")


@click.command()
@click.argument("case", type=CASE)
@click.option("--reason", help="Why, kept in the audit trail (at most 16 KiB).")
def resume(case: int, reason: str | None) -> None:
    """Resume a suspended CASE: its deadlines and timeouts run again with the time they had left."""
    _done(settings().engine().resume(case, actor=settings().actor(), reason=reason), "resumed")


def _done(result: Result, what: str) -> None:
    if settings().json:
        emit({"case": case_dict(result.case), "record": record_dict(result.record)})
        return
    case = result.case
    click.echo(f"case {case.id} ({case.definition_key}) is {what} in {case.state}: {text(case.state_title)}")


@click.command("start-work")
@click.argument("case", type=CASE)
def start_work(case: int) -> None:
    """Start the work of CASE's current step, as its assignee (or their stand-in): the work item goes from
    allocated to started, so who is working on it and since when are known (`show`, the history)."""
    from sopflow.engine.step import START_WORK

    s = settings()
    engine = s.engine()
    result = engine.fire(case, START_WORK, actor=s.actor())
    item = engine.work_item(case)
    if s.json:
        emit(
            {
                "case": case_dict(result.case),
                "record": record_dict(result.record),
                "work_item": {
                    "status": item.status,
                    "assignee": item.assignee,
                    "started_by": item.started_by,
                    "started_at": item.started_at.isoformat() if item.started_at else None,
                },
            }
        )
        return
    click.echo(f"case {case}: {item.started_by} started the work of {item.state} (assignee {item.assignee})")


COMMANDS = [cancel, suspend, resume, start_work]
