"""The statistics `compare` needs, small and exact, without a numerical library (docs/decisions.md).

- Durations are skewed (most reviews are quick, a few wait days), so a mean and a t-test mislead: two
  versions are compared with the Mann–Whitney U test (exact distribution when both samples are small and
  untied, else the normal approximation with the tie correction and a continuity correction), and the
  size of the difference is the ratio of medians with a percentile bootstrap confidence interval (seeded:
  the same data always give the same interval).
- Rates (rejections, complaints per case) are compared with Fisher's exact test, two-sided, which stays
  right for the handful of cases a trial has, where a two-proportion z-test does not.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

EXACT_LIMIT = 30
"""Both samples at most this large and without ties: the exact U distribution is used."""

BOOTSTRAP_ROUNDS = 2000
BOOTSTRAP_CAP = 2000
"""A sample larger than this is bootstrapped from a seeded random subset of this size."""


@dataclass(frozen=True, slots=True)
class UTest:
    u: float
    p_value: float
    exact: bool


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def mann_whitney(x: Sequence[float], y: Sequence[float]) -> UTest:
    """Two-sided Mann–Whitney U test of `x` against `y` (U counts pairs where x > y, ties a half)."""
    n1, n2 = len(x), len(y)
    if not n1 or not n2:
        return UTest(0.0, 1.0, exact=False)
    pooled = sorted([(v, 0) for v in x] + [(v, 1) for v in y])
    ranks = [0.0] * len(pooled)
    ties: list[int] = []
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        ties.append(j - i + 1)
        i = j + 1
    r1 = sum(r for r, (_v, g) in zip(ranks, pooled, strict=True) if g == 0)
    u = r1 - n1 * (n1 + 1) / 2
    if n1 <= EXACT_LIMIT and n2 <= EXACT_LIMIT and all(t == 1 for t in ties):
        return UTest(u, _exact_p(u, n1, n2), exact=True)
    n = n1 + n2
    mean = n1 * n2 / 2
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1)) if n > 1 else 0.0
    variance = n1 * n2 / 12 * ((n + 1) - tie_term)
    if variance <= 0:
        return UTest(u, 1.0, exact=False)
    z = (abs(u - mean) - 0.5) / math.sqrt(variance)
    return UTest(u, min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2))), exact=False)


def _exact_p(u: float, n1: int, n2: int) -> float:
    """P(|U − n1·n2/2| ≥ |u − n1·n2/2|) under the null: counts of rank arrangements by U."""
    # counts[i][j][s]: arrangements of i x's and j y's with U = s (recursion on the largest value).
    counts: list[list[list[int]]] = [[[] for _ in range(n2 + 1)] for _ in range(n1 + 1)]
    for i in range(n1 + 1):
        for j in range(n2 + 1):
            if i == 0 or j == 0:
                counts[i][j] = [1]
                continue
            a = counts[i - 1][j]  # the largest is an x: it beats all j y's
            b = counts[i][j - 1]
            size = i * j + 1
            row = [0] * size
            for s, c in enumerate(a):
                row[s + j] += c
            for s, c in enumerate(b):
                row[s] += c
            counts[i][j] = row
    dist = counts[n1][n2]
    total = sum(dist)
    centre = n1 * n2 / 2
    far = abs(u - centre)
    tail = sum(c for s, c in enumerate(dist) if abs(s - centre) >= far - 1e-9)
    return min(1.0, tail / total)


def median_ratio_ci(
    x: Sequence[float], y: Sequence[float], level: float = 0.95, seed: int = 13
) -> tuple[float, float] | None:
    """A percentile-bootstrap interval of median(y) / median(x); None when a median can be 0."""
    if not x or not y:
        return None
    rng = random.Random(seed)  # noqa: S311 - a reproducible resample, not a secret
    xs = list(x) if len(x) <= BOOTSTRAP_CAP else rng.sample(list(x), BOOTSTRAP_CAP)
    ys = list(y) if len(y) <= BOOTSTRAP_CAP else rng.sample(list(y), BOOTSTRAP_CAP)
    ratios = []
    for _ in range(BOOTSTRAP_ROUNDS):
        mx = median(rng.choices(xs, k=len(xs)))
        my = median(rng.choices(ys, k=len(ys)))
        if mx <= 0:
            return None
        ratios.append(my / mx)
    ratios.sort()
    low = ratios[int((1 - level) / 2 * len(ratios))]
    high = ratios[min(len(ratios) - 1, int((1 + level) / 2 * len(ratios)))]
    return low, high


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p of Fisher's exact test on [[a, b], [c, d]]: the probability of every table with the
    same margins no more likely than this one."""
    row1, col1, n = a + b, a + c, a + b + c + d
    if n == 0:
        return 1.0

    def log_p(k: int) -> float:
        return _log_choose(col1, k) + _log_choose(n - col1, row1 - k) - _log_choose(n, row1)

    low, high = max(0, row1 - (n - col1)), min(row1, col1)
    observed = log_p(a)
    total = sum(math.exp(log_p(k)) for k in range(low, high + 1) if log_p(k) <= observed + 1e-9)
    return min(1.0, total)


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
