"""Comparing two versions of one definition (the PDCA check, 001 §四, 002 §三(一)3): cycle time and each
step's handling time, rejection and complaint rates, each with a test suited to it (`stats`), and a plain
verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sopflow.engine.errors import UsageError
from sopflow.engine.insight import stats
from sopflow.engine.store import insight as sql

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine

ALPHA = 0.05
"""A difference is called significant when its test's p-value is below this."""


@dataclass(frozen=True, slots=True)
class DurationComparison:
    step: str
    """A step, or "" for the whole case (cycle time)."""
    n1: int
    n2: int
    median1: float | None
    median2: float | None
    ratio: float | None
    """median2 / median1: 0.8 means version 2 takes 20 % less time."""
    ratio_ci: tuple[float, float] | None
    p_value: float
    exact: bool
    significant: bool


@dataclass(frozen=True, slots=True)
class RateComparison:
    name: str
    """"rejection" or "complaint": the share of cases with at least one."""
    cases1: int
    hits1: int
    cases2: int
    hits2: int
    p_value: float
    significant: bool

    @property
    def rate1(self) -> float | None:
        return self.hits1 / self.cases1 if self.cases1 else None

    @property
    def rate2(self) -> float | None:
        return self.hits2 / self.cases2 if self.cases2 else None


@dataclass(frozen=True, slots=True)
class Comparison:
    definition_id: str
    version1: int
    version2: int
    cycle: DurationComparison
    steps: tuple[DurationComparison, ...]
    rates: tuple[RateComparison, ...]
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        for plain, rate in zip(found["rates"], self.rates, strict=True):
            plain["rate1"], plain["rate2"] = rate.rate1, rate.rate2
        return found


def compare(
    engine: Engine,
    definition_id: str,
    version1: int,
    version2: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    viewer: str | None = None,
) -> Comparison:
    """Version 2 of `definition_id` against version 1, over the cases each ran that `viewer` may view
    (from the derived tables, brought up to date first)."""
    from sopflow.engine.insight.refresh import refresh

    if version1 == version2:
        raise UsageError(
            "compare needs two different versions", hint="e.g. sopflow compare content-review 1 2"
        )
    from sopflow.engine.insight.report import check_period, figures_visible

    check_period(since, until)
    first = engine.definition(definition_id, version1)
    second = engine.definition(definition_id, version2)
    visible = figures_visible(engine, viewer, definition_id)
    refresh(engine, definition_id)
    excluded = sql.orphan_ids(engine.store)
    one = sql.Scope(definition_id, since, until, (version1,), visible, excluded)
    two = sql.Scope(definition_id, since, until, (version2,), visible, excluded)
    store = engine.store
    cycle = _durations("", sql.samples(store, one, None), sql.samples(store, two, None))
    names = [s.name for s in first.all_states()]
    names += [s.name for s in second.all_states() if s.name not in names]
    steps = []
    for name in names:
        x, y = sql.samples(store, one, name), sql.samples(store, two, name)
        if x or y:
            steps.append(_durations(name, x, y))
    (n1, rej1, com1), (n2, rej2, com2) = sql.case_rates(store, one), sql.case_rates(store, two)
    rates = (_rate("rejection", n1, rej1, n2, rej2), _rate("complaint", n1, com1, n2, com2))
    titles = {s.name: s.title.en or s.title.zh or s.name for s in (*first.all_states(), *second.all_states())}
    return Comparison(
        definition_id, version1, version2, cycle, tuple(steps), rates,
        verdict(version1, version2, cycle, steps, rates, titles),
    )  # fmt: skip


def _durations(step: str, x: list[float], y: list[float]) -> DurationComparison:
    m1 = stats.median(x) if x else None
    m2 = stats.median(y) if y else None
    test = stats.mann_whitney(x, y)
    ratio = m2 / m1 if m1 and m2 is not None else None
    ci = stats.median_ratio_ci(x, y) if len(x) > 1 and len(y) > 1 else None
    return DurationComparison(
        step, len(x), len(y), m1, m2, ratio, ci, test.p_value, test.exact,
        bool(x and y) and test.p_value < ALPHA,
    )  # fmt: skip


def _rate(name: str, n1: int, k1: int, n2: int, k2: int) -> RateComparison:
    p = stats.fisher_exact(k1, n1 - k1, k2, n2 - k2)
    return RateComparison(name, n1, k1, n2, k2, p, p < ALPHA)


def verdict(
    v1: int,
    v2: int,
    cycle: DurationComparison,
    steps: list[DurationComparison],
    rates: tuple[RateComparison, ...],
    titles: dict[str, str],
) -> str:
    """One plain paragraph: what is significantly faster or slower, and what is not significant."""
    parts: list[str] = []
    for c in [cycle, *steps]:
        where = "overall (cycle time)" if c.step == "" else f"at {titles.get(c.step, c.step).lower()}"
        if c.significant and c.ratio is not None:
            word = "faster" if c.ratio < 1 else "slower"
            parts.append(f"version {v2} is {word} {where} (median {_pct(c.ratio)}, p = {c.p_value:.3g})")
    if not parts:
        n = cycle.n1 + cycle.n2
        parts.append(
            f"no significant difference in handling time between versions {v1} and {v2} with {n} closed cases"
        )
    for r in rates:
        n = r.cases1 + r.cases2
        if r.significant and r.rate1 is not None and r.rate2 is not None:
            word = "lower" if r.rate2 < r.rate1 else "higher"
            parts.append(
                f"its {r.name} rate is {word} ({r.rate2:.0%} against {r.rate1:.0%}, p = {r.p_value:.3g})"
            )
        else:
            parts.append(f"the difference in {r.name} rate is not significant with {n} cases")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.0f} %"
