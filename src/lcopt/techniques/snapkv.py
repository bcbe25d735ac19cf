"""`snapkv`: SnapKV KV-cache eviction (Li et al., 2024, arXiv 2404.14469; FasterDecoding/SnapKV's
`SnapKVCluster`).

After the prefill, each layer keeps, per KV head, the prompt's last `window` tokens (the observation
window) and the `budget - window` earlier tokens that the window's queries attend to most: the softmax
attention of each window query over the prompt (causal inside the window), summed over the window's
queries, smoothed by pooling over `kernel` neighbouring positions (`avgpool` or `maxpool`, centred, as
in SnapKV's code), top-k. Differences from SnapKV's code, all stated in docs/techniques.md:
- grouped-query attention: the pooled scores of the query heads that share a KV head are averaged into
  one score for that KV head (as kvpress's `SnapKVPress`), and one copy of each kept token is stored
  per KV head; SnapKV's code selects per query head on repeated keys and stores the repeated copies;
- scores are computed in float32 throughout (SnapKV's code casts the softmax back to the model's dtype
  before summing over the window);
- a budget at or below the window keeps the last `budget` tokens (SnapKV's code requires more).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F

from lcopt.techniques import register
from lcopt.techniques._eviction import BUDGET_SCHEMA, EvictionTechnique, kept_from_scores

SNAPKV_OPTIONS: dict = {
    "budget": BUDGET_SCHEMA,
    "window": {
        "type": "integer",
        "minimum": 1,
        "default": 32,
        "description": "the prompt's last tokens whose queries score the others; always kept (SnapKV's code: 32)",
    },
    "kernel": {
        "type": "integer",
        "minimum": 1,
        "default": 5,
        "description": "positions pooled around each score (odd; SnapKV's code: 5)",
    },
    "pooling": {"type": "string", "enum": ["avgpool", "maxpool"], "default": "avgpool"},
}


def window_scores(queries: torch.Tensor, keys: torch.Tensor, kernel: int, pooling: str) -> torch.Tensor:
    """SnapKV's score of each prompt position before the window, per KV head: [Hkv, n - W] (float32).

    `queries` [Hq, W, D] are the last W prompt tokens' queries, `keys` [Hkv, n, D] the prompt's keys,
    both after the rotary embedding. Computed one KV head at a time, so the attention weights held are
    [Hq / Hkv, W, n], not [Hq, W, n]."""
    hq, w, d = queries.shape
    hkv, n, _ = keys.shape
    if hq % hkv:
        raise ValueError(f"{hq} query heads are not a multiple of {hkv} KV heads")
    group, prefix = hq // hkv, n - w
    positions = torch.arange(n, device=keys.device)
    hidden = positions[None, :] > (prefix + torch.arange(w, device=keys.device))[:, None]  # causal, [W, n]
    pool = F.avg_pool1d if pooling == "avgpool" else F.max_pool1d
    scores = torch.empty(hkv, prefix, dtype=torch.float32, device=keys.device)
    for h in range(hkv):
        logits = queries[h * group : (h + 1) * group].float() @ keys[h].float().T / math.sqrt(d)  # [G, W, n]
        logits.masked_fill_(hidden, float("-inf"))
        summed = logits.softmax(dim=-1)[..., :prefix].sum(dim=1)  # [G, n - W]
        pooled = pool(summed[None], kernel_size=kernel, padding=kernel // 2, stride=1)[0]
        scores[h] = pooled.mean(dim=0)
    return scores


def snapkv_keep(queries: torch.Tensor | None, keys: torch.Tensor, kept: int, options: dict) -> torch.Tensor:
    """The positions SnapKV keeps per KV head, given the layer's budget `kept`: [Hkv, kept], sorted."""
    n = keys.shape[1]
    window = min(options["window"], n)
    if kept >= n or kept <= window:
        return kept_from_scores(keys.new_empty(keys.shape[0], 0), n, kept, window)
    if queries is None:
        raise ValueError("SnapKV needs the window's queries: run generate inside EvictionCache.watch(model)")
    if queries.shape[1] != window:
        raise ValueError(f"SnapKV expects the queries of the prompt's last {window} tokens, got {queries.shape[1]}")
    scores = window_scores(queries, keys, options["kernel"], options["pooling"])
    return kept_from_scores(scores, n, kept, window)


class SnapKV(EvictionTechnique):
    summary = (
        "SnapKV eviction: after the prefill each layer keeps the tokens the prompt's last window attends "
        "to most (pooled scores, one per KV head) plus that window, freeing the rest"
    )
    options_schema: ClassVar[dict] = {
        "description": "SnapKV eviction options; SnapKV's code's defaults",
        "properties": SNAPKV_OPTIONS,
    }

    def keep(self, queries, keys, layer, n_layers, options):
        kept = self.kept_counts(keys.shape[1], n_layers, options)[layer]
        return snapkv_keep(queries, keys, kept, options)


register(SnapKV("snapkv"))
