"""Bootstrap statistics of the tables: a mean's CI, paired comparisons with a CI and a p-value, and
Benjamini–Hochberg q-values over a family of comparisons.

- **Per-stack CI** (`mean_ci`): 95% percentile bootstrap of a mean (`scipy.stats.bootstrap`), descriptive.
- **Paired comparisons** (`paired_test`): each replicate draws one set of sample ids (exactly as
  `scipy.stats.bootstrap(..., paired=True)` does, `resample`) and takes every array's total on it, so a
  stack, its parts and the baseline are resampled on the same samples and what the samples share
  cancels. Every statistic here is a function of the arrays' totals (`Statistic`). The interval is
  picked by simulated coverage (`lcopt.coverage`, figures in docs/metrics.md):
  - the stack-vs-baseline difference (`mean_difference`): **expanded BCa** (`bias_corrected=True`);
  - the interaction (`log_interaction`): **expanded percentile** (`bias_corrected=False`): BCa's bias
    correction is unstable for this ratio at n = 30 (BCa covered 79.7–94.9% of the simulated designs,
    the expanded percentile 90.5–96.7%).
  "Expanded" (Hesterberg 2014, arXiv:1411.5279; R's resample::ExpandProbs): the normal quantile z of
  the level is replaced by sqrt(n/(n-1)) · t_{n-1}, which undoes the bootstrap's narrowness at small n
  (its variance has divisor n, and z stands where t belongs). BCa is scipy's formula (mid-rank bias
  correction, jackknife acceleration); `interval` reproduces `scipy.stats.bootstrap(method="BCa")` on
  the same resamples (tests/test_stats.py) and runs vectorized over many cells for the coverage study.
- **p-values**: test inversion of the same interval: the p-value is the 1 - level at which the
  interval's end reaches 0, so `p < 0.05` exactly when the 95% interval excludes 0 (up to the
  interpolation between two neighbouring resamples). A share of replicates is not resolved below
  1/(2B), so neither is p (about 0.003 at n = 30 with B = 1,000).
- **q-values** (`bh_qvalues`): Benjamini–Hochberg over a family (aggregate.py says which).

Degenerate data: all samples equal (e.g. a baseline right on every sample, a stack equal to it): every
replicate is the estimate, BCa's jackknife acceleration is 0/0, where scipy returns NaN and warns.
Here the acceleration is 0 (nothing to accelerate), the interval is the estimate itself, and the
p-value is 1 when the estimate is 0, else the smallest that B replicates resolve (every replicate is on
one side of 0: about 0.003 at n = 30 with 1,000 replicates).

Every cell (model, dataset, stack, metric, ...) gets its own seed, `cell_seed(config seed, *key)`: the
replicates of two cells are independent draws, and a cell's interval does not move when another
cell is added to the config.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import bootstrap
from scipy.stats import t as student_t

LEVEL = 0.95
# Added to every arm's total score before a log (Haldane–Anscombe's 1/2, as for a log odds ratio), so
# that the interaction stays finite where a stack, or a resample of a part, scores 0.
GUARD = 0.5

# (..., k) totals of k arrays over n samples -> (...) values
Statistic = Callable[[np.ndarray, int], np.ndarray]

# Which interval each comparison uses, picked by simulated coverage (lcopt.coverage; docs/metrics.md):
# BCa's bias correction helps the difference and hurts the interaction at n ≈ 30.
DIFFERENCE_BIAS_CORRECTED = True  # expanded BCa
INTERACTION_BIAS_CORRECTED = False  # expanded percentile


def cell_seed(seed: int, *key: object) -> int:
    """A 64-bit seed for one table cell: sha256 of the config seed and the cell's key, so it depends on
    nothing else (not on which other cells exist, nor on their order)."""
    text = "\x1f".join([str(seed), *map(str, key)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def mean_ci(
    values: Sequence[float | None], seed: int, n_resamples: int = 1000, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values` (None values are left out).

    (nan, nan) for no values; the value itself for one value or all-equal values (every resample
    has that mean; computing it would only add a rounding step)."""
    array = np.asarray([v for v in values if v is not None], dtype=float)
    if array.size == 0:
        return math.nan, math.nan
    if np.all(array == array[0]):
        return float(array[0]), float(array[0])
    result = bootstrap(
        (array,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


# --- statistics of totals --------------------------------------------------------------------------------


def mean_difference(totals: np.ndarray, n: int) -> np.ndarray:
    """Stack minus baseline, each the mean over the same n samples; totals (..., 2): stack, baseline."""
    return (totals[..., 0] - totals[..., 1]) / n


def log_interaction(totals: np.ndarray, n: int) -> np.ndarray:
    """log(stack / baseline) - Σ log(part / baseline) on totals guarded by `GUARD`; totals (..., k + 2):
    baseline, the k parts, the stack. 0 when the techniques act independently (the stack keeps the
    product of the parts' retentions, Bliss independence); < 0 the stack scores below that (they
    compound); > 0 above (they overlap). exp of it is stack / expected. A log ratio, unlike a difference
    of scores, needs no clipping where parts improve on the baseline, and a ×2 gain and a ×1/2 loss weigh
    alike. `n` is unused (the samples' count cancels in every ratio); it is in the signature of every
    `Statistic`."""
    guarded = np.asarray(totals, dtype=float) + GUARD
    base, parts, stack = guarded[..., 0], guarded[..., 1:-1], guarded[..., -1]
    # one log of each product: equal products give exactly 0, whatever the order of the factors
    return np.log(stack * base ** (parts.shape[-1] - 1)) - np.log(np.prod(parts, axis=-1))


def as_percent(log_ratio: float | None) -> str:
    """A log ratio as the percent change it stands for, for reading: log(0.8) -> "-20%"; None -> "—"."""
    return "—" if log_ratio is None else f"{100 * math.expm1(log_ratio) + 0.0:+.0f}%"  # + 0.0: no "-0%" at 0


def expected_under_independence(baseline: float, parts: Sequence[float]) -> float:
    """What the stack would score if its techniques acted independently: baseline × Π (part / baseline),
    unclipped (above 1 where the parts' gains cannot all be kept); NaN where the baseline is 0."""
    if baseline == 0:
        return math.nan
    return float(baseline * np.prod([p / baseline for p in parts]))


# --- resampling and the interval -------------------------------------------------------------------------


@dataclass(frozen=True)
class Resampled:
    """Totals of k paired arrays of n samples: on the data (k,), on each of B bootstrap resamples (k, B),
    and leaving out each sample in turn (k, n; the jackknife, for BCa's acceleration)."""

    n: int
    totals: np.ndarray
    boot: np.ndarray
    jack: np.ndarray

    def zero_share(self) -> np.ndarray:
        """Per array, the share of resamples whose total is 0 (k,)."""
        return (self.boot == 0).mean(axis=-1)


def resample(arrays: Sequence[Sequence[float]], seed: int, n_resamples: int = 1000) -> Resampled:
    """Paired bootstrap of the arrays' totals. The sample ids are drawn as `scipy.stats.bootstrap` draws
    them for `paired=True` (`rng.integers(0, n, (n_resamples, n))`), so the same seed gives scipy's
    resamples."""
    shapes = [np.shape(a) for a in arrays]
    if len(set(shapes)) != 1 or len(shapes[0]) != 1:
        raise ValueError(f"paired arrays must be one-dimensional and equally long, got {shapes}")
    data = np.asarray(arrays, dtype=float)
    n = data.shape[1]
    ids = np.random.default_rng(seed).integers(0, n, (n_resamples, n)) if n else np.zeros((n_resamples, 0), int)
    totals = data.sum(axis=-1)
    return Resampled(n=n, totals=totals, boot=data[:, ids].sum(axis=-1), jack=totals[:, None] - data)


def expanded_z(level: float, n: int) -> float:
    """The normal quantile for a `level` interval from n samples, expanded (Hesterberg): sqrt(n / (n - 1))
    · t_{n-1}, the quantile at which a bootstrap percentile interval of a mean matches the t interval."""
    return math.sqrt(n / (n - 1)) * float(student_t.ppf(0.5 + level / 2, n - 1))


def _quantile(sorted_b: np.ndarray, q: np.ndarray) -> np.ndarray:
    """`np.percentile(..., 100 q)` (linear) of each row of `sorted_b`, a different q per row."""
    B = sorted_b.shape[-1]
    finite = np.isfinite(q)
    pos = np.where(finite, np.clip(q, 0.0, 1.0), 0.0) * (B - 1)
    low = np.floor(pos).astype(int)
    high = np.minimum(low + 1, B - 1)
    a = np.take_along_axis(sorted_b, low[..., None], axis=-1)[..., 0]
    b = np.take_along_axis(sorted_b, high[..., None], axis=-1)[..., 0]
    return np.where(finite, a + (pos - low) * (b - a), np.nan)


def interval(
    theta: np.ndarray,
    theta_b: np.ndarray,
    theta_jack: np.ndarray,
    n: int,
    level: float = LEVEL,
    bias_corrected: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expanded BCa (`bias_corrected`) or expanded percentile interval and its p-value for H0: θ = 0,
    vectorized over leading axes. theta (...): the estimate; theta_b (..., B): its bootstrap replicates;
    theta_jack (..., n): its jackknife values (used by BCa only). Returns (low, high, p), each (...).

    BCa as scipy: z0 = Φ⁻¹(mid-rank share of replicates below θ; within 1e-9 of θ counts as a tie,
    where scipy's exact comparison lets rounding decide), a = Σu³ / (6 (Σu²)^1.5) with u the
    jackknife values' mean minus each (0 where they are all equal), ends at the replicates' quantiles
    Φ(z0 + (z0 ± z) / (1 - a (z0 ± z))), here with the expanded z. Shares of replicates are clipped to
    [1/(2B), 1 - 1/(2B)], the resolution of B replicates. The p-value inverts the same map at 0."""
    theta = np.asarray(theta, dtype=float)
    theta_b = np.asarray(theta_b, dtype=float)
    B = theta_b.shape[-1]

    def shares(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shares of replicates strictly below x and at or below it. Replicates within rounding of x are
        ties: on discrete scores many equal the estimate exactly, and the order of a sum must not decide
        on which side they fall."""
        tie = np.isclose(theta_b, x[..., None], rtol=1e-9, atol=1e-12)
        below = ((theta_b < x[..., None]) & ~tie).sum(axis=-1) / B
        return below, below + tie.sum(axis=-1) / B

    def resolved(share: np.ndarray) -> np.ndarray:
        return np.clip(share, 0.5 / B, 1 - 0.5 / B)

    if bias_corrected:
        below, at_or_below = shares(theta)
        z0 = ndtri(resolved((below + at_or_below) / 2))  # mid-rank, as scipy
        u = np.mean(theta_jack, axis=-1, keepdims=True) - theta_jack
        ss = (u**2).sum(axis=-1)
        a = np.divide((u**3).sum(axis=-1), 6 * ss**1.5, out=np.zeros_like(ss), where=ss > 0)
    else:
        z0 = a = np.zeros_like(theta)
    z = expanded_z(level, n)

    def level_at(zz: float) -> np.ndarray:
        return ndtr(z0 + (z0 + zz) / (1 - a * (z0 + zz)))

    def z_at(share: np.ndarray) -> np.ndarray:
        """The zz with level_at(zz) = share (±inf where BCa's map never reaches it)."""
        w = ndtri(resolved(share)) - z0
        reachable = 1 + a * w > 0
        return np.where(reachable, w / np.where(reachable, 1 + a * w, 1.0) - z0, np.copysign(np.inf, w))

    sorted_b = np.sort(theta_b, axis=-1)
    low, high = _quantile(sorted_b, level_at(-z)), _quantile(sorted_b, level_at(z))
    # p: the level at which an end of the interval reaches 0. The lower end passes above 0 once its
    # quantile level exceeds the share of replicates at or below 0, the upper end below 0 once its level is
    # under the share strictly below 0 (an atom of replicates at 0 keeps 0 inside, as it does the interval).
    below_zero, at_or_below_zero = shares(np.zeros_like(theta))
    from_below, from_above = -z_at(at_or_below_zero), z_at(below_zero)
    z_zero = np.where(from_below > 0, from_below, np.where(from_above > 0, from_above, 0.0))
    p = np.maximum(2 * student_t.sf(z_zero * math.sqrt((n - 1) / n), n - 1), 1.0 / B)
    missing = ~np.isfinite(theta) | ~np.isfinite(theta_b).all(axis=-1)
    return np.where(missing, np.nan, low), np.where(missing, np.nan, high), np.where(missing, np.nan, p)


@dataclass(frozen=True)
class Test:
    """One paired comparison: the estimate, its interval and the p-value of H0: estimate = 0 (NaN where
    there are fewer than two samples)."""

    estimate: float
    low: float
    high: float
    p_value: float


def paired_test(resampled: Resampled, statistic: Statistic, level: float = LEVEL, bias_corrected: bool = True) -> Test:
    """The statistic of the totals with its interval and p-value (`interval`)."""
    n = resampled.n
    estimate = float(statistic(resampled.totals, n)) if n else math.nan
    if n < 2:
        return Test(estimate, math.nan, math.nan, math.nan)
    theta_b = statistic(resampled.boot.T, n)
    theta_jack = statistic(resampled.jack.T, n - 1)
    low, high, p = interval(np.asarray(estimate), theta_b, theta_jack, n, level, bias_corrected)
    return Test(estimate, float(low), float(high), float(p))


def difference_test(stack: Sequence[float], baseline: Sequence[float], seed: int, n_resamples: int = 1000) -> Test:
    """Stack minus baseline on the same samples: expanded BCa (measured coverage in docs/metrics.md)."""
    resampled = resample([stack, baseline], seed, n_resamples)
    return paired_test(resampled, mean_difference, bias_corrected=DIFFERENCE_BIAS_CORRECTED)


def interaction_test(resampled: Resampled) -> Test:
    """`log_interaction` of resampled (baseline, parts..., stack) totals: expanded percentile (measured
    coverage in docs/metrics.md)."""
    return paired_test(resampled, log_interaction, bias_corrected=INTERACTION_BIAS_CORRECTED)


def bh_qvalues(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) of one family; NaN p-values (no test) are left out
    of the family and stay NaN. q_(i) = min over j ≥ i of m p_(j) / j, at most 1."""
    p = np.asarray(p_values, dtype=float)
    q = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    if m == 0:
        return q
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q
