"""Backups, on SQLite and PostgreSQL: a backup taken while four processes write restores and verifies; a
backup of a trail that does not verify is not kept; a file with one byte changed is refused by restore;
restore refuses a database that holds data without --force; the nightly schedule on a fake clock keeps N
generations, writes an anchor after each and tells the administrators when a backup fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, timedelta
from datetime import time as clock_time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sopflow.cli.main import cli
from sopflow.engine import AuditBroken, Conflict, backup
from sopflow.engine import anchor as anchors
from sopflow.engine.errors import UsageError
from sopflow.engine.runtime import Engine
from tests.conftest import MINI, ROOT, Clock, engine_on, fresh_postgres_database
from tests.helpers.tamper import edit_record


@pytest.fixture
def engine(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, MINI)


def _target(request: pytest.FixtureRequest, source_url: str, tmp_path: Path, name: str = "restored") -> str:
    """An empty database of the source's kind to restore into."""
    if source_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / (name + '.db')}"
    return fresh_postgres_database(request.getfixturevalue("postgres_server"))


def _walk(engine: Engine, n: int = 3) -> None:
    for _ in range(n):
        case_id = engine.start("expense", {"amount": 100, "purpose": "taxi"}, actor="alice").case.id
        engine.fire(case_id, "submit", actor="alice")
        engine.fire(case_id, "send_back", actor="mia")


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_a_backup_taken_while_four_processes_write_restores_and_verifies(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with Engine(database_url) as sop:
        sop.deploy([MINI])
    stop = tmp_path / "stop"
    writers = [_spawn("tests.helpers.backup_writer", database_url, str(stop)) for _ in range(4)]
    try:
        for w in writers:
            assert w.stdout is not None
            assert w.stdout.readline().strip() == "ready", w.stderr.read() if w.stderr else ""
        time.sleep(0.5)
        with Engine(database_url) as sop:
            report = sop.backup(tmp_path / "during.db")
    finally:
        stop.touch()
        outputs = [w.communicate(timeout=120) for w in writers]
    assert all(w.returncode == 0 for w in writers), outputs
    taken = report.manifest.counts["cases"]
    with Engine(database_url) as sop:
        total = sop.store.count_cases()
    assert 0 < taken < total, "the writers went on after the backup's moment"
    assert report.manifest.verified_cases == taken
    # Each case is started, then submitted in a second step: at most one per writer was between the two.
    assert 2 * taken - 4 <= report.manifest.counts["audit"] <= 2 * taken

    target = _target(request, database_url, tmp_path)
    restored = backup.restore(report.path, target)
    assert restored.checked.cases == taken
    with Engine(target) as copy:
        assert copy.store.count_cases() == taken
        assert copy.verify().ok
        assert tuple(copy.store.audit_heads()) == report.manifest.heads


def test_the_manifest_says_what_the_backup_holds(engine: Engine, tmp_path: Path) -> None:
    _walk(engine)
    report = engine.backup(tmp_path / "b.db")
    doc = json.loads((tmp_path / "b.db.manifest.json").read_text(encoding="utf-8"))
    assert doc["format"] == backup.FORMAT
    assert doc["counts"]["cases"] == 3 and doc["counts"]["audit"] == 9
    assert doc["verified"] == {"at": doc["verified"]["at"], "cases": 3, "records": 9, "audit": "ok"}
    assert [tuple(h) for h in doc["heads"]] == engine.store.audit_heads()
    assert doc["sha256"] == backup.file_digest(report.path)[0]
    assert doc["kind"] == engine.store.dialect
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no scratch left behind"


def test_a_backup_is_never_written_over(engine: Engine, tmp_path: Path) -> None:
    engine.backup(tmp_path / "b.db")
    with pytest.raises(UsageError, match="exists already"):
        engine.backup(tmp_path / "b.db")


def test_a_backup_of_a_trail_that_does_not_verify_is_not_kept(engine: Engine, tmp_path: Path) -> None:
    _walk(engine, 1)
    edit_record(engine, 1, 2, actor="bob")  # every hash recomputed: only the replay sees it
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AuditBroken, match="does not verify: case 1"):
        engine.backup(out / "b.db")
    assert list(out.iterdir()) == [], "nothing half-written"


def test_restore_refuses_a_file_with_one_byte_changed(
    engine: Engine, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _walk(engine)
    report = engine.backup(tmp_path / "b.db")
    raw = bytearray(report.path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    report.path.write_bytes(bytes(raw))
    target = _target(request, engine.database_url, tmp_path)
    with pytest.raises(AuditBroken, match="SHA-256") as refused:
        backup.restore(report.path, target)
    assert "changed after it was taken" in str(refused.value)
    assert "nothing was restored" in str(refused.value)
    result = CliRunner().invoke(cli, ["restore", str(report.path), "--to", target])
    assert result.exit_code == 1
    assert "is not the file its manifest describes" in result.output
    assert "Traceback" not in result.output


def test_restore_refuses_a_database_that_holds_data_without_force(
    engine: Engine, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _walk(engine, 2)
    report = engine.backup(tmp_path / "b.db")
    target = _target(request, engine.database_url, tmp_path)
    with Engine(target) as other:
        other.deploy([MINI])
        _walk(other, 5)
    with pytest.raises(Conflict, match="is not empty"):
        backup.restore(report.path, target)
    with Engine(target) as other:
        assert other.store.count_cases() == 5, "refused: nothing changed"
    done = backup.restore(report.path, target, force=True)
    assert done.checked.cases == 2
    with Engine(target) as other:
        assert other.store.count_cases() == 2
        assert other.verify().ok


def test_the_cli_backs_up_and_restores(
    engine: Engine, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _walk(engine)
    runner = CliRunner()
    out = runner.invoke(cli, ["--db", engine.database_url, "backup", "--to", str(tmp_path / "b.db")])
    assert out.exit_code == 0, out.output
    assert "3 cases, 9 audit records" in out.output and "verified" in out.output
    target = _target(request, engine.database_url, tmp_path)
    done = runner.invoke(cli, ["--json", "restore", str(tmp_path / "b.db"), "--to", target])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["verified"] == {"cases": 3, "records": 9, "audit": "ok"}
    again = runner.invoke(cli, ["restore", str(tmp_path / "b.db"), "--to", target])
    assert again.exit_code == 1 and "--force" in again.output


def test_restore_names_a_missing_manifest(tmp_path: Path) -> None:
    (tmp_path / "b.db").write_bytes(b"x")
    result = CliRunner().invoke(
        cli, ["restore", str(tmp_path / "b.db"), "--to", f"sqlite:///{tmp_path / 't.db'}"]
    )
    assert result.exit_code == 2
    assert "has no manifest beside it" in result.output


# -- every night ------------------------------------------------------------------------------------


def test_the_nightly_backup_keeps_n_generations_and_anchors_each(
    engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    folder, anchor_dir = tmp_path / "backups", tmp_path / "anchors"
    folder.mkdir()
    anchor_dir.mkdir()
    key = os.urandom(32)
    nightly = backup.BackupSchedule(
        engine, folder, at=clock_time(2, 0), keep=2, zone=UTC, anchor_dir=anchor_dir, anchor_key=key
    )
    assert nightly.next_at == clock.now.replace(day=3, hour=2, minute=0)
    assert nightly.run_due(clock.now) is None, "not before its time"
    taken = []
    for night in range(4):
        _walk(engine, 1)
        clock.advance(days=1)  # 09:00 the next day: the 02:00 backup is due, once
        path = nightly.run_due(clock.now)
        assert path is not None, nightly.failures
        assert nightly.run_due(clock.now) is None
        taken.append(path)
        assert backup.read_manifest(path).counts["cases"] == night + 1
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == sorted(
        [taken[2].name, taken[3].name, taken[2].name + ".manifest.json", taken[3].name + ".manifest.json"]
    )
    series, findings = anchors.read_series(anchor_dir, key)
    assert len(series) == 4 and not findings
    assert engine.verify(anchors=series).ok


def test_a_failed_nightly_backup_tells_the_administrators(
    engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    nightly = backup.BackupSchedule(engine, folder, keep=3, zone=UTC, channels=["console", "webhook"])
    folder.rmdir()  # the disk it was on is gone
    clock.advance(days=1)
    assert nightly.run_due(clock.now) is None
    assert nightly.failures and "does not exist" in nightly.failures[0]
    sent = engine.store.notification_log(0)
    assert {(n["channel"], n["recipient"]) for n in sent} == {("console", "admin"), ("webhook", "admin")}
    assert all("the nightly backup into" in n["subject"] for n in sent)
    assert nightly.next_at > clock.now, "tried again the next night, not in a loop"


def test_the_worker_refuses_a_bad_backup_time(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "--db",
            f"sqlite:///{tmp_path / 'w.db'}",
            "worker",
            "--backup-dir",
            str(tmp_path),
            "--backup-at",
            "25:00",
        ],
    )
    assert result.exit_code == 2
    assert "is not a time of day" in result.output


def test_the_schedule_runs_once_however_late_and_in_local_time(
    engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    from zoneinfo import ZoneInfo

    shanghai = ZoneInfo("Asia/Shanghai")
    nightly = backup.BackupSchedule(engine, tmp_path, at=clock_time(2, 0), zone=shanghai)
    # 09:00 UTC is 17:00 in Shanghai: the next 02:00 there is 18:00 UTC.
    assert nightly.next_at.astimezone(UTC) == clock.now.replace(hour=18)
    clock.advance(days=3)
    assert nightly.run_due(clock.now) is not None
    assert nightly.run_due(clock.now + timedelta(hours=1)) is None


def test_an_unverifiable_nightly_backup_tells_the_administrators_and_keeps_nothing(
    engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    _walk(engine, 1)
    edit_record(engine, 1, 2, actor="bob")
    nightly = backup.BackupSchedule(engine, folder, zone=UTC)
    clock.advance(days=1)
    assert nightly.run_due(clock.now) is None
    assert list(folder.iterdir()) == []
    (sent,) = engine.store.notification_log(0)
    assert sent["recipient"] == "admin" and "does not verify" in sent["subject"]


def test_the_schedule_runs_in_its_own_thread_until_stopped(
    engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    import threading

    nightly = backup.BackupSchedule(engine, tmp_path, zone=UTC)
    clock.now = nightly.next_at + timedelta(minutes=1)
    stop = threading.Event()
    thread = threading.Thread(target=nightly.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 60
    while not nightly.taken and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=60)
    assert len(nightly.taken) == 1 and nightly.taken[0].is_file()


def test_the_worker_refuses_a_backup_folder_that_does_not_exist(tmp_path: Path) -> None:
    import signal

    url = f"sqlite:///{tmp_path / 'w.db'}"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = CliRunner().invoke(cli, ["--db", url, "worker", "--backup-dir", str(tmp_path / "nowhere")])
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output
