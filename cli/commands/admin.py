"""Commands for administrators: db upgrade, tick, worker, demo; `audit` lives in `audit.py`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from sopflow.cli.commands.audit import anchor_options, audit, start_anchoring
from sopflow.cli.commands.governance import backup_options, start_backups
from sopflow.cli.commands.insight import start_baseline_updates
from sopflow.cli.main import emit, settings
from sopflow.cli.params import BACKOFF, IDLE, LEASE, TIME


@click.group()
def db() -> None:
    """The database's schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create the schema, or upgrade it to this sopflow's version (back the database up first)."""
    from sopflow.engine.store import database

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


def _worker(webhook: str | None, lease: int, name: str | None, handlers: Mapping[str, Any]) -> Any:
    from sopflow.engine.worker import Channel, ConsoleChannel, WebhookChannel, Worker

    # With --json, stdout carries only the JSON answer: the notifications go to stderr.
    as_json = settings().json
    channels: list[Channel] = [ConsoleChannel(write=lambda line: click.echo(line, err=as_json))]
    if webhook:
        channels.append(WebhookChannel(webhook))
    engine = settings().engine()
    for handler_name, handler in handlers.items():
        engine.register_handler(handler_name, handler)
    return Worker(engine, name=name, lease=timedelta(seconds=lease), channels=channels)


def _handlers(specs: Sequence[str]) -> dict[str, Any]:
    from sopflow.engine.automatic import load_handlers

    return load_handlers(specs)


_webhook = click.option(
    "--webhook", envvar="SOPFLOW_WEBHOOK", help="Also POST notifications to this URL (env SOPFLOW_WEBHOOK)."
)
_lease = click.option(
    "--lease",
    type=LEASE,
    default=60,
    show_default=True,
    help="Seconds a claimed timer or notification stays this worker's before another may take it "
    "(more than the webhook's slowest answer).",
)
_handlers_option = click.option(
    "--handlers",
    "handler_specs",
    multiple=True,
    metavar="MODULE:FUNCTION",
    help="Register the Python handlers of automatic states that FUNCTION returns ({name: function}); "
    "repeatable. Handlers installed packages declare in the `sopflow.handlers` entry-point group are "
    "registered too.",
)


@click.command()
@click.option("--now", "now", type=TIME, help="Fire what is due at this time instead of now (ISO 8601).")
@_webhook
@_lease
@_handlers_option
def tick(now: datetime | None, webhook: str | None, lease: int, handler_specs: tuple[str, ...]) -> None:
    """Fire every timer due now (deadline breaches, escalations, timeouts) once, deliver the notification
    outbox, and exit. For cron; safe to run while workers run."""
    worker = _worker(webhook, lease, None, _handlers(handler_specs))
    report = worker.tick(now)
    if settings().json:
        emit(
            {
                "fired": report.fired,
                "stale": report.stale,
                "delivered": report.delivered,
                "failed_deliveries": report.failed_deliveries,
                "lost_claims": report.lost_claims,
            }
        )
        return
    fired = ", ".join(f"{n} {kind}" for kind, n in sorted(report.fired.items())) or "nothing due"
    lost = f", taken over by another worker {report.lost_claims}" if report.lost_claims else ""
    click.echo(
        f"fired: {fired}; notifications delivered {report.delivered}, failed {report.failed_deliveries}{lost}"
    )


@click.command()
@_webhook
@_lease
@_handlers_option
@click.option(
    "--idle", type=IDLE, default=1.0, show_default=True, help="Longest wait between ticks, in seconds."
)
@click.option("--name", help="This worker's name in leases (default: host:pid:random).")
@click.option(
    "--health-file",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the worker's health (JSON: last successful cycle, failing since, last error) here after "
    "every cycle, for a supervisor.",
)
@click.option(
    "--max-backoff",
    default=30.0,
    show_default=True,
    type=BACKOFF,
    help="Longest wait, in seconds, between attempts to reach a database that is unavailable.",
)
@anchor_options
@backup_options
def worker(
    webhook: str | None,
    lease: int,
    handler_specs: tuple[str, ...],
    idle: float,
    name: str | None,
    health_file: str | None,
    max_backoff: float,
    anchor_dir: Path | None,
    anchor_every: str,
    anchor_key_file: Path | None,
    backup_dir: Path | None,
    backup_at: Any,
    backup_keep: int,
) -> None:
    """Fire timers as they fall due until SIGTERM or SIGINT; stops cleanly between timers. Run as many
    as you like on one database. Rides out database restarts and outages (backs off and retries); ends,
    with exit code 2, only on what no retry can fix (credentials, the schema version)."""
    import signal
    import threading

    from sopflow.engine.worker import HealthFile, log_lines_to, open_patiently

    # A handler that cannot be loaded ends the worker before it takes any work (exit code 2).
    handlers = _handlers(handler_specs)
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        click.echo(f"stopping ({signal.Signals(signum).name})…", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # sopflow's warnings (the database unavailable and back, a lost claim, waiting for SQLite's lock) as
    # plain lines on stderr, never with a traceback.
    with log_lines_to(lambda line: click.echo(line, err=True)):
        if open_patiently(settings().engine, stop, retry_cap=max_backoff) is None:
            click.echo("worker stopped", err=True)
            return
        w = _worker(webhook, lease, name, handlers)
        w.retry_cap = max_backoff
        anchoring = start_anchoring(stop, anchor_dir, anchor_every, anchor_key_file)
        # The nightly backup, with an anchor after each when anchors are configured.
        start_backups(stop, backup_dir, backup_at, backup_keep, list(w.channels), anchor_dir, anchor_key_file)
        # Last month's own medians recorded as baselines, at the first tick of every month.
        start_baseline_updates(stop)
        click.echo(f"worker {w.name} running on {settings().db}", err=True)
        if handlers:
            click.echo(f"handlers: {', '.join(sorted(handlers))}", err=True)

        def report(r: Any) -> None:
            fired = ", ".join(f"{n} {kind}" for kind, n in sorted(r.fired.items()))
            lost = f", taken over by another worker {r.lost_claims}" if r.lost_claims else ""
            click.echo(
                f"fired {fired or 'nothing'}; delivered {r.delivered}, failed {r.failed_deliveries}{lost}",
                err=True,
            )

        w.run(stop, idle=idle, on_tick=report, on_health=HealthFile(health_file) if health_file else None)
        if anchoring is not None:
            anchoring.join()
    click.echo("worker stopped", err=True)


@click.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """The tour: deploy the seed definitions, walk a content-review case and a tiered-approval case through
    the people of the sample org, then show their history, verify the audit trail and draw a diagram.
    Uses --db if given, else a fresh sopflow-demo.db."""
    from sopflow.cli.demo import run_demo

    root = ctx.find_root()
    explicit = root.get_parameter_source("db") not in (None, click.core.ParameterSource.DEFAULT)
    explicit = explicit or settings().db != root.params.get("db")  # `sopflow demo --db URL`
    run_demo(settings().db if explicit else None)


COMMANDS = [db, audit, tick, worker, demo]
