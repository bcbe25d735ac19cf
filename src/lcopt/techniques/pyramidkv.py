"""`pyramidkv`: PyramidKV KV-cache eviction (Cai et al., 2024, arXiv 2406.02069; Zefan-Cai/KVCache-Factory's
`PyramidKVCluster`): SnapKV's scores and selection (`lcopt.techniques.snapkv`) with a budget that
shrinks linearly with depth, lower layers keeping more.

The schedule, as KVCache-Factory computes it from the configured budget C (window W included) for an
n-token prompt and L layers: m = C - W tokens chosen by score per layer on average; the last layer
gets m / beta, the first 2m - m / beta, the layers between an arithmetic sequence; when the first
layer's share exceeds the n - W positions before the window, it is capped there and the last layer's
raised to keep the mean. Prompts of at most C tokens are kept whole, and prompts shorter than 2m use
SnapKV's uniform budget (KVCache-Factory's own branches). Every layer also keeps the window. lcopt
rounds the real-valued sequence so that the layers' budgets sum to exactly L x C (KVCache-Factory
rounds the step down, which leaves the mean up to (L - 1) / 2 tokens above C).
"""

from __future__ import annotations

import math
from typing import ClassVar

from lcopt.techniques import register
from lcopt.techniques._eviction import BUDGET_SCHEMA, EvictionTechnique, budget_tokens
from lcopt.techniques.snapkv import SNAPKV_OPTIONS, snapkv_keep


def pyramid_budgets(n: int, budget: int, window: int, n_layers: int, beta: float) -> list[int]:
    """Tokens each layer keeps (window included) of an `n`-token prompt when the mean budget is `budget`."""
    if budget >= n:
        return [n] * n_layers
    m = budget - window
    if m <= 0 or n < 2 * m or n_layers == 1:
        return [budget] * n_layers
    low = m / beta
    high = 2 * m - low
    if high >= n - window:
        high = n - window
        low = 2 * m - high
    step = (high - low) / (n_layers - 1)
    shares = [high - layer * step for layer in range(n_layers)]
    floors = [math.floor(s) for s in shares]
    # largest remainders first (lower layers first among equals), so that the shares sum to L * m
    for layer in sorted(range(n_layers), key=lambda i: (floors[i] - shares[i], i))[: n_layers * m - sum(floors)]:
        floors[layer] += 1
    return [share + window for share in floors]


class PyramidKV(EvictionTechnique):
    summary = (
        "PyramidKV eviction: SnapKV's scores with per-layer budgets that shrink with depth (mean = the "
        "configured budget), each layer's cache sized to its own budget"
    )
    options_schema: ClassVar[dict] = {
        "description": "PyramidKV eviction options; KVCache-Factory's defaults",
        "properties": SNAPKV_OPTIONS
        | {
            "budget": BUDGET_SCHEMA
            | {
                "description": "tokens per KV head a layer keeps on average over the layers: a count (1 or more), "
                "or a share of the prompt (below 1)"
            },
            "beta": {
                "type": "number",
                "minimum": 1,
                "default": 20,
                "description": "the first layer's share over the last's is 2 beta - 1 (PyramidKV's beta: 20)",
            },
        },
    }

    def kept_counts(self, n, n_layers, options):
        budget = budget_tokens(options["budget"], n)
        return pyramid_budgets(n, budget, min(options["window"], n), n_layers, options["beta"])

    def keep(self, queries, keys, layer, n_layers, options):
        kept = self.kept_counts(keys.shape[1], n_layers, options)[layer]
        return snapkv_keep(queries, keys, kept, options)


register(PyramidKV("pyramidkv"))
