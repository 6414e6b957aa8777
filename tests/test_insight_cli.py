"""`sopflow report`, `baseline` and `compare` through click's CliRunner and as a real process, and the
HTML report opened in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sopflow.cli.main import cli
from sopflow.engine.runtime import Engine
from tests.insight_history import FIXTURE, Clock, build

SOPFLOW = Path(sys.executable).parent / "sopflow"


@pytest.fixture
def db(database_url: str) -> str:
    clock = Clock()
    with Engine(database_url, clock=clock) as sop:
        sop.deploy([FIXTURE])
        build(sop, clock)
    return database_url


def run(db: str, *args: str, user: str = "ed") -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--db", db, "--as", user, *args])
    return result.exit_code, result.output


def test_report_tables_json_csv_and_check(db: str) -> None:
    code, out = run(db, "report", "--definition", "article")
    assert code == 0, out
    assert "review-within-2h" in out and "83%" in out
    assert "cycle time of 3 closed case(s): median 4h00m" in out
    code, out = run(db, "--json", "report", "--definition", "article")
    (process,) = json.loads(out)["processes"]
    review = next(s for s in process["steps"] if s["key"] == "review")
    assert review["times"]["median"] == 3600 and review["sendbacks"] == 1
    code, out = run(db, "report", "--definition", "article", "--format", "csv", "--by", "person")
    assert code == 0 and out.splitlines()[0].startswith("definition,by,key,count")
    assert any(line.startswith("article,person,ed,8,") for line in out.splitlines())
    code, out = run(db, "report", "--check")
    assert code == 0 and "equal a recomputation" in out


def test_baselines_through_the_cli(db: str) -> None:
    code, out = run(db, "baseline", "set", "article", "review", "30m", "--source", "industry report 2026")
    assert code == 0 and "article review 30m (industry report 2026)" in out
    code, out = run(db, "baseline", "set", "article", "3h", "--source", "industry report 2026")
    assert code == 0 and "(whole process) 3h00m" in out
    code, out = run(db, "report", "--definition", "article")
    assert "review median 1h00m, baseline 30m (industry report 2026), +100 % ! more than 20% worse" in out
    code, out = run(db, "baseline", "update", "--month", "2026-03")
    assert code == 0 and "4 baseline(s) recorded" in out
    code, out = run(db, "--json", "baseline", "list", "article")
    assert [b["kind"] for b in json.loads(out)] == ["benchmark", "benchmark", "own", "own", "own", "own"]
    code, out = run(db, "baseline", "set", "article", "review", "soon", "--source", "x")
    assert code == 2 and "not a duration" in out
    code, out = run(db, "baseline", "set", "article", "reveiw", "1h", "--source", "x")
    assert code == 1 and "did you mean `review`" in out


def test_an_empty_database_has_nothing_to_report(sqlite_url: str) -> None:
    with Engine(sqlite_url) as sop:
        sop.deploy([FIXTURE])
    code, out = run(sqlite_url, "report")
    assert code == 0 and "nothing to report" in out


def test_bad_input_is_one_message(db: str) -> None:
    code, out = run(db, "report", "--definition", "artcle")
    assert code == 1 and "Traceback" not in out
    code, out = run(db, "compare", "article", "1", "1")
    assert code == 2 and "two different versions" in out
    code, out = run(db, "compare", "article", "1", "2", "--since", "yesterday")
    assert code == 2 and "ISO 8601" in out
    code, out = run(db, "compare", "article", "1", "2", "--since", "2026-03-01T00:00:00Z")
    assert code == 1 and "article@2" in out
    code, out = run(db, "baseline", "update", "--month", "March")
    assert code == 2 and "not a month" in out


def test_report_as_a_process(sqlite_url: str, tmp_path: Path) -> None:
    clock = Clock()
    with Engine(sqlite_url, clock=clock) as sop:
        sop.deploy([FIXTURE])
        build(sop, clock)
    db = sqlite_url
    env = {**os.environ, "SOPFLOW_DB": db, "SOPFLOW_USER": "ed"}
    html = tmp_path / "r.html"
    done = subprocess.run(
        [str(SOPFLOW), "report", "--definition", "article", "--html", str(html)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "charts written to" in done.stdout and html.is_file()
    assert "https://" not in html.read_text(encoding="utf-8").split("<script>", 1)[0]
    done = subprocess.run(
        [str(SOPFLOW), "compare", "article", "1", "2"], capture_output=True, text=True, env=env, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "article@2" in done.stderr and "Traceback" not in done.stderr


CHROMIUM = Path("/usr/bin/chromium")


# CI sets SOPFLOW_REQUIRE_CHROMIUM=1 (.ci/run installs Debian's chromium): there a missing browser fails the
# test instead of skipping it.
needs_chromium = pytest.mark.skipif(
    (not CHROMIUM.exists() or shutil.which("chromium") is None)
    and os.environ.get("SOPFLOW_REQUIRE_CHROMIUM") != "1",
    reason="no chromium",
)


def open_in_chromium(page_file: Path, shot: Path) -> tuple[list[str], list[int], list[str], list[str]]:
    """Console errors, shapes drawn per chart, the charts' texts and every URL the page asked for."""
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri())
            page.wait_for_function("document.body.dataset.rendered !== undefined", timeout=20_000)
            drawn = page.evaluate(
                "Array.from(document.querySelectorAll('.chart')).map(c => "
                "c.querySelectorAll('svg path, svg rect, svg circle').length)"
            )
            texts = page.evaluate(
                "Array.from(document.querySelectorAll('.chart svg text')).map(t => t.textContent)"
            )
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    return errors, drawn, texts, requests


@needs_chromium
def test_html_report_renders_in_chromium(sqlite_url: str, tmp_path: Path) -> None:
    from sopflow.engine.insight.html import render

    clock = Clock()
    with Engine(sqlite_url, clock=clock) as sop:
        sop.deploy([FIXTURE])
        build(sop, clock)
        sop.set_baseline("article", "review", 1800, source="industry report 2026", actor="ed")
        page_file = tmp_path / "report.html"
        page_file.write_text(render(sop.report("article")), encoding="utf-8")
    errors, drawn, texts, requests = open_in_chromium(page_file, tmp_path / "report.png")
    assert errors == []
    assert len(drawn) == 4 and all(n > 5 for n in drawn)
    assert any("Handling time per step" in t for t in texts) and any("处理时长" in t for t in texts)
    assert "review" in texts and "review-within-2h" in texts
    assert all(url.startswith("file://") for url in requests)  # nothing from the network
    assert (tmp_path / "report.png").stat().st_size > 10_000


@needs_chromium
def test_the_demos_report_renders_in_chromium(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{tmp_path / 'demo.db'}", "demo"])
    assert result.exit_code == 0, result.output
    assert "publish-within-4h: 1 of 1 kept (100%), 0 breached" in result.output
    page_file = tmp_path / "sopflow-report.html"
    assert f"written to {page_file}" in result.output
    errors, drawn, texts, requests = open_in_chromium(page_file, tmp_path / "demo.png")
    assert errors == []
    assert len(drawn) == 8 and all(n > 5 for n in drawn)  # two processes, four charts each
    assert "manual_review" in texts
    assert all(url.startswith("file://") for url in requests)
