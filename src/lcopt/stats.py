"""Bootstrap statistics of the tables: a mean's CI, paired differences, and the compounding interaction.

Every interval is a 95% percentile bootstrap from `scipy.stats.bootstrap` (percentile, not BCa: BCa's
jackknife is undefined on the all-equal samples that synthetic tasks often give, e.g. a baseline at
100% on every sample, and percentile is what the per-cell CIs used before). Comparisons are *paired*:
`paired=True` draws one set of resampled sample ids per replicate and applies it to every array, so
a stack, its parts and the baseline are always resampled on the same samples and the sample-to-sample
variation they share cancels.

Every cell (model, dataset, stack, metric, ...) gets its own seed, `cell_seed(config seed, *key)`: the
replicates of two cells are independent draws, and a cell's interval does not move when another
cell is added to the config.

The compounding interaction (`expected_under_independence`) is measured on a retention scale; see there.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import bootstrap

LEVEL = 0.95


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


def paired_ci(
    arrays: Sequence[Sequence[float]],
    statistic: Callable[..., np.ndarray],
    seed: int,
    n_resamples: int = 1000,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile bootstrap CI of `statistic(*arrays, axis=-1)` where each replicate resamples the same
    positions (sample ids) in every array. The arrays are aligned by sample id and equally long.

    (nan, nan) for fewer than two samples: one sample has no spread to resample."""
    data = tuple(np.asarray(a, dtype=float) for a in arrays)
    if len({a.shape for a in data}) != 1 or data[0].ndim != 1:
        raise ValueError(f"paired arrays must be one-dimensional and equally long, got {[a.shape for a in data]}")
    if data[0].size < 2:
        return math.nan, math.nan
    result = bootstrap(
        data,
        statistic,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        paired=True,
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return float(low), float(high)


def mean_difference(stack: np.ndarray, baseline: np.ndarray, axis: int = -1) -> np.ndarray:
    """Stack minus baseline, each the mean over the same samples."""
    return np.mean(stack, axis=axis) - np.mean(baseline, axis=axis)


def expected_under_independence(baseline: np.ndarray | float, parts: Sequence[np.ndarray | float]) -> np.ndarray:
    """What a stack scores if its techniques act independently: the baseline times the product of the
    parts' retentions, `baseline × Π (part / baseline)` (Bliss independence: each technique keeps its own
    share of what the baseline gets right, whatever the others do).

    Why this scale: drops do not add (two techniques that each lose 60 points cannot lose 120), and a
    sum of drops reads "less than additive" where the parts do compound, while retentions multiply and
    stay in [0, 1] when no part beats the baseline. A logit scale would also stay inside, but is
    undefined at 0% and 100%, where synthetic baselines often are. The result is clipped to [0, 1]
    (scores are shares), which acts only where parts *improve* on a low baseline; a part that scores 0
    retains nothing (0, also against a 0 baseline), and parts above a 0 baseline give 1."""
    parts = [np.asarray(p, dtype=float) for p in parts]
    baseline = np.asarray(baseline, dtype=float)
    product = np.prod(np.stack(np.broadcast_arrays(*parts)), axis=0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        expected = product / baseline ** (len(parts) - 1)
    return np.clip(np.where(product == 0, 0.0, expected), 0.0, 1.0)


def interaction(baseline: np.ndarray, *rest: np.ndarray, axis: int = -1) -> np.ndarray:
    """Measured stack mean minus its expected mean under independence; `rest` is the parts' per-sample
    values, then the stack's, all on the same samples. < 0: the stack loses more than independent
    techniques would (they compound); > 0: less (one technique's loss covers the other's)."""
    *parts, stack = rest
    means = [np.mean(p, axis=axis) for p in parts]
    return np.mean(stack, axis=axis) - expected_under_independence(np.mean(baseline, axis=axis), means)


def excludes_zero(low: float | None, high: float | None) -> bool:
    """Whether an interval is distinguishable from zero (a missing interval is not)."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return False
    return low > 0 or high < 0
