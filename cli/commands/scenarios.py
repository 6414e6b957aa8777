"""`sopflow test`: run the scenarios a process owner keeps beside each definition (ID.test.yaml).

Exit 0 when every scenario passed, 1 when one failed, 2 when a scenario file (or the definition or org it
runs) is invalid: then nothing runs, and every problem is printed as FILE:LINE:COL like `validate` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

import click

from sopflow.cli.main import emit, settings

if TYPE_CHECKING:
    from sopflow.engine.definition.model import Org
    from sopflow.engine.errors import Problem
    from sopflow.engine.scenario.model import ScenarioFile
    from sopflow.engine.scenario.run import RunReport, ScenarioResult

EXIT_INVALID = 2


@click.command("test")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--db",
    "database",
    metavar="URL",
    help="Run on this database: each scenario in a scratch schema (PostgreSQL) or file (SQLite) of its "
    "own, removed afterwards, instead of a throwaway SQLite file. SOPFLOW_DB is not read: a test run "
    "never writes to the database you work on by accident.",
)
@click.option(
    "--junit",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="Also write the results as JUnit XML to FILE (for CI).",
)
@click.pass_context
def test(ctx: click.Context, paths: tuple[Path, ...], database: str | None, junit: Path | None) -> None:
    """Run scenarios: files ID.test.yaml beside ID.yaml (default: every one in definitions/).

    A PATH is a scenario file, a definition (its scenarios beside it) or a folder. Each scenario starts a
    case on the real engine with a fake clock, fires its steps as people, moves the clock (deadlines,
    escalations and timeouts fire on the way) and checks what each step expects. One line per scenario;
    a failure shows the step, its line and the first difference. Exit 0 all passed, 1 a scenario failed,
    2 a scenario file is invalid.

    \b
    sopflow test definitions/
    sopflow test definitions/content-review.yaml --junit results.xml
    """
    from sopflow.engine.scenario.run import run_files

    if database is None and ctx.parent is not None:
        # `sopflow --db URL test` says the same as `sopflow test --db URL`; SOPFLOW_DB alone does not.
        source = ctx.parent.get_parameter_source("db")
        if source is click.core.ParameterSource.COMMANDLINE:
            database = settings().db
    loaded, problems = _load(list(paths) or [Path("definitions")])
    as_json = settings().json
    if problems:
        _invalid(problems, as_json)
    report = run_files(loaded, database=database, on_result=None if as_json else _line)
    if junit is not None:
        _write_junit(report, junit)
    if as_json:
        emit(
            {
                "ok": report.ok,
                "passed": report.passed,
                "failed": report.failed,
                "seconds": round(report.seconds, 3),
                "results": [r.as_dict() for r in report.results],
            }
        )
    else:
        click.echo(f"{report.passed} passed, {report.failed} failed in {report.seconds:.2f} s")
    if not report.ok:
        raise click.exceptions.Exit(1)


def _load(paths: list[Path]) -> tuple[list[tuple[ScenarioFile, Org]], list[Problem]]:
    """Every scenario file, checked; the problems of all of them, so one run shows every mistake."""
    from sopflow.engine.errors import DefinitionError
    from sopflow.engine.scenario.load import load_scenario_file, scenario_files

    loaded: list[tuple[ScenarioFile, Org]] = []
    problems: list[Problem] = []
    for file in scenario_files(paths):
        try:
            scenarios, _definition, org = load_scenario_file(file)
        except DefinitionError as exc:
            problems += exc.problems
            continue
        loaded.append((scenarios, org))
    return loaded, problems


def _invalid(problems: list[Problem], as_json: bool) -> None:
    errors = [p for p in problems if p.severity == "error"]
    if as_json:
        emit({"ok": False, "problems": [p.as_dict() for p in problems]})
    else:
        for problem in problems:
            click.echo(problem.render(), err=True)
        click.echo(f"{len(errors)} error(s): no scenario was run", err=True)
    raise click.exceptions.Exit(EXIT_INVALID)


def _line(result: ScenarioResult) -> None:
    mark = "PASS" if result.passed else "FAIL"
    click.echo(f"{mark}  {result.file}:{result.line}  {result.name}  ({result.seconds * 1000:.0f} ms)")
    if result.difference is not None:
        click.echo(f"      {result.difference.render()}")


def _write_junit(report: RunReport, path: Path) -> None:
    """JUnit XML as CI servers read it: a testsuite per scenario file, a testcase per scenario."""
    from sopflow.engine.errors import UsageError

    root = ET.Element("testsuites", tests=str(len(report.results)), failures=str(report.failed))
    suites: dict[str, ET.Element] = {}
    for result in report.results:
        suite = suites.get(result.file)
        if suite is None:
            suite = suites[result.file] = ET.SubElement(root, "testsuite", name=result.file)
        case = ET.SubElement(
            suite, "testcase", classname=result.file, name=result.name, time=f"{result.seconds:.4f}"
        )
        if result.difference is not None:
            failure = ET.SubElement(case, "failure", message=result.difference.render())
            failure.text = f"{result.file}:{result.difference.line}: {result.difference.render()}"
    for name, suite in suites.items():
        mine = [r for r in report.results if r.file == name]
        suite.set("tests", str(len(mine)))
        suite.set("failures", str(sum(1 for r in mine if not r.passed)))
        suite.set("time", f"{sum(r.seconds for r in mine):.4f}")
    try:
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the JUnit report: {exc.strerror or exc}") from None


COMMANDS = [test]
