"""The installed `sopflow` console script, run as a real process: what a shell user and a service manager
see (exit codes, stdout and stderr, files created, signals), which the in-process runner cannot show."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "definitions"
CONTENT = {"title": "春季活动预告", "origin": "original"}


def _binary() -> str:
    beside = Path(sys.executable).parent / "sopflow"
    if beside.is_file():
        return str(beside)
    found = shutil.which("sopflow")
    if found is None:
        pytest.skip("the sopflow console script is not installed (pip install -e .)")
    return found


SOPFLOW = _binary()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPFLOW_")}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def sopflow(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SOPFLOW, *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stdout + done.stderr, done.stderr


def test_help_lists_the_commands() -> None:
    done = sopflow("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: sopflow [OPTIONS] COMMAND [ARGS]...")
    for command in ("validate", "simulate", "deploy", "start", "fire", "show", "audit", "worker", "demo"):
        assert f"\n  {command} " in done.stdout, command


def test_version() -> None:
    done = sopflow("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sopflow, version ")


def test_validate_the_shipped_definitions() -> None:
    done = sopflow("validate", "definitions")
    assert done.returncode == 0, done.stdout + done.stderr
    assert " file(s) checked: 0 error(s)" in done.stdout


def test_demo_in_a_fresh_folder(tmp_path: Path) -> None:
    done = sopflow("demo", cwd=tmp_path)
    no_traceback(done)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "sopflow-demo.db").is_file()
    assert "audit trail intact" in done.stdout
    assert re.search(r"^Try: \S*sopflow --db sqlite:///sopflow-demo\.db ", done.stdout, re.MULTILINE)


def test_a_refused_fire_exits_1_with_error_and_hint(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    deploy = sopflow(
        "--db", db, "deploy", str(DEFINITIONS / "org.yaml"), str(DEFINITIONS / "content-review.yaml")
    )
    assert deploy.returncode == 0, deploy.stderr
    start = sopflow(
        "--db", db, "--as", "li.na", "--json", "start", "content-review", "--data", json.dumps(CONTENT)
    )
    assert start.returncode == 0, start.stderr
    case = str(json.loads(start.stdout)["case"]["id"])

    done = sopflow("--db", db, "--as", "chen.jing", "fire", case, "submit", "--data", '{"material_url": "u"}')
    no_traceback(done)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("error: chen.jing may not fire `submit`")
    assert "\n  hint: " in done.stderr


def test_a_case_that_reached_its_final_state_says_so(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    examples = ROOT / "docs" / "examples"
    deploy = sopflow("--db", db, "deploy", str(examples / "org.yaml"), str(examples / "supplier-quotes.yaml"))
    assert deploy.returncode == 0, deploy.stderr
    for user, *args in (
        ("li.lei", "start", "supplier-quotes", "--data", "{}"),
        ("qian.yu", "fire", "1", "north.quoted", "--data", '{"price": 1200}'),
        ("li.lei", "fire", "1", "choose", "--data", '{"supplier": "north"}'),
    ):
        assert sopflow("--db", db, "--as", user, *args).returncode == 0
    done = sopflow("--db", db, "--as", "li.lei", "fire", "1", "choose", "--data", '{"supplier": "east"}')
    no_traceback(done)
    assert done.returncode == 1
    assert done.stderr.startswith("error: case 1 is closed: it ended in `chosen`"), done.stderr
    assert "parent" not in done.stderr


def test_a_team_holding_someone_not_in_the_org_is_refused_at_the_start(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    examples = ROOT / "docs" / "examples"
    deploy = sopflow(
        "--db", db, "deploy", str(examples / "org.yaml"), str(examples / "team-self-assessment.yaml")
    )
    assert deploy.returncode == 0, deploy.stderr
    data = json.dumps({"month": "2026-11", "team": ["nobody"]})
    done = sopflow("--db", db, "--as", "li.lei", "start", "team-self-assessment", "--data", data)
    no_traceback(done)
    assert done.returncode == 1
    assert done.stderr.startswith("error: data field `team` (item 1) names 'nobody', who is not a person")
    listed = sopflow("--db", db, "--json", "list")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_usage_errors_exit_2() -> None:
    missing = sopflow("fire")
    no_traceback(missing)
    assert missing.returncode == 2
    assert "Missing argument 'CASE'" in missing.stderr

    bad_db = sopflow("--db", "nope://x", "defs", "list")
    no_traceback(bad_db)
    assert bad_db.returncode == 2
    assert bad_db.stderr.startswith("error: database `nope` is not supported")
    assert "hint: " in bad_db.stderr


def test_worker_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "worker.err"
    db = f"sqlite:///{tmp_path / 'x.db'}"
    with log.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            [SOPFLOW, "--db", db, "worker", "--idle", "0.2"],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + 30
            while "running on" not in log.read_text(encoding="utf-8"):
                assert proc.poll() is None, log.read_text(encoding="utf-8")
                assert time.monotonic() < deadline, "the worker did not start"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text(encoding="utf-8")
    assert code == 0, text
    assert "stopping (SIGTERM)" in text
    assert text.rstrip().endswith("worker stopped")
    assert "Traceback" not in text


def test_a_reader_that_goes_away_is_not_an_error() -> None:
    proc = subprocess.Popen(
        [SOPFLOW, "diagram", "content-review"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    # Close the reading end before the command has started writing: its first write gets EPIPE,
    # as with `sopflow diagram … | head -0`.
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    proc.wait(timeout=60)
    assert err == "", err


def test_a_database_that_is_not_at_this_schema_is_a_configuration_error(tmp_path: Path) -> None:
    import sqlite3

    from sopflow.engine.store.database import SCHEMA_REVISION

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        conn.execute("INSERT INTO alembic_version VALUES (?)", (SCHEMA_REVISION,))
    done = sopflow("--db", f"sqlite:///{path}", "list")
    no_traceback(done)
    assert done.returncode == 2
    assert "failed: no such table" in done.stderr and "sopflow db upgrade" in done.stderr
