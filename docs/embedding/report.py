"""Figures from the trail: three reviews on a fake clock, a baseline with its source, the report."""

import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sopflow.engine import Engine

definitions = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("definitions")
database = Path(tempfile.mkdtemp()) / "cases.db"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Monday 09:00 in Beijing

    def __call__(self) -> datetime:
        return self.now


clock = Clock()
with Engine(f"sqlite:///{database}", clock=clock) as sop:
    sop.deploy([definitions])
    for minutes in (90, 100, 130):  # how long each piece waits in manual review
        case = sop.start("content-review", {"title": "春季活动", "origin": "original"}, actor="li.na").case
        sop.fire(case.id, "submit", actor="li.na", payload={"material_url": "https://cms.example.com/m/1"})
        sop.fire(case.id, "claim", actor="wang.fang")
        sop.fire(
            case.id, "pass_screening", actor="wang.fang", payload={"topic_compliant": True, "typo_free": True}
        )
        clock.now += timedelta(minutes=minutes)
        sop.fire(case.id, "pass_review", actor="chen.jing", payload={"copyright_status": "original"})
        clock.now += timedelta(minutes=10)
    sop.set_baseline(
        "content-review", "manual_review", 125 * 60, source="industry report 2026", actor="zhao.min"
    )

    report = sop.report("content-review", viewer="zhao.min")  # only what zhao.min may see
    (process,) = report.processes
    review = next(s for s in process.steps if s.key == "manual_review")
    assert review.times.median is not None and review.baseline is not None and review.change is not None
    print(
        f"manual review median {review.times.median / 60:.0f} min over {review.times.count} cases, "
        f"baseline {review.baseline / 60:.0f} min ({review.baseline_source}), {review.change:+.0%}"
    )
    print("flagged:", [s.key for s in process.flagged] or "none")
    print("derived figures equal the trail:", sop.report_check() == [])
