"""The statistics behind `sopflow compare`, against values known from the literature and invariants."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sopflow.engine.insight import stats


def test_fisher_exact_matches_the_textbook_example() -> None:
    # [[1, 9], [11, 3]]: two-sided p = 0.002759 (the worked example of Wikipedia's "Fisher's exact test").
    assert stats.fisher_exact(1, 9, 11, 3) == pytest.approx(0.002759, abs=1e-6)
    assert stats.fisher_exact(5, 5, 5, 5) == pytest.approx(1.0)
    assert stats.fisher_exact(0, 0, 0, 0) == 1.0


def test_exact_u_test_of_separated_samples() -> None:
    test = stats.mann_whitney([1, 2, 3], [4, 5, 6])
    assert test.exact and test.u == 0
    assert test.p_value == pytest.approx(2 / math.comb(6, 3))  # the two extreme arrangements of 20


def test_u_test_with_ties_uses_the_normal_approximation() -> None:
    test = stats.mann_whitney([1, 1, 2, 2, 3], [2, 3, 3, 4, 4])
    assert not test.exact
    assert 0 < test.p_value < 1


def test_median_ratio_interval_brackets_the_ratio() -> None:
    x = [60.0 * i for i in range(10, 30)]
    y = [v / 2 for v in x]
    ci = stats.median_ratio_ci(x, y)
    assert ci is not None and ci[0] <= 0.5 <= ci[1]
    assert stats.median_ratio_ci(x, y) == ci  # seeded: the same data give the same interval


@given(
    st.lists(st.integers(0, 1000), min_size=1, max_size=12),
    st.lists(st.integers(0, 1000), min_size=1, max_size=12),
)
def test_u_test_is_symmetric(x: list[int], y: list[int]) -> None:
    xs, ys = [float(v) for v in x], [float(v) for v in y]
    a, b = stats.mann_whitney(xs, ys), stats.mann_whitney(ys, xs)
    assert a.u + b.u == pytest.approx(len(x) * len(y))
    assert a.p_value == pytest.approx(b.p_value)
    assert 0 <= a.p_value <= 1


@given(st.integers(0, 12), st.integers(0, 12), st.integers(0, 12), st.integers(0, 12))
def test_fisher_is_a_probability_and_symmetric(a: int, b: int, c: int, d: int) -> None:
    p = stats.fisher_exact(a, b, c, d)
    assert 0 <= p <= 1 + 1e-9
    assert p == pytest.approx(stats.fisher_exact(c, d, a, b))
