"""lcopt.stats: seeds per cell, the mean's CI, paired intervals (against scipy), p-values, q-values and the
interaction's scale."""

import math
import warnings

import numpy as np
import pytest
from scipy.special import ndtr
from scipy.stats import bootstrap, false_discovery_control
from scipy.stats import t as student_t

from lcopt.stats import (
    GUARD,
    as_percent,
    bh_qvalues,
    cell_seed,
    difference_test,
    expanded_z,
    expected_under_independence,
    interaction_test,
    interval,
    log_interaction,
    mean_ci,
    mean_difference,
    paired_test,
    resample,
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


# --- the interval against scipy ----------------------------------------------------------------------


def _of_arrays(statistic):
    """A statistic of totals as scipy calls it: of the (resampled) arrays along `axis`."""
    return lambda *arrays, axis=-1: statistic(np.stack([a.sum(axis=axis) for a in arrays], -1), arrays[0].shape[axis])


def _cases(continuous: bool = True):
    """Paired arrays of n samples with each statistic. Continuous scores: no replicate ties the estimate
    within rounding, where scipy's exact comparison and this module's tolerance agree."""
    rng = np.random.default_rng(11)
    for n in (12, 30, 80):
        base = (rng.random(n) < 0.7).astype(float)
        a = base * (rng.random(n) < 0.6)
        share = rng.random(n) if continuous else np.round(rng.random(n) * 6) / 6
        b = base * np.where(rng.random(n) < 0.6, 1.0, share)
        stack = a * b
        yield n, [a, base], mean_difference
        yield n, [b, base], mean_difference
        yield n, [base, a, b, stack], log_interaction


@pytest.mark.parametrize("bias_corrected", [True, False])
def test_interval_is_scipys_bootstrap_at_the_expanded_level(bias_corrected):
    """The same seed draws the same resamples as scipy.stats.bootstrap(paired=True); the expanded interval
    at 95% is scipy's BCa (or percentile) interval at the level whose normal quantile is the expanded z."""
    compared = 0
    for n, arrays, statistic in _cases():
        level = 2 * ndtr(expanded_z(0.95, n)) - 1
        resampled = resample(arrays, seed=n, n_resamples=999)
        distance = np.abs(statistic(resampled.boot.T, n) - statistic(resampled.totals, n))
        if bias_corrected and np.any((distance > 0) & (distance < 1e-9)):
            continue  # a tie up to rounding: scipy's exact comparison lets the rounding decide z0
        compared += 1
        test = paired_test(resampled, statistic, bias_corrected=bias_corrected)
        reference = bootstrap(
            tuple(np.asarray(arrays)),
            _of_arrays(statistic),
            n_resamples=999,
            confidence_level=level,
            method="BCa" if bias_corrected else "percentile",
            paired=True,
            vectorized=True,
            rng=np.random.default_rng(n),
        ).confidence_interval
        assert test.low == pytest.approx(reference.low, abs=1e-9)
        assert test.high == pytest.approx(reference.high, abs=1e-9)
    assert compared >= 8


def test_ties_do_not_depend_on_the_order_of_a_sum():
    """Scores on a grid of sixths: many replicates equal the estimate, up to the rounding of a sum in one
    order or another. Reversing the samples (and so every sum's order) leaves the interval and p as they
    are."""
    for n, arrays, statistic in _cases(continuous=False):
        forward = paired_test(resample(arrays, seed=n), statistic)
        ids = np.random.default_rng(n).integers(0, n, (1000, n))  # the same resamples, in reverse sample order
        arrays_r = [np.asarray(a)[::-1] for a in arrays]
        totals = np.asarray(arrays_r).sum(-1)
        boot = np.asarray(arrays_r)[:, n - 1 - ids].sum(-1)
        jack = totals[:, None] - np.asarray(arrays_r)
        low, high, p = interval(statistic(totals, n), statistic(boot.T, n), statistic(jack.T, n - 1), n)
        assert (float(low), float(high), float(p)) == pytest.approx((forward.low, forward.high, forward.p_value))


def test_expanded_z_is_hesterbergs():
    """sqrt(n/(n-1)) t_{n-1}: wider than the normal quantile at small n, the normal quantile in the limit."""
    assert expanded_z(0.95, 30) == pytest.approx(math.sqrt(30 / 29) * 2.04523, rel=1e-5)
    assert expanded_z(0.95, 10) > expanded_z(0.95, 30) > expanded_z(0.95, 200) > 1.959964
    assert expanded_z(0.95, 100_000) == pytest.approx(1.959964, abs=1e-4)


def test_the_expanded_percentile_interval_of_a_symmetric_mean_is_the_t_interval():
    """What the expansion is for: on symmetric data the bootstrap interval of a mean matches mean ± t s/√n,
    where the unexpanded one is too narrow by about sqrt((n-1)/n) z / t."""
    values = np.tile(np.linspace(-1, 1, 5), 4)  # n = 20, symmetric
    n = values.size
    half_t = student_t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    test = paired_test(resample([values, np.zeros(n)], 3, 20_000), mean_difference, bias_corrected=False)
    assert test.high - test.low == pytest.approx(2 * half_t, rel=0.03)
    plain = np.percentile(resample([values], 3, 20_000).boot[0] / n, [2.5, 97.5])
    assert plain[1] - plain[0] < 0.93 * 2 * half_t


# --- p-values --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias_corrected", [True, False])
def test_p_below_005_exactly_when_the_95_interval_excludes_zero(bias_corrected):
    """The p-value inverts the interval: over 400 random comparisons around the decision boundary, p < 0.05
    and "the 95% interval excludes 0" agree, but where 0 sits within one replicate's spacing of an end."""
    rng = np.random.default_rng(5)
    disagree = 0
    for i in range(400):
        n = int(rng.integers(10, 60))
        base = (rng.random(n) < 0.7).astype(float)
        stack = base * (rng.random(n) < rng.uniform(0.7, 1.0))
        result = resample([stack, base], seed=i, n_resamples=500)
        test = paired_test(result, mean_difference, bias_corrected=bias_corrected)
        excludes = test.low > 0 or test.high < 0
        if (test.p_value < 0.05) != excludes:
            replicates = np.sort(mean_difference(result.boot.T, n))
            spacing = np.max(np.diff(replicates[(replicates > -0.2) & (replicates < 0.2)]), initial=0)
            assert min(abs(test.low), abs(test.high)) <= spacing, (i, test)
            disagree += 1
    assert disagree <= 8


def test_p_value_orders_the_evidence():
    rng = np.random.default_rng(2)
    base = (rng.random(60) < 0.8).astype(float)
    keep = rng.random(60)
    p = [difference_test(base * (keep < r), base, seed=0).p_value for r in (1.0, 0.95, 0.85, 0.6)]
    assert p[0] == 1.0  # equal on every sample
    assert p[0] > p[1] > p[2] > p[3] and p[3] < 0.01


def test_degenerate_samples_give_the_point_and_a_p_value():
    """All samples equal: scipy's BCa is NaN (the jackknife's acceleration is 0/0); here the interval is
    the estimate and the p-value 1 (estimate 0) or the smallest 1,000 replicates resolve."""
    ones = np.ones(30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scipy_ci = bootstrap(
            (ones - 1,), np.mean, method="BCa", n_resamples=1000, rng=np.random.default_rng(0)
        ).confidence_interval
    assert math.isnan(scipy_ci.low)
    same = difference_test(ones, ones, seed=0)
    assert (same.estimate, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    lost = difference_test(np.zeros(30), ones, seed=0)
    assert (lost.estimate, lost.low, lost.high) == (-1.0, -1.0, -1.0)
    assert 1e-3 <= lost.p_value < 0.005
    assert math.isnan(difference_test([1.0], [0.0], seed=0).low)
    assert math.isnan(difference_test([1.0], [0.0], seed=0).p_value)


def test_interval_is_vectorized_over_cells():
    """One call over many cells gives what one call per cell gives (the coverage study relies on it)."""
    rng = np.random.default_rng(4)
    cells = [
        resample([(rng.random(25) < 0.6).astype(float), (rng.random(25) < 0.7).astype(float)], i) for i in range(6)
    ]
    one_by_one = [paired_test(c, mean_difference) for c in cells]
    low, high, p = interval(
        np.array([mean_difference(c.totals, 25) for c in cells]),
        np.stack([mean_difference(c.boot.T, 25) for c in cells]),
        np.stack([mean_difference(c.jack.T, 24) for c in cells]),
        25,
    )
    assert np.allclose(low, [t.low for t in one_by_one]) and np.allclose(high, [t.high for t in one_by_one])
    assert np.allclose(p, [t.p_value for t in one_by_one])


# --- q-values --------------------------------------------------------------------------------------------


def test_bh_qvalues_are_scipys_and_skip_untested_cells():
    p = [0.001, 0.04, np.nan, 0.03, 0.5, 0.011, 0.2]
    q = bh_qvalues(p)
    tested = [x for x in p if not np.isnan(x)]
    assert np.allclose(q[~np.isnan(p)], false_discovery_control(tested, method="bh"))
    assert np.isnan(q[2])
    assert bh_qvalues([]).size == 0 and np.isnan(bh_qvalues([np.nan])).all()
    # 20 cells at p = 0.04: each passes raw, none is a discovery at 5% once 19 nulls stand beside it
    assert (bh_qvalues([0.04] + [0.5] * 19) > 0.05).all()


# --- pairing ---------------------------------------------------------------------------------------------


def test_pairing_resamples_the_same_ids_for_every_array():
    """A stack equal to its baseline on every sample differs by exactly 0 in every replicate only when
    both are resampled on the same ids."""
    rng = np.random.default_rng(0)
    baseline = rng.random(50)
    same = difference_test(baseline, baseline.copy(), seed=1)
    assert (same.low, same.high, same.p_value) == (0.0, 0.0, 1.0)
    shifted = difference_test(baseline - 0.1, baseline, seed=1)
    assert shifted.low == pytest.approx(-0.1) and shifted.high == pytest.approx(-0.1)


def test_a_paired_ci_is_narrower_than_two_independent_ones():
    """Samples differ far more from each other than the stack from the baseline: the paired difference is
    clearly below 0 while the two means' own CIs overlap."""
    rng = np.random.default_rng(3)
    difficulty = rng.random(40)
    baseline = difficulty
    stack = np.clip(difficulty - 0.05 + rng.normal(0, 0.02, 40), 0, 1)
    test = difference_test(stack, baseline, seed=2)
    assert test.high < 0 and test.p_value < 0.01
    stack_lo, stack_hi = mean_ci(stack, seed=4)
    base_lo, base_hi = mean_ci(baseline, seed=5)
    assert stack_hi > base_lo  # the independent CIs overlap
    assert test.high - test.low < 0.3 * ((stack_hi - stack_lo) + (base_hi - base_lo))


def test_resample_checks_its_arrays():
    with pytest.raises(ValueError, match="equally long"):
        resample([np.ones(3), np.ones(4)], seed=0)


# --- the interaction's scale -----------------------------------------------------------------------------


def test_log_interaction_hand_values():
    # baseline 20/20, parts 10/20 each, stack 2/20: log(2.5 · 20.5 / (10.5 · 10.5)), guarded by 1/2
    totals = np.array([20.0, 10.0, 10.0, 2.0])
    assert log_interaction(totals, 20) == pytest.approx(math.log(2.5 * 20.5 / 10.5**2))
    assert GUARD == 0.5
    # without the guard it is log(stack / expected) = log(0.1 / 0.25)
    assert math.log((2 / 20) / expected_under_independence(1.0, [0.5, 0.5])) == pytest.approx(math.log(0.4))
    # independent parts, exactly: the stack's total times the baseline's equals the parts' product
    assert log_interaction(np.array([39.5, 29.5, 19.5, 14.5]), 40) == 0.0  # 40 · 15 = 30 · 20
    # a x2 gain and a x1/2 loss weigh alike; three parts
    assert log_interaction(np.array([9.5, 19.5, 9.5, 19.5]), 10) == pytest.approx(0.0)
    assert log_interaction(np.array([[9.5, 4.5, 4.5, 4.5, 1.5]]), 10) == pytest.approx([math.log(2 * 100 / 125)])


def test_expected_under_independence_is_not_clipped():
    # README's kv_retrieval row: baseline 100, prune 23.6, lingua2 65.6 -> 0.236 * 0.656 = 0.154816
    assert expected_under_independence(1.0, [0.236, 0.656]) == pytest.approx(0.154816)
    assert expected_under_independence(0.8, [0.4, 0.6]) == pytest.approx(0.3)
    # parts that improve a low baseline: 0.1 * 5 * 5 = 2.5, shown as it is (no stack can reach it)
    assert expected_under_independence(0.1, [0.5, 0.5]) == pytest.approx(2.5)
    assert expected_under_independence(0.6, [0.0, 0.5]) == 0.0
    assert math.isnan(expected_under_independence(0.0, [0.2, 0.5]))


def test_independent_techniques_have_no_interaction():
    """A part that fails samples 0-9 and another that fails every second sample fail independently; the
    stack that fails either's samples is what independence predicts, and its interval holds 0."""
    baseline = np.ones(40)
    a = (np.arange(40) >= 10).astype(float)  # keeps 3/4
    b = (np.arange(40) % 2 == 0).astype(float)  # keeps 1/2
    test = interaction_test(resample([baseline, a, b, a * b], seed=0))
    assert abs(test.estimate) < 0.01  # the guard's 1/2 only
    assert test.low < 0 < test.high and test.p_value > 0.5


def test_a_strong_interaction_is_distinguishable():
    """Two parts that fail the same half of 200 samples: together they keep 1/2, not 1/4 (they overlap)."""
    baseline = np.ones(200)
    half = (np.arange(200) % 2 == 0).astype(float)
    test = interaction_test(resample([baseline, half, half, half], seed=1))
    assert test.estimate == pytest.approx(math.log(100.5 * 200.5 / 100.5**2))  # ≈ log 2
    assert 0.4 < test.low < test.estimate < test.high and test.p_value < 0.01


def test_as_percent_reads_a_log_ratio():
    assert as_percent(math.log(0.8)) == "-20%" and as_percent(math.log(1.5)) == "+50%"
    assert as_percent(0.0) == as_percent(-0.0) == "+0%" and as_percent(None) == "—"
