"""Backups that are proven restorable: take one, restore one, and take one every night.

`take` copies the database at one moment (`engine.store.backup`: SQLite's online backup API, or
`pg_dump` in custom format), then checks the copy before it is kept: restored into a scratch database,
its storage checked, `audit verify --all` run on it, and its row counts and the head of every chain
compared with what the source held at the copy's moment. Only a copy that passes gets its name and a
manifest beside it (`PATH.manifest.json`: the time, the counts, every chain's last hash, the file's
SHA-256); one that fails leaves nothing behind and says why.

`restore` refuses a file whose SHA-256 is not its manifest's (a byte changed since), checks the copy in a
scratch database the same way before it touches the target, refuses a target that holds data unless
forced, puts the copy in, and compares the target's counts and heads with the manifest.

`BackupSchedule` is what `sopflow worker --backup-dir DIR` runs: a backup every night at a set local time,
the newest N kept, an anchor written after each when anchors are configured, and a backup that fails
or does not verify announced to the administrators through the notification outbox.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sopflow.engine.audit import iso
from sopflow.engine.errors import AuditBroken, SopflowError, UsageError
from sopflow.engine.store import NotificationSpec, database
from sopflow.engine.store import backup as copies

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine

FORMAT = "sopflow-backup/1"
MANIFEST_SUFFIX = ".manifest.json"
NIGHTLY_PATTERN = re.compile(r"sopflow-\d{8}T\d{6}Z\.(db|dump)")
"""The names the nightly backup gives its files; only these are pruned."""
MAX_MANIFEST_BYTES = 1024 * 1024 * 1024

log = logging.getLogger("sopflow.backup")


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a backup file holds and how to know it is the same file: written beside it."""

    created_at: str
    kind: str
    """The database it came from: sqlite or postgresql."""
    source: str
    """The source database's URL, without its password."""
    file: str
    size: int
    sha256: str
    counts: dict[str, int]
    heads: tuple[tuple[int, int, str], ...]
    verified_at: str
    verified_cases: int
    verified_records: int

    def text(self) -> str:
        body = {
            "format": FORMAT,
            "created_at": self.created_at,
            "kind": self.kind,
            "source": self.source,
            "file": self.file,
            "size": self.size,
            "sha256": self.sha256,
            "counts": self.counts,
            "verified": {
                "at": self.verified_at,
                "cases": self.verified_cases,
                "records": self.verified_records,
                "audit": "ok",
            },
            "heads": [list(h) for h in self.heads],
        }
        return json.dumps(body, ensure_ascii=False, indent=1) + "\n"

    @property
    def contents(self) -> copies.Contents:
        return copies.Contents(dict(self.counts), self.heads)


@dataclass(frozen=True, slots=True)
class Checked:
    """A copy restored into a scratch database and checked there."""

    cases: int
    records: int
    at: datetime


@dataclass(frozen=True, slots=True)
class BackupReport:
    path: Path
    manifest_path: Path
    manifest: Manifest
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "file": str(self.path),
            "manifest": str(self.manifest_path),
            "sha256": m.sha256,
            "size": m.size,
            "counts": m.counts,
            "verified": {"cases": m.verified_cases, "records": m.verified_records, "audit": "ok"},
            "seconds": round(self.seconds, 3),
        }


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


# -- taking a backup --------------------------------------------------------------------------------


def take(engine: Engine, to: Path) -> BackupReport:
    """Back the database up to the new file `to`, check the copy, and write its manifest (see the module)."""
    started = datetime.now().astimezone()
    to = to.expanduser()
    _check_destination(to)
    source = engine.store.engine
    kind = source.dialect.name
    partial = to.with_name(f".{to.name}.{os.getpid()}.partial")
    try:
        moment = engine.clock()
        held = copies.copy_out(source, partial)
        sha, size = file_digest(partial)
        checked = check_copy(engine.database_url, engine.clock, partial, kind, held)
        manifest = Manifest(
            created_at=iso(moment),
            kind=kind,
            source=source.url.render_as_string(hide_password=True),
            file=to.name,
            size=size,
            sha256=sha,
            counts=held.counts,
            heads=held.heads,
            verified_at=iso(checked.at),
            verified_cases=checked.cases,
            verified_records=checked.records,
        )
        _link(partial, to)
        try:
            _write_new(manifest_path(to), manifest.text())
        except BaseException:
            to.unlink(missing_ok=True)
            raise
    finally:
        partial.unlink(missing_ok=True)
    seconds = (datetime.now().astimezone() - started).total_seconds()
    return BackupReport(to, manifest_path(to), manifest, seconds)


def _check_destination(to: Path) -> None:
    if not to.parent.is_dir():
        raise UsageError(
            f"the folder `{to.parent}` does not exist", hint="create it, or name a file in an existing one"
        )
    for path in (to, manifest_path(to)):
        if path.exists():
            raise UsageError(
                f"`{path}` exists already; a backup is never overwritten", hint="choose a new file name"
            )


def check_copy(
    like_url: str, clock: Callable[[], datetime], file: Path, kind: str, expected: copies.Contents
) -> Checked:
    """Restore `file` into a scratch database (beside `file`, or on the server of `like_url`) and check it
    there: its storage, `audit verify --all`, and its counts and chain heads against `expected`.
    AuditBroken names the first thing that differs."""
    from sopflow.engine.runtime import Engine

    with (
        tempfile.TemporaryDirectory(prefix=".sopflow-check-", dir=file.parent) as folder,
        copies.scratch_database(like_url, kind, Path(folder)) as url,
    ):
        target = database.create(url)
        try:
            copies.copy_in(file, target, kind)
            problems = copies.integrity(target)
        finally:
            target.dispose()
        if problems:
            raise AuditBroken(
                f"the backup `{file.name}` is damaged: {problems[0]}", hint="take the backup again"
            )
        with Engine(url, clock=clock) as restored:
            report = restored.verify()
            found = copies.contents(restored.store.engine)
        if not report.ok:
            first = report.findings[0]
            raise AuditBroken(
                f"the backup `{file.name}` does not verify: {first.where}: {first.problem} "
                f"({len(report.findings)} finding(s))",
                hint="run `sopflow audit verify --all` on the database itself; a trail that does not "
                "verify there needs looking into before it is backed up",
            )
        _compare(file.name, expected, found)
        return Checked(report.cases, report.records, clock())


def _compare(name: str, expected: copies.Contents, found: copies.Contents) -> None:
    for table, count in expected.counts.items():
        if found.counts.get(table) != count:
            raise AuditBroken(
                f"the backup `{name}` holds {found.counts.get(table)} row(s) of {table}, the database "
                f"held {count} at the backup's moment",
                hint="take the backup again; if it differs again, report it",
            )
    if found.heads != expected.heads:
        theirs = dict((h[0], h) for h in found.heads)
        for head in expected.heads:
            if theirs.get(head[0]) != head:
                raise AuditBroken(
                    f"the backup `{name}` ends case {head[0]}'s chain at {theirs.get(head[0])}, the "
                    f"database ended it at {head} at the backup's moment",
                    hint="take the backup again; if it differs again, report it",
                )
        raise AuditBroken(
            f"the backup `{name}` holds chains the database did not", hint="take the backup again"
        )


def file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # fails if `target` exists: a backup is never overwritten
    except FileExistsError:
        raise UsageError(
            f"`{target}` exists already; a backup is never overwritten", hint="choose a new file name"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot write the backup `{target}`: {exc.strerror or exc}") from None


def _write_new(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        _link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# -- restoring --------------------------------------------------------------------------------------


def read_manifest(path: Path) -> Manifest:
    """The manifest beside the backup file `path`; refused when missing or not a manifest."""
    where = manifest_path(path)
    hint = f"a backup is restored with the manifest `sopflow backup` wrote beside it ({where.name})"
    try:
        if where.stat().st_size > MAX_MANIFEST_BYTES:
            raise UsageError(f"`{where}` is too large to be a backup manifest", hint=hint)
        doc = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"the backup `{path}` has no manifest beside it", hint=hint) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the manifest `{where}`: {exc}", hint=hint) from None
    try:
        if doc["format"] != FORMAT:
            raise ValueError(doc["format"])
        return Manifest(
            created_at=str(doc["created_at"]),
            kind=str(doc["kind"]),
            source=str(doc["source"]),
            file=str(doc["file"]),
            size=int(doc["size"]),
            sha256=str(doc["sha256"]),
            counts={str(k): int(v) for k, v in doc["counts"].items()},
            heads=tuple((int(h[0]), int(h[1]), str(h[2])) for h in doc["heads"]),
            verified_at=str(doc["verified"]["at"]),
            verified_cases=int(doc["verified"]["cases"]),
            verified_records=int(doc["verified"]["records"]),
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        raise UsageError(f"`{where}` is not a sopflow backup manifest ({FORMAT})", hint=hint) from None


@dataclass(frozen=True, slots=True)
class RestoreReport:
    path: Path
    target: str
    manifest: Manifest
    checked: Checked

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "to": self.target,
            "backup_taken_at": self.manifest.created_at,
            "counts": self.manifest.counts,
            "verified": {"cases": self.checked.cases, "records": self.checked.records, "audit": "ok"},
        }


def restore(
    path: Path, url: str, *, force: bool = False, clock: Callable[[], datetime] | None = None
) -> RestoreReport:
    """Restore the backup `path` into the database at `url` (see the module)."""
    from sopflow.engine.audit import utc_now

    path = path.expanduser()
    if not path.is_file():
        raise UsageError(f"`{path}` is not a backup file", hint="name a file `sopflow backup` wrote")
    manifest = read_manifest(path)
    sha, size = file_digest(path)
    if sha != manifest.sha256:
        raise AuditBroken(
            f"the backup `{path}` is not the file its manifest describes: its SHA-256 is {sha}, the "
            f"manifest says {manifest.sha256} ({size} bytes, the manifest says {manifest.size}); it "
            "changed after it was taken",
            hint="restore another generation, or copy this one again from where it is kept; "
            "nothing was restored",
        )
    target = database.create(url)
    try:
        copies.refuse_non_empty(target, force)
        if manifest.kind != target.dialect.name:
            raise UsageError(
                f"the backup is of a {manifest.kind} database and cannot be restored into "
                f"{target.dialect.name}",
                hint=f"restore it into a {manifest.kind} database URL",
            )
        # The copy is checked in a scratch database first, so a bad one never touches the target.
        checked = check_copy(url, clock or utc_now, path, manifest.kind, manifest.contents)
        copies.copy_in(path, target, manifest.kind)
        problems = copies.integrity(target)
        if problems:
            raise AuditBroken(f"the restored database is damaged: {problems[0]}", hint="restore again")
        _compare(path.name, manifest.contents, copies.contents(target))
    finally:
        target.dispose()
    return RestoreReport(path, target.url.render_as_string(hide_password=True), manifest, checked)


# -- every night ------------------------------------------------------------------------------------


def parse_clock_time(text: str) -> time:
    """`HH:MM` (24-hour) as a time of day; UsageError otherwise."""
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text.strip())
    if match is None:
        raise UsageError(f"`{text}` is not a time of day", hint="give HH:MM on a 24-hour clock, e.g. 02:00")
    return time(int(match.group(1)), int(match.group(2)))


class BackupSchedule:
    """A verified backup into `folder` every day at `at` (local time in `zone`, default the host's), the
    newest `keep` kept; an anchor into `anchor_dir` after each when given; a failure announced to every
    administrator role through the outbox, on each of `channels`. A failure never stops the worker."""

    def __init__(
        self,
        engine: Engine,
        folder: Path,
        *,
        at: time = time(2, 0),
        keep: int = 7,
        zone: tzinfo | None = None,
        channels: Sequence[str] = ("console",),
        anchor_dir: Path | None = None,
        anchor_key: bytes | None = None,
    ) -> None:
        if keep < 1:
            raise UsageError("at least one backup must be kept", hint="e.g. --keep 7")
        if not folder.is_dir():
            raise UsageError(
                f"the backup folder `{folder}` does not exist", hint="create it, or give an existing one"
            )
        self.engine = engine
        self.folder = folder
        self.at = at
        self.keep = keep
        self.zone = zone
        self.channels = tuple(channels) or ("console",)
        self.anchor_dir = anchor_dir
        self.anchor_key = anchor_key
        self.next_at = self.next_after(engine.clock())
        self.taken: list[Path] = []
        self.failures: list[str] = []

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled moment strictly after `moment`."""
        local = moment.astimezone(self.zone) if self.zone else moment.astimezone()
        candidate = local.replace(hour=self.at.hour, minute=self.at.minute, second=0, microsecond=0)
        if candidate <= local:
            candidate = (local + timedelta(days=1)).replace(
                hour=self.at.hour, minute=self.at.minute, second=0, microsecond=0
            )
        return candidate

    def run_due(self, now: datetime) -> Path | None:
        """Take the backup when its time has come (once, however late); the file, or None."""
        if now < self.next_at:
            return None
        self.next_at = self.next_after(now)
        return self.run_once(now)

    def run_once(self, now: datetime) -> Path | None:
        name = f"sopflow-{_stamp(now)}"
        suffix = ".db" if self.engine.store.dialect == "sqlite" else ".dump"
        try:
            report = take(self.engine, self.folder / f"{name}{suffix}")
        except SopflowError as exc:
            self._failed(now, exc)
            return None
        self.taken.append(report.path)
        log.info("backup written to %s and verified (%d cases)", report.path, report.manifest.verified_cases)
        self._prune()
        if self.anchor_dir is not None and self.anchor_key is not None:
            from sopflow.engine.anchor import write_next

            try:
                _anchor, anchor_path = write_next(self.engine, self.anchor_dir, self.anchor_key)
                log.info("anchor written to %s after the backup", anchor_path)
            except SopflowError as exc:
                log.warning("no anchor was written after the backup: %s", exc.message)
        return report.path

    def _prune(self) -> None:
        kept = sorted(p for p in self.folder.iterdir() if NIGHTLY_PATTERN.fullmatch(p.name))
        for old in kept[: -self.keep]:
            manifest_path(old).unlink(missing_ok=True)
            old.unlink(missing_ok=True)
            log.info("backup %s removed (%d kept)", old, self.keep)

    def _failed(self, now: datetime, exc: SopflowError) -> None:
        self.failures.append(exc.message)
        log.warning("the nightly backup failed: %s", exc.message)
        try:
            org = self.engine.org()
            admins = [name for name, role in org.roles.items() if role.administrator]
            members = {r: list(org.members(r)) for r in admins}
        except SopflowError:
            admins, members = [], {}
        subject = f"the nightly backup into {self.folder} failed: {exc.message}"
        body = {"backup_dir": str(self.folder), "error": exc.message, "hint": exc.hint, "at": iso(now)}
        specs = [
            NotificationSpec(channel, admin, subject, {**body, "members": members.get(admin, [])})
            for admin in (admins or ["administrators"])
            for channel in self.channels
        ]
        try:
            copies.notify(self.engine.store.engine, specs, now)
        except SopflowError as again:
            log.warning("the administrators could not be told (the outbox failed too): %s", again.message)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_due(self.engine.clock())
            except Exception:  # pragma: no cover - a bug must not end the worker's other duties
                log.exception("the backup schedule failed")
            wait = (self.next_at - self.engine.clock()).total_seconds()
            stop.wait(max(1.0, min(60.0, wait)))


def _stamp(moment: datetime) -> str:
    from datetime import UTC

    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
