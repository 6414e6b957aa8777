"""Commands for keeping the data safe: `backup` and `restore` (each copy verified), and the worker's
options that take a verified backup every night."""

from __future__ import annotations

import os
import sys
import threading
import time as clock
from collections.abc import Callable, Sequence
from datetime import datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import click

from sopflow.cli.main import emit, settings
from sopflow.cli.output import whole_file_target
from sopflow.cli.params import TIME, Count, show

if TYPE_CHECKING:
    from sopflow.engine.backup import BackupSchedule

KEEP = Count(1, 1000, "give how many nightly backups to keep, 1 to 1000, e.g. --keep 7")


class ClockTime(click.ParamType[time]):
    """A time of day, HH:MM on a 24-hour clock."""

    name = "HH:MM"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> time:
        if isinstance(value, time):
            return value
        from sopflow.engine.backup import parse_clock_time
        from sopflow.engine.errors import UsageError

        try:
            return parse_clock_time(str(value))
        except UsageError:
            self.fail(f"{show(str(value))} is not a time of day; give HH:MM on a 24-hour clock, e.g. 02:00")


CLOCK_TIME = ClockTime()


@click.command()
@click.option(
    "--to",
    "to",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The new backup file (never overwritten); its manifest is written beside it as FILE.manifest.json.",
)
def backup(to: Path) -> None:
    """Back the database up while it is in use (SQLite's online backup, PostgreSQL's pg_dump in custom
    format), then prove the copy: restored into a scratch database, its storage checked, `audit verify
    --all` run on it, its counts and chain heads compared with the database at the backup's moment. Only
    a copy that passes is kept, with a manifest (time, counts, every chain's last hash, SHA-256)."""
    report = settings().engine().backup(to)
    if settings().json:
        emit(report.as_dict())
        return
    m = report.manifest
    click.echo(
        f"backup {report.path}: {m.counts['cases']} cases, {m.counts['audit']} audit records, "
        f"{m.size} bytes; restored and verified (audit verify: ok) in {report.seconds:.1f} s"
    )
    click.echo(f"manifest {report.manifest_path} (sha256 {m.sha256})")


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--to",
    "to",
    required=True,
    help="The database to restore into: sqlite:///FILE or postgresql+psycopg://USER@HOST/DB (must exist).",
)
@click.option("--force", is_flag=True, help="Replace what the target database holds.")
def restore(path: Path, to: str, force: bool) -> None:
    """Restore a backup that `sopflow backup` wrote, after checking it: the file must match its manifest's
    SHA-256, and it is restored into a scratch database and verified there before the target is touched.
    A target that holds data is refused unless --force."""
    from sopflow.engine.backup import restore as restore_backup

    report = restore_backup(path, to, force=force)
    if settings().json:
        emit(report.as_dict())
        return
    click.echo(
        f"restored {report.path} (taken {report.manifest.created_at}) into {report.target}: "
        f"{report.checked.cases} cases, {report.checked.records} audit records; verified (audit verify: ok)"
    )


def backup_options(command: Callable[..., None]) -> Callable[..., None]:
    """`--backup-dir`, `--backup-at` and `--keep` for `sopflow worker`."""
    command = click.option(
        "--keep",
        "backup_keep",
        type=KEEP,
        default=7,
        show_default=True,
        help="How many nightly backups to keep in --backup-dir (older ones are removed).",
    )(command)
    command = click.option(
        "--backup-at",
        type=CLOCK_TIME,
        default="02:00",
        show_default=True,
        help="When to take the nightly backup, HH:MM in the host's local time.",
    )(command)
    return click.option(
        "--backup-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Take a verified backup into this folder every night at --backup-at (keep it on another "
        "disk); a failure is sent to the administrators through the notification outbox.",
    )(command)


def start_backups(
    stop: threading.Event,
    folder: Path | None,
    at: time,
    keep: int,
    channels: Sequence[str],
    anchor_dir: Path | None = None,
    anchor_key_file: Path | None = None,
) -> tuple[BackupSchedule, threading.Thread] | None:
    """Start the nightly backup until `stop` (None without a folder); checks the folder first, so that a
    worker misconfigured for backups does not start."""
    if folder is None:
        return None
    from sopflow.engine.backup import BackupSchedule

    key = None
    if anchor_dir is not None:
        from sopflow.engine.anchor import load_key

        key = load_key(anchor_key_file)
    schedule = BackupSchedule(
        settings().engine(),
        folder,
        at=at,
        keep=keep,
        channels=channels,
        anchor_dir=anchor_dir,
        anchor_key=key,
    )
    # A daemon: a worker that ends must not wait for a backup (a backup is kept whole or not at all).
    thread = threading.Thread(target=schedule.run, args=(stop,), name="sopflow-backups", daemon=True)
    thread.start()
    return schedule, thread


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl", "xes"]),
    required=True,
    help="csv: one row "
    "per event (UTF-8 with a BOM); jsonl: one case per line; xes: IEEE 1849 for process mining.",
)
@click.option("--definition", help="Only cases of this definition.")
@click.option("--since", type=TIME, help="Only cases created at or after this time (ISO 8601).")
@click.option("--until", type=TIME, help="Only cases created before this time (ISO 8601).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (whole or not at all); default: standard output.",
)
@click.option(
    "--desensitise",
    is_flag=True,
    help="Keep only what each field's x-sensitive class allows "
    "and replace people by tokens (needs the privacy key).",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SOPFLOW_PRIVACY_KEY_FILE",
    help="The privacy key for --desensitise (env SOPFLOW_PRIVACY_KEY_FILE).",
)
def export(
    fmt: str,
    definition: str | None,
    since: datetime | None,
    until: datetime | None,
    out: Path | None,
    desensitise: bool,
    key_file: Path | None,
) -> None:
    """Export cases and their events, streamed (memory stays flat however many cases), with progress on a
    terminal. --desensitise keeps an address's province, an age's band, a token for an ID, phone or name,
    and drops free text and comments."""
    from sopflow.engine.privacy import load_key

    key = load_key(key_file) if desensitise else None
    engine = settings().engine()
    user = settings().user
    show_progress = sys.stderr.isatty()

    def progress(done: int, total: int, last: list[float] = [0.0]) -> None:  # noqa: B006 - a throttle
        now = clock.monotonic()
        if show_progress and (now - last[0] > 0.2 or done == total):
            last[0] = now
            click.echo(f"\rexported {done}/{total} cases", nl=done == total, err=True)

    if out is None:
        from sopflow.engine.errors import ExportStopped

        stream = cast("BinaryIO", sys.stdout.buffer)
        try:
            report = engine.export(stream, fmt, definition=definition, since=since, until=until,
                                   desensitise_key=key, reader=user, progress=progress)  # fmt: skip
        except ExportStopped:
            # Nothing more can go to the closed output, not even what is left in its buffer at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise
        click.echo(f"exported {report.cases} cases, {report.events} events", err=True)
        return
    out = whole_file_target(out, "--out")
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as handle:
            report = engine.export(handle, fmt, definition=definition, since=since, until=until,
                                   desensitise_key=key, reader=user, progress=progress)  # fmt: skip
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    if settings().json:
        emit({**report.as_dict(), "file": str(out)})
        return
    key_note = f", desensitised (privacy key {report.key_id})" if report.desensitised else ""
    click.echo(f"exported {report.cases} cases, {report.events} events to {out}{key_note}")


COMMANDS = [backup, restore, export]
