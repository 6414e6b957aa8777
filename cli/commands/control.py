"""Commands that act on a whole case rather than on its current step: cancel."""

from __future__ import annotations

import click

from sopflow.cli.main import emit, settings
from sopflow.cli.output import case_dict, record_dict
from sopflow.cli.params import CASE
from sopflow.cli.render import text


@click.command()
@click.argument("case", type=CASE)
@click.option("--reason", required=True, help="Why, kept in the audit trail (at most 16 KiB).")
def cancel(case: int, reason: str) -> None:
    """Cancel CASE where it stands, with a reason: it closes, its deadlines and timeouts end and its open
    sub-process cases close. For an administrator or a role the definition names under `control: cancel:`;
    audited either way."""
    s = settings()
    result = s.engine().cancel(case, actor=s.actor(), reason=reason)
    if s.json:
        emit({"case": case_dict(result.case), "record": record_dict(result.record)})
        return
    done = result.case
    click.echo(
        f"case {done.id} ({done.definition_key}) is cancelled in {done.state}: {text(done.state_title)}"
    )


COMMANDS = [cancel]
