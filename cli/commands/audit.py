"""`sopflow audit`: verify the tamper-evident audit trail, and write anchors of it to keep elsewhere (also
the worker's options that write anchors on a schedule)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sopflow.cli.main import emit, settings
from sopflow.cli.params import CASE

if TYPE_CHECKING:
    from sopflow.engine.anchor import Anchor
    from sopflow.engine.verify import VerifyFinding

_key_file = click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SOPFLOW_ANCHOR_KEY_FILE",
    help="The anchor key: a file of at least 32 bytes kept away from the database (env "
    "SOPFLOW_ANCHOR_KEY_FILE).",
)


@click.group()
def audit() -> None:
    """The tamper-evident audit trail."""


@audit.command("verify")
@click.argument("case", type=CASE, required=False)
@click.option("--all", "all_cases", is_flag=True, help="Verify every case.")
@click.option(
    "--anchor",
    "anchor_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also prove that the trail only grew since this anchor was written (repeatable).",
)
@click.option(
    "--anchors",
    "anchor_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Check the series of anchors in this folder (none missing, each chained onto the one before) "
    "and the trail against every one of them.",
)
@_key_file
def audit_verify(
    case: int | None,
    all_cases: bool,
    anchor_files: tuple[Path, ...],
    anchor_dir: Path | None,
    key_file: Path | None,
) -> None:
    """Check the stored definitions and orgs against their content hashes, recompute each case's hash
    chain, decide every accepted step again under the definition, org and delegations in force when it
    was taken, and compare the case with its replay. With anchors, also prove that no case was deleted,
    cut short or rewritten since they were written. Names the first broken record of each case; exit 1
    when anything is off."""
    from sopflow.engine import anchor as anchors_module
    from sopflow.engine.errors import UsageError

    anchored = bool(anchor_files or anchor_dir)
    if case is not None and all_cases:
        raise UsageError("give a CASE number or --all, not both", hint="sopflow audit verify --all")
    if case is None and not all_cases and not anchored:
        raise UsageError("give a CASE number or --all", hint="sopflow audit verify --all")
    anchors: list[Anchor] = []
    findings: list[VerifyFinding] = []
    if anchored:
        key = anchors_module.load_key(key_file)
        anchors += [anchors_module.read(path, key) for path in anchor_files]
        if anchor_dir is not None:
            series, problems = anchors_module.read_series(anchor_dir, key)
            anchors += series
            findings += problems
    engine = settings().engine()
    show_progress = sys.stderr.isatty() and not settings().json

    def progress(done: int) -> None:
        if show_progress and done % 100 == 0:
            click.echo(f"\rverified {done} cases…", err=True, nl=False)

    report = engine.verify(case, progress=progress, anchors=anchors, viewer=settings().user or None)
    if show_progress:
        click.echo("\r" + " " * 40 + "\r", err=True, nl=False)
    findings = [*findings, *report.findings]
    if settings().json:
        answer = {"ok": not findings, "cases": report.cases, "records": report.records}
        if anchors:
            answer["anchors"] = report.anchors
        emit({**answer, "findings": [f.as_dict() for f in findings]})
    else:
        for f in findings:
            click.echo(f"{f.where}: {f.problem}", err=True)
        broken = len({f.case_id for f in findings if f.case_id is not None})
        others = sum(1 for f in findings if f.case_id is None)
        verdict = "intact" if not findings else f"BROKEN in {broken} case(s)"
        if others:
            verdict += f" and {others} other place(s)"
        against = ""
        if anchors:
            newest = max(anchors, key=lambda a: a.created_at)
            against = f", against {len(anchors)} anchor(s), the newest of {newest.created_at}"
        click.echo(
            f"audit trail {verdict}: {report.cases} case(s), {report.records} record(s) checked{against}"
        )
        if findings:
            click.echo(
                "  hint: records were changed or removed outside sopflow: keep this database as evidence "
                "and compare it with a backup",
                err=True,
            )
    if findings:
        raise click.exceptions.Exit(1)


@audit.command("access")
@click.option("--actor", "actor", help="Only this person's rows.")
def audit_access(actor: str | None) -> None:
    """The access log: every read or write the permission matrix refused, and every export (who, what,
    when, how many records), oldest first. For the operator and administrators; `audit verify` checks
    its hash chain."""
    from sopflow.cli.render import table

    s = settings()
    rows = s.engine().access_log(actor, viewer=s.user)
    if s.json:
        emit([{**r.body(), "hash": r.hash} for r in rows])
        return
    cells = [
        [r.seq, r.at[:19].replace("T", " "), r.actor, r.action, r.target, r.outcome, r.records] for r in rows
    ]
    click.echo(table(["#", "at (UTC)", "actor", "action", "target", "outcome", "records"], cells))


@audit.command("anchor")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the anchor to this new file (default: print it).",
)
@click.option(
    "--after",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Chain the anchor onto this earlier one (its number follows, it names its digest).",
)
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the next anchor of the series in this folder (anchor-NNNNNN.json), chained onto its newest.",
)
@_key_file
def audit_anchor(out: Path | None, after: Path | None, folder: Path | None, key_file: Path | None) -> None:
    """Write the trail's current heads (every case's last record number and hash, one Merkle root over
    them, every deployed definition and org) as a keyed document to keep outside the database: a
    write-once bucket, another host, a printout. `audit verify --anchor` proves against it later."""
    from sopflow.engine import anchor as anchors_module
    from sopflow.engine.errors import UsageError

    if folder is not None and (out is not None or after is not None):
        raise UsageError(
            "--dir chooses the file and the anchor before it by itself",
            hint="give --dir alone, or --out (and --after)",
        )
    key = anchors_module.load_key(key_file)
    engine = settings().engine()
    path: Path | None = out
    if folder is not None:
        anchor, path = anchors_module.write_next(engine, folder, key)
    else:
        previous = anchors_module.read(after, key) if after is not None else None
        anchor = engine.anchor(key, previous=previous)
        if out is not None:
            anchors_module.write(anchor, out)
    if out is None and folder is None:
        click.echo(anchor.text(), nl=False)
        return
    if settings().json:
        emit(
            {
                "file": str(path),
                "number": anchor.number,
                "cases": len(anchor.cases),
                "merkle_root": anchor.merkle_root,
                "created_at": anchor.created_at,
            }
        )
        return
    click.echo(
        f"anchor {anchor.number} written to {path}: {len(anchor.cases)} case(s), "
        f"Merkle root {anchor.merkle_root[:16]}…, at {anchor.created_at}"
    )


def anchor_options(command: Callable[..., None]) -> Callable[..., None]:
    """`--anchor-dir`, `--anchor-every` and `--anchor-key-file` for `sopflow worker`."""
    command = click.option(
        "--anchor-key-file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="SOPFLOW_ANCHOR_KEY_FILE",
        help="The anchor key for --anchor-dir (env SOPFLOW_ANCHOR_KEY_FILE).",
    )(command)
    command = click.option(
        "--anchor-every",
        default="1h",
        show_default=True,
        help="How often to write an anchor with --anchor-dir (e.g. 15m, 1h, 1d).",
    )(command)
    return click.option(
        "--anchor-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Also write an anchor of the audit trail into this folder on start and then every "
        "--anchor-every, chained onto the one before (keep the folder off the database's host).",
    )(command)


def start_anchoring(
    stop: threading.Event, folder: Path | None, every: str, key_file: Path | None
) -> threading.Thread | None:
    """Start writing anchors into `folder` until `stop` (None without a folder). Checks the key, the
    folder and the interval first, so that a worker misconfigured for anchors does not start."""
    if folder is None:
        return None
    from sopflow.engine import anchor as anchors_module
    from sopflow.engine.definition.build import parse_duration
    from sopflow.engine.errors import UsageError

    seconds = parse_duration(every)
    if not seconds:
        raise UsageError(f"--anchor-every `{every}` is not a duration", hint="e.g. 15m, 1h or 1d")
    key = anchors_module.load_key(key_file)
    schedule = anchors_module.AnchorSchedule(settings().engine(), folder, key, timedelta(seconds=seconds))
    # A daemon: a worker that ends on an error must not wait for it (an anchor is written whole or not
    # at all).
    thread = threading.Thread(target=schedule.run, args=(stop,), name="sopflow-anchors", daemon=True)
    thread.start()
    return thread
