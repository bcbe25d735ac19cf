"""Simulated coverage of lcopt.stats' paired intervals: how often the 95% interval of a stack-vs-baseline
difference and of an interaction holds the true value, on samples drawn from a known population.
tests/test_coverage.py asserts it; docs/metrics.md quotes `python -m lcopt.coverage`.

A design draws, per sample, a baseline score and each part's multiplier independently: part = baseline ×
multiplier, stack = baseline × Π multipliers × extra. So the parts act independently and the true
interaction is log(E[extra]) (0 for `extra` = 1), and the true difference of part a from the baseline is
E[baseline] (E[multiplier a] - 1).

- Bernoulli scores: the baseline is right with probability `baseline`; a multiplier keeps the sample
  with probability `keep`, else loses it.
- F1-like scores (bounded, many ties and zeros): the baseline is 0 with probability 0.25, 1 with 0.35,
  else Beta(2, 2) rounded to twelfths; a multiplier keeps the sample whole with probability `keep`, loses
  it with `lose`, else keeps a uniform share rounded to sixths.

Vectorized: every replicate set of one chunk of repetitions is one array (counts of each sample id per
resample, the same draw `lcopt.stats.resample` makes, then totals by einsum); the intervals are
`lcopt.stats.interval`, the same code the tables use, for four methods: percentile and BCa, each plain
and expanded (`METHODS`). The tables use the one marked in `CHOSEN` for each statistic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri
from scipy.stats import t as student_t

from lcopt.stats import (
    DIFFERENCE_BIAS_CORRECTED,
    INTERACTION_BIAS_CORRECTED,
    LEVEL,
    interval,
    log_interaction,
    mean_difference,
)


@dataclass(frozen=True)
class Design:
    name: str
    kind: str  # "bernoulli" or "f1"
    part_a: tuple[float, float]  # (keep, lose); Bernoulli: lose = 1 - keep
    part_b: tuple[float, float]
    baseline: float = 0.7  # Bernoulli: P(right); F1-like: fixed mixture (mean 0.55)
    extra: float = 1.0  # the stack's own retention beyond its parts' (1: independent)

    def mean_baseline(self) -> float:
        return self.baseline if self.kind == "bernoulli" else 0.35 + 0.4 * 0.5

    @staticmethod
    def mean_multiplier(keep: float, lose: float) -> float:
        return keep + (1 - keep - lose) * 0.5

    def true_difference(self) -> float:
        return self.mean_baseline() * (self.mean_multiplier(*self.part_a) - 1)

    def true_interaction(self) -> float:
        return math.log(self.extra)

    def draw(self, n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
        """(reps, n, 4): baseline, part a, part b, stack per sample."""
        if self.kind == "bernoulli":
            base = (rng.random((reps, n)) < self.baseline).astype(float)
        else:
            u = rng.random((reps, n))
            middle = np.round(rng.beta(2, 2, (reps, n)) * 12) / 12
            base = np.where(u < 0.25, 0.0, np.where(u < 0.6, 1.0, middle))

        def multiplier(keep: float, lose: float) -> np.ndarray:
            u = rng.random((reps, n))
            share = np.round(rng.random((reps, n)) * 6) / 6
            return np.where(u < keep, 1.0, np.where(u < keep + lose, 0.0, share))

        a, b = multiplier(*self.part_a), multiplier(*self.part_b)
        extra = (rng.random((reps, n)) < self.extra).astype(float)
        return np.stack([base, base * a, base * b, base * a * b * extra], axis=-1)


# method -> (bias_corrected, expanded)
METHODS = {
    "percentile": (False, False),
    "BCa": (True, False),
    "expanded percentile": (False, True),
    "expanded BCa": (True, True),
}
STATISTICS = ("difference", "interaction")
CHOSEN = {
    "difference": "expanded BCa" if DIFFERENCE_BIAS_CORRECTED else "expanded percentile",
    "interaction": "expanded BCa" if INTERACTION_BIAS_CORRECTED else "expanded percentile",
}


@dataclass(frozen=True)
class Coverage:
    design: str
    n: int
    reps: int
    rates: dict[tuple[str, str], float]  # (statistic, method) -> share of repetitions whose interval holds the truth

    def chosen(self, statistic: str) -> float:
        """Coverage of the interval lcopt.stats uses for this statistic."""
        return self.rates[(statistic, CHOSEN[statistic])]

    @property
    def standard_error(self) -> float:
        """Binomial standard error of a coverage near the nominal level."""
        return math.sqrt(LEVEL * (1 - LEVEL) / self.reps)


def _unexpanded_level(n: int) -> float:
    """The level whose expanded z is the plain normal quantile of LEVEL: `interval` at it is the plain
    (unexpanded) interval."""
    z = float(ndtri(0.5 + LEVEL / 2))
    return 2 * float(student_t.cdf(z * math.sqrt((n - 1) / n), n - 1)) - 1


def simulate(
    designs: list[Design], n: int, reps: int, seed: int = 0, n_resamples: int = 1000, chunk: int = 20
) -> list[Coverage]:
    """Coverage of every design at n samples over `reps` repetitions, each with its own data and its own
    resamples (the designs of one repetition share its resample ids), for every method of METHODS."""
    rng = np.random.default_rng(seed)
    data = [d.draw(n, reps, rng) for d in designs]  # each (reps, n, 4)
    covered = {(i, stat, m): 0 for i in range(len(designs)) for stat in STATISTICS for m in METHODS}
    levels = {False: _unexpanded_level(n), True: LEVEL}
    for start in range(0, reps, chunk):
        r = min(chunk, reps - start)
        ids = rng.integers(0, n, (r, n_resamples, n))
        rows = np.arange(r * n_resamples).reshape(r, n_resamples, 1) * n
        counts = np.bincount((ids + rows).ravel(), minlength=r * n_resamples * n).reshape(r, n_resamples, n)
        x = np.concatenate([d[start : start + r] for d in data], axis=-1)  # (r, n, 4 D)
        boot = np.einsum("rbn,rnk->rbk", counts.astype(float), x).reshape(r, n_resamples, len(designs), 4)
        totals = x.sum(axis=1).reshape(r, len(designs), 4)
        jack = (x.sum(axis=1, keepdims=True) - x).reshape(r, n, len(designs), 4)
        for i, design in enumerate(designs):
            t, tb, tj = totals[:, i], boot[:, :, i], jack[:, :, i]
            for stat, statistic, columns, truth in [
                ("difference", mean_difference, [1, 0], design.true_difference()),  # part a vs the baseline
                ("interaction", log_interaction, [0, 1, 2, 3], design.true_interaction()),
            ]:
                theta = statistic(t[:, columns], n), statistic(tb[..., columns], n), statistic(tj[..., columns], n - 1)
                for method, (bias_corrected, expanded) in METHODS.items():
                    low, high, _ = interval(*theta, n, level=levels[expanded], bias_corrected=bias_corrected)
                    # closed, within rounding: on Bernoulli scores the ends sit on a lattice (multiples
                    # of 1/n) that the truth can hit exactly, and its last bit must not decide
                    holds = (low - 1e-9 <= truth) & (truth <= high + 1e-9)
                    covered[(i, stat, method)] += int(np.sum(holds))
    return [
        Coverage(d.name, n, reps, {(st, m): covered[(i, st, m)] / reps for st in STATISTICS for m in METHODS})
        for i, d in enumerate(designs)
    ]


# The designs the CI test asserts (tests/test_coverage.py): the difference on a true 10-point drop
# (bernoulli-10, f1-10), the interaction of independent parts that lose 30-60% (bernoulli-moderate,
# f1-moderate).
TESTED = [
    Design("bernoulli-10", "bernoulli", part_a=(6 / 7, 1 / 7), part_b=(0.8, 0.2)),
    Design("f1-10", "f1", part_a=(0.75, 0.12), part_b=(0.6, 0.2)),
    Design("bernoulli-moderate", "bernoulli", part_a=(0.6, 0.4), part_b=(0.5, 0.5), baseline=0.8),
    Design("f1-moderate", "f1", part_a=(0.5, 0.3), part_b=(0.4, 0.3)),
]
# More, for docs/metrics.md: a compounding stack (extra 0.8: true interaction log 0.8 = -0.22), a perfect
# baseline, and parts that lose little (few samples lost by both: the interaction's hard case).
REPORTED = [
    *TESTED,
    Design("bernoulli-compounding", "bernoulli", part_a=(0.6, 0.4), part_b=(0.5, 0.5), baseline=0.8, extra=0.8),
    Design("f1-compounding", "f1", part_a=(0.5, 0.3), part_b=(0.4, 0.3), extra=0.8),
    Design("bernoulli-perfect-baseline", "bernoulli", part_a=(0.5, 0.5), part_b=(0.5, 0.5), baseline=1.0),
    Design("bernoulli-small-losses", "bernoulli", part_a=(0.7, 0.3), part_b=(0.7, 0.3), baseline=0.9),
    Design("f1-small-losses", "f1", part_a=(0.6, 0.2), part_b=(0.7, 0.1)),
]


def main() -> None:
    """The table docs/metrics.md quotes: every design of REPORTED at n = 30 and 200, 2,000 repetitions,
    every method (the one lcopt.stats uses for each statistic marked *)."""
    reps = 2000
    se = 100 * math.sqrt(LEVEL * (1 - LEVEL) / reps)
    header = [f"{st} {m}{' *' if CHOSEN[st] == m else ''}" for st in STATISTICS for m in METHODS]
    print(f"Coverage of 95% intervals, % ({reps} repetitions, 1,000 resamples, seed 2026; SE ±{se:.1f})\n")
    print("| design | n | " + " | ".join(header) + " |")
    print("|---|---|" + "---|" * len(header))
    for n in (30, 200):
        for c in simulate(REPORTED, n, reps, seed=2026):
            cells = " | ".join(f"{100 * c.rates[(st, m)]:.1f}" for st in STATISTICS for m in METHODS)
            print(f"| {c.design} | {n} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
