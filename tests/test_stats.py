"""lcopt.stats: seeds per cell, the mean's CI, paired CIs and the compounding interaction."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lcopt.stats import (
    cell_seed,
    excludes_zero,
    expected_under_independence,
    interaction,
    mean_ci,
    mean_difference,
    paired_ci,
)

VALUES = [((i * 37) % 11) / 10 for i in range(60)]


def test_cell_seed_depends_on_the_seed_and_the_whole_key_only():
    assert cell_seed(0, "m", "d", "s", "score") == cell_seed(0, "m", "d", "s", "score")
    seeds = {
        cell_seed(0, "m", "d", "s", "score"),
        cell_seed(1, "m", "d", "s", "score"),
        cell_seed(0, "m", "d", "s", "f1"),
        cell_seed(0, "m", "d2", "s", "score"),
        cell_seed(0, "m", "ds", "", "score"),  # keys are separated, not concatenated
    }
    assert len(seeds) == 5
    assert all(0 <= s < 2**64 for s in seeds)


# --- mean_ci -------------------------------------------------------------------------------------------


def test_mean_ci_deterministic_for_seed():
    assert mean_ci(VALUES, seed=7) == mean_ci(VALUES, seed=7)
    assert mean_ci(VALUES, seed=7) != mean_ci(VALUES, seed=8)


def test_mean_ci_contains_the_mean_and_is_ordered():
    mean = sum(VALUES) / len(VALUES)
    for seed in range(5):
        lo, hi = mean_ci(VALUES, seed=seed)
        assert min(VALUES) <= lo < mean < hi <= max(VALUES)
    lo50, hi50 = mean_ci(VALUES, seed=0, level=0.5)
    lo95, hi95 = mean_ci(VALUES, seed=0, level=0.95)
    assert lo95 <= lo50 < hi50 <= hi95


def test_mean_ci_width_is_plausible():
    # 100 Bernoulli(1/2) values: standard error 0.05, so a 95% interval is about +-0.098
    values = [float(i % 2) for i in range(100)]
    lo, hi = mean_ci(values, seed=1, n_resamples=2000)
    assert 0.14 < hi - lo < 0.26
    assert lo < 0.5 < hi


def test_mean_ci_degenerate_empty_and_none():
    assert mean_ci([0.25] * 17, seed=0) == (0.25, 0.25)
    assert mean_ci([1.0], seed=0) == (1.0, 1.0)
    assert all(math.isnan(x) for x in mean_ci([], seed=0))
    assert all(math.isnan(x) for x in mean_ci([None, None], seed=0))
    with_none = [1.0, None, 0.0, None, 1.0, 0.5, None]
    assert mean_ci(with_none, seed=3) == mean_ci([1.0, 0.0, 1.0, 0.5], seed=3)


# --- paired_ci -----------------------------------------------------------------------------------------


def test_pairing_resamples_the_same_ids_for_every_array():
    """A stack equal to its baseline on every sample differs by exactly 0 in every replicate only when
    both are resampled on the same ids."""
    rng = np.random.default_rng(0)
    baseline = rng.random(50)
    assert paired_ci([baseline, baseline.copy()], mean_difference, seed=1) == (0.0, 0.0)
    shifted = baseline - 0.1
    lo, hi = paired_ci([shifted, baseline], mean_difference, seed=1)
    assert lo == pytest.approx(-0.1) and hi == pytest.approx(-0.1)


def test_a_paired_ci_is_narrower_than_two_independent_ones():
    """Samples differ far more from each other than the stack from the baseline: the paired difference is
    clearly below 0 while the two means' own CIs overlap."""
    rng = np.random.default_rng(3)
    difficulty = rng.random(40)
    baseline = difficulty
    stack = np.clip(difficulty - 0.05 + rng.normal(0, 0.02, 40), 0, 1)
    lo, hi = paired_ci([stack, baseline], mean_difference, seed=2)
    assert hi < 0 and excludes_zero(lo, hi)
    stack_lo, stack_hi = mean_ci(stack, seed=4)
    base_lo, base_hi = mean_ci(baseline, seed=5)
    assert stack_hi > base_lo  # the independent CIs overlap
    assert hi - lo < 0.3 * ((stack_hi - stack_lo) + (base_hi - base_lo))


def test_paired_ci_checks_its_arrays():
    with pytest.raises(ValueError, match="equally long"):
        paired_ci([np.ones(3), np.ones(4)], mean_difference, seed=0)
    assert all(math.isnan(x) for x in paired_ci([np.ones(1), np.zeros(1)], mean_difference, seed=0))


def test_excludes_zero():
    assert excludes_zero(0.01, 0.2) and excludes_zero(-0.3, -0.1)
    assert not excludes_zero(-0.1, 0.1) and not excludes_zero(0.0, 0.2)
    assert not excludes_zero(None, 0.2) and not excludes_zero(math.nan, math.nan)


# --- expected under independence, interaction -----------------------------------------------------------


def test_expected_under_independence_hand_values():
    # README's kv_retrieval row: baseline 100, prune 23.6, lingua2 65.6 -> 0.236 * 0.656 = 0.154816
    assert expected_under_independence(1.0, [0.236, 0.656]) == pytest.approx(0.154816)
    # baseline 0.8, parts 0.4 and 0.6: retentions 0.5 and 0.75 -> 0.8 * 0.375 = 0.3
    assert expected_under_independence(0.8, [0.4, 0.6]) == pytest.approx(0.3)
    # three parts: 0.5 * (0.4/0.5) * (0.25/0.5) * 1 = 0.2
    assert expected_under_independence(0.5, [0.4, 0.25, 0.5]) == pytest.approx(0.2)
    # parts above a low baseline: 0.1 * 5 * 5 = 2.5 -> clipped to 1
    assert expected_under_independence(0.1, [0.5, 0.5]) == 1.0
    # a part that kept nothing retains nothing, whatever the baseline
    assert expected_under_independence(0.6, [0.0, 0.5]) == 0.0
    assert expected_under_independence(0.0, [0.0, 0.5]) == 0.0
    assert expected_under_independence(0.0, [0.2, 0.5]) == 1.0


@given(
    st.floats(0, 1),
    st.lists(st.floats(0, 1), min_size=2, max_size=4),
)
def test_expected_never_leaves_0_to_1(baseline, parts):
    expected = float(expected_under_independence(baseline, parts))
    assert 0.0 <= expected <= 1.0
    if baseline > 0 and all(p <= baseline for p in parts):  # no part improves: at most the weakest part
        assert expected <= min(parts) + 1e-12


def test_interaction_hand_example():
    """20 samples, baseline right on all, each part on 10, the stack on 2: expected 1 * 0.5 * 0.5 = 0.25,
    measured 0.1, interaction -0.15 (they compound). The sum of drops, 0.5 + 0.5 = 1.0 against a measured
    0.9, read "less than additive"."""
    baseline = np.ones(20)
    a = np.array([1.0] * 10 + [0.0] * 10)
    b = np.array([1.0, 0.0] * 10)
    stack = np.array([1.0, 0.0] * 2 + [0.0] * 16)
    assert interaction(baseline, a, b, stack) == pytest.approx(-0.15)
    lo, hi = paired_ci([baseline, a, b, stack], interaction, seed=0, n_resamples=2000)
    assert lo < -0.15 < hi
    # resampling within 20 samples: the interval is wide but stays within what the scale allows
    assert lo >= -1.0 and hi <= 1.0


def test_independent_techniques_have_no_interaction():
    """A part that fails samples 0-9 and another that fails every second sample fail independently; the
    stack that fails either's samples is exactly what independence predicts."""
    baseline = np.ones(40)
    a = (np.arange(40) >= 10).astype(float)  # keeps 3/4
    b = (np.arange(40) % 2 == 0).astype(float)  # keeps 1/2
    stack = a * b  # 15/40 = 3/8 = 3/4 * 1/2
    assert interaction(baseline, a, b, stack) == pytest.approx(0.0)
    lo, hi = paired_ci([baseline, a, b, stack], interaction, seed=0)
    assert lo <= 0 <= hi and not excludes_zero(lo, hi)


def test_a_strong_interaction_is_distinguishable():
    baseline = np.ones(200)
    a = (np.arange(200) % 2 == 0).astype(float)  # keeps 1/2
    b = (np.arange(200) % 2 == 0).astype(float)  # the same half: together they should keep 1/2 (overlap)
    stack = a * b
    value = float(interaction(baseline, a, b, stack))
    assert value == pytest.approx(0.25)  # 0.5 measured vs 0.25 expected: they overlap
    lo, hi = paired_ci([baseline, a, b, stack], interaction, seed=1)
    # each replicate gives m - m^2 for its resampled share m, at most 0.25 (at m = 1/2)
    assert 0.2 < lo < hi <= 0.25 and excludes_zero(lo, hi)
