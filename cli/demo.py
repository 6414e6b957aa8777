"""`sopflow demo`: the README's main job, end to end on a real database.

Deploys the seed definitions with their org, walks a content-review case and a tiered-approval case
(major reform: two directors jointly) through the people of the sample org, including refusals that
the rules require, then prints their history, verifies the audit trail, draws a case's diagram and ends
with a short report (and its charts in sopflow-report.html).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from sopflow.cli.render import mermaid, shipped_definitions, table, text
from sopflow.engine.errors import SopflowError
from sopflow.engine.runtime import Engine, Result

DEMO_DB = Path("sopflow-demo.db")
REPORT_HTML = "sopflow-report.html"

CONTENT = {
    "title": "春季活动预告 / Spring campaign preview",
    "origin": "user_submission",
    "contributor": "用户小王",
}
CONTENT_STEPS: list[tuple[str, str, dict[str, Any], str | None]] = [
    ("li.na", "submit", {"material_url": "https://cms.example.com/m/1001", "channel": "公众号"}, None),
    ("wang.fang", "claim", {}, None),
    (
        "wang.fang",
        "pass_screening",
        {"topic_compliant": True, "typo_free": True, "note": "无错别字"},
        "初筛通过",
    ),
    (
        "chen.jing",
        "pass_review",
        {"copyright_status": "user_authorised", "comment": "质量良好，已授权"},
        None,
    ),
    ("li.na", "tag", {"category": "entertainment"}, None),
    (
        "li.na",
        "publish",
        {"layout_confirmed": True, "links_valid": True, "published_url": "https://mp.example.com/a/1001"},
        "a specialist tries to publish",
    ),
    (
        "chen.jing",
        "publish",
        {"layout_confirmed": True, "links_valid": True, "published_url": "https://mp.example.com/a/1001"},
        "发布",
    ),
]

CONTENT_PAUSES = (35, 20, 45, 130, 30, 10, 25)
"""Minutes before each of CONTENT_STEPS: the demo's clock moves as a working day would, so that its report
shows real handling times."""

REFORM = {
    "title": "上线会员积分商城 / Launch a points mall",
    "tier": "major_reform",
    "description": "新增积分兑换功能 / points can be exchanged for goods",
    "supporting_data": [
        {"metric": "conversion_rate", "value": 0.021, "source": "交易记录"},
        {"metric": "next_day_retention", "value": 0.32, "source": "用户行为分析"},
    ],
}
REFORM_STEPS: list[tuple[str, str, dict[str, Any], str | None]] = [
    ("zhou.qiang", "submit", {}, None),
    ("zhou.qiang", "approve", {}, "submitter tries to approve"),
    ("zhao.min", "approve", {}, "运营侧同意 (as operations director)"),
    ("zhao.min", "approve", {}, "以技术总监身份再次批准 (the same person again)"),
    ("guo.hui", "approve", {}, "技术侧可支撑 (technology director)"),
]


REFORM_PAUSES = (15, 5, 100, 2, 185)
"""Minutes before each of REFORM_STEPS."""


class DemoClock:
    """The demo's clock: it starts two days ago at 09:00 UTC and moves only when the walk says so."""

    def __init__(self) -> None:
        start = datetime.now(UTC) - timedelta(days=2)
        self.now = start.replace(hour=9, minute=0, second=0, microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def wait(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)


def run_demo(database_url: str | None) -> None:
    if database_url is None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{DEMO_DB}{suffix}").unlink(missing_ok=True)
        database_url = f"sqlite:///{DEMO_DB}"
    definitions = shipped_definitions()
    click.secho(f"== sopflow demo on {database_url}", bold=True)
    clock = DemoClock()
    with Engine(database_url, clock=clock) as engine:
        deployed = engine.deploy([definitions], actor="demo")
        click.echo(f"deployed {len(deployed.definitions)} definitions and the org from {definitions}")
        content = _walk(engine, "content-review", "li.na", CONTENT, CONTENT_STEPS, clock, CONTENT_PAUSES)
        clock.wait(60)
        reform = _walk(engine, "tiered-approval", "zhou.qiang", REFORM, REFORM_STEPS, clock, REFORM_PAUSES)
        for case_id in (content, reform):
            click.secho(f"\n== history of case {case_id}", bold=True)
            click.echo(
                table(
                    ["#", "actor", "role", "event", "step", "comment"],
                    [
                        (
                            r.seq,
                            r.actor,
                            r.role or "",
                            r.event,
                            f"{r.from_state or '·'} → {r.to_state}"
                            if r.outcome == "accepted"
                            else f"REFUSED: {r.reason}",
                            r.comment or "",
                        )
                        for r in engine.history(case_id)
                    ],
                )
            )
        click.secho("\n== audit verify --all", bold=True)
        report = engine.verify()
        click.echo(
            f"audit trail {'intact' if report.ok else 'BROKEN'}: {report.cases} case(s), "
            f"{report.records} record(s) checked"
        )
        click.secho(f"\n== diagram of case {content} (Mermaid; paste into any Mermaid viewer)", bold=True)
        case = engine.case(content)
        path = [r.to_state for r in engine.history(content) if r.outcome == "accepted" and r.to_state]
        click.echo(mermaid(engine.definition(case.definition_id, case.definition_version), path, case.state))
        _report(engine, database_url)
        program, activate = _program()
        click.echo(f"\nTry: {program} --db {database_url} --as chen.jing show {reform}")
        if activate:
            click.echo(f"  (sopflow is not on your PATH: `{activate}` lets you type just `sopflow`)")
        if not report.ok:
            raise click.exceptions.Exit(1)


def _report(engine: Engine, database_url: str) -> None:
    """A short report of what the demo did, and its charts as sopflow-report.html beside the database."""
    from sopflow.cli.commands.insight import summary
    from sopflow.engine.insight.html import render

    click.secho("\n== report (sopflow report)", bold=True)
    found = engine.report()
    for process in found.processes:
        click.echo(summary(process))
    folder = (
        Path(database_url.removeprefix("sqlite:///")).parent
        if database_url.startswith("sqlite:///")
        else Path()
    )
    target = folder / REPORT_HTML
    target.write_text(render(found), encoding="utf-8")
    click.echo(f"charts (handling time, SLA per week, cumulative flow, flow chart) written to {target}")


def _program() -> tuple[str, str | None]:
    """How to call sopflow from this shell: `sopflow` when it is on PATH; else the script beside this
    Python (`.venv/bin/sopflow` after `make demo`), with the command that puts it on PATH."""
    import os
    import shutil
    import sys

    found = shutil.which("sopflow")
    beside = Path(sys.executable).parent / "sopflow"
    if found is not None or not beside.is_file():
        return "sopflow", None
    try:
        shown = os.path.relpath(beside)
    except ValueError:  # another drive on Windows
        shown = str(beside)
    if shown.startswith(".."):
        shown = str(beside)
    activate = beside.parent / "activate"
    return shown, f"source {os.path.relpath(activate) if shown != str(beside) else activate}"


def _walk(
    engine: Engine,
    definition_id: str,
    starter: str,
    data: dict[str, Any],
    steps: list[tuple[str, str, dict[str, Any], str | None]],
    clock: DemoClock,
    pauses: tuple[int, ...],
) -> int:
    definition = engine.definition(definition_id)
    click.secho(f"\n== {definition.key}: {text(definition.title)}", bold=True)
    result = engine.start(definition_id, data, actor=starter)
    case_id = result.case.id
    click.echo(f"{starter} starts case {case_id} → {result.case.state}")
    for (user, event, payload, comment), pause in zip(steps, pauses, strict=True):
        clock.wait(pause)
        try:
            result = engine.fire(case_id, event, actor=user, payload=payload, comment=comment)
        except SopflowError as exc:
            click.echo(f"{user}: {event} REFUSED ({exc.kind}): {exc.message}")
            continue
        click.echo(f"{user}: {event} → {_describe(result)}")
    return case_id


def _describe(result: Result) -> str:
    case = result.case
    out = f"{case.state} ({text(case.state_title)})"
    if result.record.detail.get("outcome") == "pending":
        out += ", vote recorded, waiting for more"
    if case.assignee and result.record.event == "claim":
        out += f", claimed by {case.assignee}"
    return out
