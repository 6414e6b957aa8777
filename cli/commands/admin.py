"""Commands for administrators: db upgrade, audit verify, demo."""

from __future__ import annotations

import sys

import click

from cli.main import emit, settings


@click.group()
def db() -> None:
    """The database's schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create the schema, or upgrade it to this sopflow's version (back the database up first)."""
    from engine.store import database

    engine = database.create(settings().db)
    try:
        before = database.current_revision(engine)
        after = database.upgrade(engine)
    finally:
        engine.dispose()
    if settings().json:
        emit({"from": before, "to": after})
    elif before == after:
        click.echo(f"the schema is up to date (revision {after})")
    else:
        click.echo(f"schema upgraded from {before or 'nothing'} to revision {after}")


@click.group()
def audit() -> None:
    """The tamper-evident audit trail."""


@audit.command("verify")
@click.argument("case", required=False)
@click.option("--all", "all_cases", is_flag=True, help="Verify every case.")
def audit_verify(case: str | None, all_cases: bool) -> None:
    """Recompute each case's hash chain, replay its steps through the definition, and compare with the
    stored case. Names the first broken record of each case; exit 1 when anything is off."""
    from cli.commands.cases import _case_id
    from engine.errors import UsageError

    if (case is None) == (not all_cases):
        raise UsageError("give a CASE number or --all", hint="sopflow audit verify --all")
    engine = settings().engine()
    show_progress = sys.stderr.isatty() and not settings().json

    def progress(done: int) -> None:
        if show_progress and done % 100 == 0:
            click.echo(f"\rverified {done} cases…", err=True, nl=False)

    report = engine.verify(_case_id(case) if case else None, progress=progress)
    if show_progress:
        click.echo("\r" + " " * 40 + "\r", err=True, nl=False)
    if settings().json:
        emit({"ok": report.ok, "cases": report.cases, "records": report.records,
              "findings": [{"case": f.case_id, "seq": f.seq, "problem": f.problem} for f in report.findings]})
    else:
        for f in report.findings:
            click.echo(f"case {f.case_id}, record {f.seq}: {f.problem}", err=True)
        verdict = "intact" if report.ok else f"BROKEN in {len(report.findings)} case(s)"
        click.echo(f"audit trail {verdict}: {report.cases} case(s), {report.records} record(s) checked")
    if not report.ok:
        raise click.exceptions.Exit(1)


@click.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """The tour: deploy the seed definitions, walk a content-review case and a tiered-approval case through
    the people of the sample org, then show their history, verify the audit trail and draw a diagram.
    Uses --db if given, else a fresh sopflow-demo.db."""
    from cli.demo import run_demo

    root = ctx.find_root()
    explicit = root.get_parameter_source("db") not in (None, click.core.ParameterSource.DEFAULT)
    run_demo(settings().db if explicit else None)


COMMANDS = [db, audit, demo]
