"""Anchors kept outside the database, on SQLite and PostgreSQL: a deleted case, a cut tail and a record
rewritten with every later hash recomputed are caught and named; a forged anchor is refused; a series with
an anchor missing or replaced is named; the CLI and the worker's schedule write them."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from sopflow.cli.main import cli
from sopflow.engine import AuditBroken, ConfigurationError
from sopflow.engine import anchor as anchors
from sopflow.engine.runtime import Engine
from sopflow.engine.verify import VerifyFinding
from tests.conftest import MINI, Clock, engine_on
from tests.helpers.tamper import cut_tail, delete_case, edit_record, run_sql


@pytest.fixture
def engine(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, MINI)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "anchor.key"
    path.write_bytes(os.urandom(32).hex().encode() + b"\n")
    return path


@pytest.fixture
def key(key_file: Path) -> bytes:
    return anchors.load_key(key_file)


def walked(engine: Engine) -> int:
    """A case with three records: start, submit, send back."""
    case_id = engine.start("expense", {"amount": 100, "purpose": "taxi"}, actor="alice").case.id
    engine.fire(case_id, "submit", actor="alice")
    engine.fire(case_id, "send_back", actor="mia")
    return case_id


def only(findings: tuple[VerifyFinding, ...] | list[VerifyFinding]) -> VerifyFinding:
    assert len(findings) == 1, findings
    return findings[0]


def test_a_trail_that_only_grew_verifies_against_its_anchor(engine: Engine, key: bytes) -> None:
    case_id = walked(engine)
    anchor = engine.anchor(key)
    assert [head[:2] for head in anchor.cases] == [(case_id, 3)]
    engine.fire(case_id, "submit", actor="alice")
    engine.start("expense", {"amount": 5, "purpose": "tea"}, actor="bob")
    report = engine.verify(anchors=[anchors.parse(anchor.text(), key, "the anchor")])
    assert report.ok, report.findings
    assert report.anchors == 1


def test_a_deleted_case_is_named(engine: Engine, key: bytes) -> None:
    case_id = walked(engine)
    kept = walked(engine)
    anchor = engine.anchor(key)
    delete_case(engine, case_id)
    assert engine.verify().ok  # without the anchor nothing remembers the case
    found = only(engine.verify(anchors=[anchor]).findings)
    assert (found.case_id, found.seq) == (case_id, 3)
    assert "the case is gone" in found.problem
    assert engine.verify(kept, anchors=[anchor]).ok


def test_a_cut_tail_is_named(engine: Engine, key: bytes) -> None:
    case_id = walked(engine)
    anchor = engine.anchor(key)
    cut_tail(engine, case_id, keep=2)
    found = only(engine.verify(anchors=[anchor]).findings)
    assert (found.case_id, found.seq) == (case_id, 3)
    assert "records 3 to 3 are gone" in found.problem


def test_a_rewritten_record_with_recomputed_hashes_is_named(engine: Engine, key: bytes) -> None:
    case_id = walked(engine)
    anchor = engine.anchor(key)
    edit_record(engine, case_id, 2, comment="submitted with every receipt")
    assert engine.verify().ok  # the chain is whole again and the step was allowed
    found = only(engine.verify(anchors=[anchor]).findings)
    assert (found.case_id, found.seq) == (case_id, 3)
    assert "was rewritten and the hashes after it recomputed" in found.problem


def test_a_series_of_anchors_names_the_rewritten_record(
    engine: Engine, key: bytes, tmp_path: Path, clock: Clock
) -> None:
    case_id = engine.start("expense", {"amount": 100, "purpose": "taxi"}, actor="alice").case.id
    anchors.write_next(engine, tmp_path, key)
    engine.fire(case_id, "submit", actor="alice")
    clock.advance(minutes=1)
    anchors.write_next(engine, tmp_path, key)
    engine.fire(case_id, "send_back", actor="mia")
    clock.advance(minutes=1)
    anchors.write_next(engine, tmp_path, key)
    series, problems = anchors.read_series(tmp_path, key)
    assert [a.number for a in series] == [1, 2, 3] and not problems
    edit_record(engine, case_id, 2, comment="edited")
    found = only(engine.verify(anchors=series).findings)
    assert (found.case_id, found.seq) == (case_id, 2)
    assert "record 2 was rewritten" in found.problem


def test_an_org_rewritten_with_its_hash_is_caught_by_the_anchor(engine: Engine, key: bytes) -> None:
    from sopflow.engine.definition.build import content_hash
    from sopflow.engine.definition.loader import parse_yaml

    anchor = engine.anchor(key)
    row = engine.store.org()
    assert row is not None
    richer = row.source_text.replace(
        "roles: [employee], department", "roles: [employee, finance], department"
    )
    digest = content_hash(parse_yaml(richer, row.file).data)
    run_sql(
        engine,
        "UPDATE orgs SET source_text = :text, content_hash = :hash",
        params={"text": richer, "hash": digest},
    )
    assert engine.verify().ok  # consistent with itself: only the anchor remembers the org it replaced
    found = only(engine.verify(anchors=[anchor]).findings)
    assert found.subject == "org deployment 1"


def test_a_forged_anchor_is_refused(engine: Engine, key: bytes, tmp_path: Path) -> None:
    walked(engine)
    anchor = engine.anchor(key)
    (tmp_path / "other.key").write_bytes(os.urandom(32))  # raw bytes, no line break: a key all the same
    other = anchors.load_key(tmp_path / "other.key")
    with pytest.raises(AuditBroken, match="was not signed with this key"):
        anchors.parse(anchor.text(), other, "the anchor")
    doc = json.loads(anchor.text())
    doc["cases"][0][1] = 2  # a forger who cut the tail, editing the anchor to agree
    with pytest.raises(AuditBroken, match="does not match its signature"):
        anchors.parse(json.dumps(doc), key, "the anchor")
    forged = anchors.make(engine, other)  # a whole new anchor needs the key: with another, it is refused
    with pytest.raises(AuditBroken, match="was not signed with this key"):
        anchors.parse(forged.text(), key, "the anchor")


def test_a_missing_or_replaced_anchor_in_a_series_is_named(
    engine: Engine, key: bytes, tmp_path: Path
) -> None:
    walked(engine)
    for _ in range(4):
        anchors.write_next(engine, tmp_path, key)
    assert anchors.read_series(tmp_path, key)[1] == []
    # Anchor 3 made again (with the key, so its signature holds): anchor 4 no longer chains onto it.
    second = anchors.read(tmp_path / "anchor-000002.json", key)
    (tmp_path / "anchor-000003.json").unlink()
    engine.start("expense", {"amount": 5, "purpose": "tea"}, actor="bob")
    anchors.write(anchors.make(engine, key, previous=second), tmp_path / "anchor-000003.json")
    problems = anchors.read_series(tmp_path, key)[1]
    assert ("anchor 4", "it does not chain onto anchor 3: one of them was replaced") in [
        (p.subject, p.problem) for p in problems
    ]
    # ... and the case the replacement holds is one that anchor 4 never saw
    assert (2, "anchor 3 holds it, anchor 4 does not (it was deleted)") in [
        (p.case_id, p.problem) for p in problems
    ]
    (tmp_path / "anchor-000002.json").unlink()
    problems = anchors.read_series(tmp_path, key)[1]
    assert ("anchor 3", "anchor 2 is missing from the series (removed)") in [
        (p.subject, p.problem) for p in problems
    ]


def test_the_key_is_required_and_must_be_long_enough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(anchors.KEY_ENV, raising=False)
    with pytest.raises(ConfigurationError, match="no anchor key"):
        anchors.load_key(None)
    short = tmp_path / "short.key"
    short.write_bytes(b"a secret, but a short one\n")
    with pytest.raises(ConfigurationError, match="at least 32"):
        anchors.load_key(short)
    with pytest.raises(ConfigurationError, match="cannot read the anchor key"):
        anchors.load_key(tmp_path / "missing.key")


def test_the_worker_schedule_writes_a_chained_series(engine: Engine, key: bytes, tmp_path: Path) -> None:
    walked(engine)
    schedule = anchors.AnchorSchedule(engine, tmp_path, key, timedelta(milliseconds=20))
    stop = threading.Event()
    thread = threading.Thread(target=schedule.run, args=(stop,))
    thread.start()
    try:
        for _ in range(500):
            if len(schedule.written) >= 2:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join()
    series, problems = anchors.read_series(tmp_path, key)
    assert len(series) >= 2 and not problems


def test_the_cli_writes_anchors_and_verifies_against_them(
    database_url: str, key_file: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    env = {"SOPFLOW_ANCHOR_KEY_FILE": str(key_file), "SOPFLOW_DB": None, "SOPFLOW_USER": None}

    def sop(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(cli, ["--db", database_url, *args], env=env, catch_exceptions=False)
        assert "Traceback" not in result.output
        return result.exit_code, result.stdout, result.stderr

    assert sop("deploy", str(MINI))[0] == 0
    data = json.dumps({"amount": 100, "purpose": "taxi"})
    assert sop("--as", "alice", "start", "expense", "--data", data)[0] == 0
    assert sop("--as", "alice", "start", "expense", "--data", data)[0] == 0
    folder = tmp_path / "anchors"
    folder.mkdir()
    code, out, _ = sop("audit", "anchor", "--dir", str(folder))
    assert code == 0 and "anchor 1 written to" in out
    assert sop("audit", "anchor", "--dir", str(folder))[0] == 0
    code, out, _ = sop("audit", "anchor", "--out", str(tmp_path / "one.json"))
    assert code == 0
    code, out, _ = sop("audit", "verify", "--anchors", str(folder))
    assert code == 0, out
    assert "audit trail intact: 2 case(s), 2 record(s) checked, against 2 anchor(s)" in out
    with Engine(database_url) as sop_engine:
        delete_case(sop_engine, 1)
    code, out, err = sop("audit", "verify", "--all", "--anchor", str(tmp_path / "one.json"))
    assert code == 1
    assert "case 1, record 1: the case is gone" in err
    code, out, err = sop("audit", "verify", "--anchors", str(folder), "--key-file", str(tmp_path / "x"))
    assert code == 2 and "cannot read the anchor key" in err
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(os.urandom(32))
    code, out, err = sop("audit", "verify", "--anchors", str(folder), "--key-file", str(wrong))
    assert code == 1 and "was not signed with this key" in err


def test_the_worker_writes_anchors_on_its_schedule(tmp_path: Path, key_file: Path) -> None:
    import shutil
    import signal
    import subprocess
    import sys
    import time

    binary = shutil.which("sopflow", path=str(Path(sys.executable).parent))
    assert binary is not None
    folder = tmp_path / "anchors"
    folder.mkdir()
    db = f"sqlite:///{tmp_path / 'x.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPFLOW_")}
    env["SOPFLOW_ANCHOR_KEY_FILE"] = str(key_file)
    subprocess.run([binary, "--db", db, "deploy", str(MINI)], env=env, check=True, capture_output=True)
    log = tmp_path / "worker.err"
    with log.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            [
                binary,
                "--db",
                db,
                "worker",
                "--idle",
                "0.2",
                "--anchor-dir",
                str(folder),
                "--anchor-every",
                "1h",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + 30
            while not (folder / "anchor-000001.json").exists():
                assert proc.poll() is None, log.read_text(encoding="utf-8")
                assert time.monotonic() < deadline, "no anchor was written"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0, log.read_text(encoding="utf-8")
    series, problems = anchors.read_series(folder, anchors.load_key(key_file))
    assert len(series) == 1 and not problems
    with Engine(db) as engine:
        assert engine.verify(anchors=series).ok
    bad = subprocess.run(
        [binary, "--db", db, "worker", "--anchor-dir", str(folder), "--anchor-every", "soon"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--anchor-every `soon` is not a duration" in bad.stderr


def test_the_registry_is_pinned_by_the_anchor(engine: Engine, key: bytes, clock: Clock) -> None:
    grant = engine.delegate("mia", "max", actor="mia", ends_at=clock() + timedelta(days=3))
    clock.advance(hours=1)
    anchor = engine.anchor(key)
    clock.advance(hours=1)
    engine.delegate("fay", "dual", actor="fay", ends_at=clock() + timedelta(days=1))  # after: fine
    assert engine.verify(anchors=[anchor]).ok
    # A grant the author could have made, slipped in after the anchor but dated before it.
    earlier = clock() - timedelta(days=1)
    with engine.store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO delegations (kind, delegator, delegate, roles, starts_at, ends_at, created_by, "
                "created_at) VALUES ('grant', 'mia', 'bob', '[]', :start, :end, 'mia', :start)"
            ),
            {"start": earlier, "end": earlier + timedelta(days=5)},
        )
    run_sql(engine, f"UPDATE delegations SET ends_at = {_later(engine, 'ends_at')} WHERE id = {grant.id}")
    found = [(f.subject, f.problem) for f in engine.verify(anchors=[anchor]).findings]
    assert found == [
        ("delegations", f"rows {anchor.label} holds were edited"),
        ("delegation 3", f"it was added after {anchor.label} but is dated before it"),
    ]


def _later(engine: Engine, column: str) -> str:
    """`column` plus 30 days, in the database's own SQL."""
    if engine.store.dialect == "postgresql":
        return f"{column} + INTERVAL '30 days'"
    return f"datetime({column}, '+30 days')"


def test_a_series_names_delegation_rows_that_went_missing(engine: Engine, key: bytes, tmp_path: Path) -> None:
    engine.delegate("mia", "max", actor="mia", ends_at=engine.clock() + timedelta(days=3))
    anchors.write_next(engine, tmp_path, key)
    run_sql(engine, "DELETE FROM delegations")
    anchors.write_next(engine, tmp_path, key)
    series, problems = anchors.read_series(tmp_path, key)
    assert [(p.subject, p.problem) for p in problems] == [
        ("delegations", "anchor 2 holds fewer delegation rows than anchor 1 did")
    ]
    assert ("delegations", f"{series[0].label} holds 1 rows, 0 remain") in [
        (f.subject, f.problem) for f in engine.verify(anchors=series).findings
    ]
