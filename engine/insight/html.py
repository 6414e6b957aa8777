"""`sopflow report --html FILE`: the report as one self-contained HTML page with charts.

The charts are drawn by Apache ECharts (vendored, pinned: `vendor/echarts.min.js` with its licence,
docs/decisions.md), inlined into the page so that it opens without a network: handling time per step
against its baseline, SLA compliance per week, the cumulative flow of cases per step, and the flow chart
with each step coloured by its median handling time. Labels are in Chinese and English.
"""

from __future__ import annotations

import html
import json
from collections import deque
from importlib.resources import files
from typing import Any

from sopflow.engine.insight.report import ProcessReport, Report

ECHARTS_VERSION = "6.1.0"

LABELS = {
    "title": ("流程报告", "Process report"),
    "handling": (
        "各步骤处理时长（中位数，小时）与基线",
        "Handling time per step (median, hours) against its baseline",
    ),
    "median": ("中位数", "median"),
    "baseline": ("基线", "baseline"),
    "sla": ("每周时限达成率", "SLA compliance per week"),
    "cfd": ("累积流量图（已完成各步骤的个案）", "Cumulative flow: cases that had passed each step"),
    "flowchart": ("流程图（按处理时长中位数着色）", "Flow chart coloured by median handling time"),
    "steps": ("步骤", "Step"),
    "cases": ("个案", "cases"),
    "hours": ("小时", "hours"),
    "flagged": ("超出基线阈值的步骤", "Steps worse than their baseline by more than the threshold"),
    "none": ("无", "none"),
}


def label(key: str) -> str:
    zh, en = LABELS[key]
    return f"{zh} / {en}"


def echarts_source() -> str:
    return files("sopflow.engine.insight").joinpath("vendor/echarts.min.js").read_text(encoding="utf-8")


def render(report: Report) -> str:
    """The whole page."""
    sections = []
    charts: list[dict[str, Any]] = []
    for i, process in enumerate(report.processes):
        ids = [f"p{i}-{kind}" for kind in ("handling", "sla", "cfd", "flowchart")]
        charts += [
            {"id": ids[0], "option": _handling(process)},
            {"id": ids[1], "option": _sla(process)},
            {"id": ids[2], "option": _cfd(process)},
            {"id": ids[3], "option": _flowchart(process)},
        ]
        flagged = ", ".join(html.escape(s.key) for s in process.flagged) or label("none")
        divs = "".join(f'<div class="chart" id="{cid}"></div>' for cid in ids)
        sections.append(
            f"<section><h2>{html.escape(process.title)} <small>({html.escape(process.definition_id)})"
            f"</small></h2><p>{label('flagged')}: {flagged}</p>{divs}</section>"
        )
    data = json.dumps(charts, ensure_ascii=False).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="zh"><head><meta charset="utf-8"><title>sopflow — {label("title")}</title>
<style>body{{font-family:sans-serif;margin:2em}}.chart{{width:900px;height:380px;margin:1em 0}}</style>
</head><body><h1>{label("title")}</h1>
<p>{html.escape(report.generated_at.isoformat())}</p>
{"".join(sections)}
<script>{echarts_source()}</script>
<script>
const charts = {data};
for (const c of charts) {{
  const chart = echarts.init(document.getElementById(c.id), null, {{renderer: "svg"}});
  chart.setOption(Object.assign({{animation: false}}, c.option));
}}
document.body.dataset.rendered = String(charts.length);
</script></body></html>
"""


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 3)


def _handling(p: ProcessReport) -> dict[str, Any]:
    steps = [s for s in p.steps if s.times.count]
    return {
        "title": {"text": label("handling"), "textStyle": {"fontSize": 14}},
        "tooltip": {"trigger": "axis"},
        "legend": {"top": 24, "data": [label("median"), label("baseline")]},
        "grid": {"top": 70},
        "xAxis": {"type": "category", "data": [s.key for s in steps]},
        "yAxis": {"type": "value", "name": label("hours")},
        "series": [
            {"name": label("median"), "type": "bar", "data": [_hours(s.times.median) for s in steps]},
            {"name": label("baseline"), "type": "bar", "data": [_hours(s.baseline) for s in steps]},
        ],
    }


def _sla(p: ProcessReport) -> dict[str, Any]:
    weeks = sorted({w.week for w in p.weeks})
    names = sorted({w.deadline for w in p.weeks})
    per = {(w.deadline, w.week): w.compliance for w in p.weeks}
    return {
        "title": {"text": label("sla"), "textStyle": {"fontSize": 14}},
        "tooltip": {"trigger": "axis"},
        "legend": {"top": 24, "data": names},
        "grid": {"top": 70},
        "xAxis": {"type": "category", "data": weeks},
        "yAxis": {"type": "value", "min": 0, "max": 100, "name": "%"},
        "series": [
            {
                "name": name,
                "type": "line",
                "data": [
                    None if per.get((name, w)) is None else round(100 * (per[(name, w)] or 0), 1)
                    for w in weeks
                ],
            }
            for name in names
        ],
    }


def _cfd(p: ProcessReport) -> dict[str, Any]:
    weeks = sorted({f.week for f in p.flow})
    order = [name for name, _title in p.states]
    states = sorted({f.state for f in p.flow}, key=lambda s: order.index(s) if s in order else len(order))
    per = {(f.state, f.week): f.cumulative for f in p.flow}
    return {
        "title": {"text": label("cfd"), "textStyle": {"fontSize": 14}},
        "tooltip": {"trigger": "axis"},
        "legend": {"top": 24, "data": states},
        "grid": {"top": 70},
        "xAxis": {"type": "category", "boundaryGap": False, "data": weeks},
        "yAxis": {"type": "value", "name": label("cases")},
        "series": [
            {
                "name": s,
                "type": "line",
                "areaStyle": {"opacity": 0.25},
                "data": [per.get((s, w), 0) for w in weeks],
            }
            for s in states
        ],
    }


def _flowchart(p: ProcessReport) -> dict[str, Any]:
    medians = {s.key: _hours(s.times.median) for s in p.steps} if p.by == "step" else {}
    names = [name for name, _t in p.states]
    depth = _depths(names, p.edges)
    rows: dict[int, int] = {}
    nodes: list[dict[str, Any]] = []
    values: list[float] = []
    for name, title in p.states:
        level = depth.get(name, max(depth.values(), default=0) + 1)
        row = rows.get(level, 0)
        rows[level] = row + 1
        values.append(medians.get(name) or 0.0)
        nodes.append({
            "name": name, "x": level * 160, "y": row * 70, "value": medians.get(name) or 0,
            "tooltip": {"formatter": f"{title}<br/>{label('median')}: {medians.get(name) or 0} h"},
        })  # fmt: skip
    top = max(values, default=0.0) or 1.0
    return {
        "title": {"text": label("flowchart"), "textStyle": {"fontSize": 14}},
        "tooltip": {},
        "visualMap": {
            "min": 0,
            "max": top,
            "calculable": True,
            "orient": "horizontal",
            "left": "center",
            "bottom": 0,
            "inRange": {"color": ["#dcfce7", "#fde68a", "#ef4444"]},
            "text": [label("hours"), "0"],
        },
        "series": [
            {
                "type": "graph",
                "layout": "none",
                "top": 60,
                "bottom": 80,
                "left": 70,
                "right": 70,
                "symbolSize": 46,
                "label": {"show": True, "fontSize": 10},
                "edgeSymbol": ["none", "arrow"],
                "data": nodes,
                "links": [
                    {"source": a, "target": b} for a, b in p.edges if a != b and a in names and b in names
                ],
                "lineStyle": {"curveness": 0.15},
            }
        ],
    }


def _depths(names: list[str], edges: tuple[tuple[str, str], ...]) -> dict[str, int]:
    """Each state's distance from the first, following transitions: the columns of the flow chart."""
    if not names:
        return {}
    depth = {names[0]: 0}
    queue = deque([names[0]])
    while queue:
        here = queue.popleft()
        for a, b in edges:
            if a == here and b not in depth:
                depth[b] = depth[here] + 1
                queue.append(b)
    return depth


def _percent(share: float | None) -> float | None:
    return None if share is None else round(100 * share, 1)


def _column(per: dict[tuple[str, str], int], state: str, weeks: list[str]) -> list[int]:
    return [per.get((state, w), 0) for w in weeks]
