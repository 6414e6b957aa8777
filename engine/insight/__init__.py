"""Figures from the audit trail: handling times, working time, SLA compliance, errors and satisfaction,
workload, baselines and comparisons of versions (`Engine.report`, `Engine.compare`, the baselines)."""

from sopflow.engine.insight.compare import Comparison, DurationComparison, RateComparison
from sopflow.engine.insight.report import (
    Backlog,
    DeadlineFigure,
    Figures,
    FlowPoint,
    MonthFigure,
    ProcessReport,
    Report,
    StepFigure,
    WeekCompliance,
    Workload,
)
from sopflow.engine.store.insight import BaselineRow

__all__ = [
    "Backlog",
    "BaselineRow",
    "Comparison",
    "DeadlineFigure",
    "DurationComparison",
    "Figures",
    "FlowPoint",
    "MonthFigure",
    "ProcessReport",
    "RateComparison",
    "Report",
    "StepFigure",
    "WeekCompliance",
    "Workload",
]
