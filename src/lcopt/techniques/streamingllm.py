"""`streamingllm`: StreamingLLM's cache (Xiao et al., 2023, arXiv 2309.17453) applied once, after the
prefill: each layer keeps the first `sinks` tokens (the attention sinks) and the most recent
`budget - sinks` prompt tokens, then appends every new token (the cache grows by the answer, as with
the other eviction methods here; StreamingLLM itself also evicts while it decodes).

Kept tokens keep their original rotary phases and new tokens continue at their absolute positions. The
paper instead re-positions the cache (positions within the cache, not in the text), which needs the
keys stored before the rotary embedding; kvpress's `StreamingLLMPress` does not either (it offers a
separate key re-rotation press).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from lcopt.techniques import register
from lcopt.techniques._eviction import BUDGET_SCHEMA, EvictionTechnique


def streaming_keep(n: int, kept: int, sinks: int, heads: int, device=None) -> torch.Tensor:
    """The first `sinks` and the last `kept - sinks` of `n` positions, for every head: [heads, kept]."""
    kept = min(kept, n)
    first = min(sinks, kept)
    positions = torch.cat([torch.arange(first, device=device), torch.arange(n - (kept - first), n, device=device)])
    return positions.expand(heads, kept).contiguous()


class StreamingLLM(EvictionTechnique):
    summary = (
        "StreamingLLM eviction after the prefill: each layer keeps the first sink tokens and the most "
        "recent ones, original positions"
    )
    options_schema: ClassVar[dict] = {
        "description": "StreamingLLM eviction options",
        "properties": {
            "budget": BUDGET_SCHEMA,
            "sinks": {
                "type": "integer",
                "minimum": 0,
                "default": 4,
                "description": "the prompt's first tokens always kept (StreamingLLM's attention sinks: 4)",
            },
        },
    }

    def window(self, options: dict) -> int:
        return 0  # reads no queries

    def keep(self, queries, keys, layer, n_layers, options):
        kept = self.kept_counts(keys.shape[1], n_layers, options)[layer]
        return streaming_keep(keys.shape[1], kept, options["sinks"], keys.shape[0], keys.device)


register(StreamingLLM("streamingllm"))
