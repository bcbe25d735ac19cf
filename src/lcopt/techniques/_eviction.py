"""What the KV-cache eviction methods (`snapkv`, `streamingllm`, `pyramidkv`) share.

An eviction method decides, once, after the prefill, which prompt tokens each layer keeps for each KV
head; decoding then reads (and appends to) only those. Each method is one pure function, `keep`:
(queries of the last `window` prompt tokens after the rotary embedding [Hq, W, D], the layer's keys
after the rotary embedding [Hkv, n, D], layer index, layer count, options) -> the kept positions per KV
head [Hkv, kept], sorted. The same function serves both engines:

- the reference path (`transformers`' `generate`): `EvictionCache` wraps the layers of the stack's
  cache representation (transformers' `DynamicLayer`, lcopt's reference KIVI or float8 layers). A
  forward pre-hook on each attention module (`EvictionCache.watch`) computes the window's queries from
  the module's own `q_proj` and the rotary `position_embeddings` it is called with; the layer's first
  `update` (the prefill) selects, hands only the kept keys and values to the representation, and
  returns the full states for the prefill's own attention, as SnapKV does;
- the fast engine (`lcopt.engine`): its prefill calls `keep` on each layer's states and writes only the
  kept tokens into a cache sized for them (`kept_counts`), so the memory is freed, not masked.

Kept tokens keep their original rotary phases, and new tokens continue at the prompt's absolute
positions (so `get_seq_length` is the number of tokens seen, and `get_mask_sizes` the number stored).
Budgets are per layer and the same for every KV head of a layer (none of these three methods needs
head-wise budgets). One copy per KV head is stored: with grouped-query attention, a method that scores
by attention takes the mean score of the query heads that share the KV head (as NVIDIA's kvpress
does), never a repeated copy per query head (as SnapKV's own code stores).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicLayer

from lcopt.techniques.base import CacheTechnique, OptionError

BUDGET_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 1},
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    ],
    "default": 2048,
    "description": "tokens each layer keeps per KV head: a count (1 or more), or a share of the prompt (below 1)",
}


def budget_tokens(budget: float, n: int) -> int:
    """Tokens a layer keeps of an `n`-token prompt: `budget` tokens, or below 1 that share of the prompt
    (rounded down, as kvpress does, at least 1); never more than the prompt."""
    kept = int(budget * n) if budget < 1 else int(budget)
    return max(1, min(kept, n))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def window_queries(attn: torch.nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The queries of a Llama-style attention module for the normed hidden states `hidden` [1, W, hidden]
    at the rotary phases `cos`, `sin` [1, W, D]: [Hq, W, D], after the rotary embedding (the module's own
    `apply_rotary_pos_emb`). Both engines call this on the prompt's last W tokens, so they score alike."""
    if not hasattr(attn, "q_proj"):
        raise ValueError(
            f"{type(attn).__name__} has no q_proj: eviction by attention scores needs Llama-style attention"
        )
    w = hidden.shape[1]
    q = attn.q_proj(hidden).view(1, w, -1, attn.head_dim).transpose(1, 2)
    apply = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb", None)
    if apply is None:
        return (q * cos[:, None] + rotate_half(q) * sin[:, None])[0]
    return apply(q, q, cos, sin)[0][0]


class EvictionTechnique(CacheTechnique):
    """A cache-side technique that chooses which prompt tokens each layer keeps; the stack's
    representation (or bf16) stores them. Subclasses set `options_schema` (with `budget`) and implement
    `keep`; `window` says how many of the prompt's last queries `keep` reads (0: none)."""

    role: ClassVar[str | None] = "eviction"

    def window(self, options: dict) -> int:
        return options.get("window", 0)

    def kept_counts(self, n: int, n_layers: int, options: dict) -> list[int]:
        """Tokens each layer keeps (per KV head) of an `n`-token prompt: what the fast engine sizes its
        caches for. The same budget for every layer unless a method overrides it (pyramidkv)."""
        return [budget_tokens(options["budget"], n)] * n_layers

    def keep(
        self, queries: torch.Tensor | None, keys: torch.Tensor, layer: int, n_layers: int, options: dict
    ) -> torch.Tensor:
        """Kept positions per KV head [Hkv, kept_counts(n)[layer]], sorted, int64 on the keys' device."""
        raise NotImplementedError

    def check_options(self, options: dict) -> None:
        if "kernel" in options and options["kernel"] % 2 == 0:
            raise OptionError(
                "kernel", f"{options['kernel']} is even; the pooling window is centred, so it must be odd (e.g. 5, 7)"
            )

    def reference_cache(self, model_config: Any, options: dict, inner: Cache | None = None) -> EvictionCache:
        """`generate`'s cache: the layers of `inner` (the stack's representation; None: transformers'
        DynamicLayer, the model's dtype) behind this method's selection."""
        config = model_config.get_text_config(decoder=True)
        n_layers = config.num_hidden_layers
        layers = inner.layers if inner is not None else [DynamicLayer() for _ in range(n_layers)]
        if len(layers) != n_layers:
            raise ValueError(f"the representation's cache has {len(layers)} layers, the model {n_layers}")
        wrapped = [
            EvictingLayer(layer, functools.partial(self.keep, layer=i, n_layers=n_layers, options=dict(options)))
            for i, layer in enumerate(layers)
        ]
        return EvictionCache(wrapped, self.window(options))


def kept_from_scores(scores: torch.Tensor, n: int, kept: int, window: int) -> torch.Tensor:
    """SnapKV's selection: the last `window` positions of an `n`-token prompt always, plus the
    `kept - window` best-scored of the positions before them (`scores` [Hkv, n - window]); all `n`
    when `kept >= n`; the last `kept` when `kept <= window`. Sorted, [Hkv, kept]."""
    heads = scores.shape[0]
    device = scores.device
    if kept >= n:
        return torch.arange(n, device=device).expand(heads, n).contiguous()
    if kept <= window:
        return torch.arange(n - kept, n, device=device).expand(heads, kept).contiguous()
    best = scores.topk(kept - window, dim=-1).indices
    recent = torch.arange(n - window, n, device=device).expand(heads, window)
    return torch.cat([best.sort(dim=-1).values, recent], dim=-1)


class EvictingLayer(CacheLayerMixin):
    """One layer of `EvictionCache`: the prefill's states go through `keep` into `inner`, which stores
    (and may quantize) only the kept tokens; later tokens are appended to `inner` unchanged."""

    is_sliding = False
    is_compileable = False

    def __init__(self, inner: CacheLayerMixin, keep: Callable[[torch.Tensor | None, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.inner = inner
        self._keep = keep
        self.queries: torch.Tensor | None = None  # the prefill's window queries, set by EvictionCache.watch
        self.seen = 0  # tokens this layer has been given: the prompt's absolute length, then + decoded tokens
        self.kept_tokens = 0  # prompt tokens kept (per KV head)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if self.seen:
            self.seen += key_states.shape[-2]
            return self.inner.update(key_states, value_states, *args, **kwargs)
        if key_states.shape[0] != 1:
            raise ValueError(f"eviction runs with batch 1, got a batch of {key_states.shape[0]}")
        self.lazy_initialization(key_states, value_states)
        self.seen = key_states.shape[-2]
        index = self._keep(self.queries, key_states[0])
        self.queries = None
        gather = index[..., None].expand(-1, -1, key_states.shape[-1])
        kept_keys = key_states[0].gather(1, gather)[None]
        kept_values = value_states[0].gather(1, gather)[None]
        self.kept_tokens = index.shape[-1]
        self.inner.update(kept_keys, kept_values, *args, **kwargs)
        return key_states, value_states  # the prefill attends to every prompt token, as in SnapKV

    def get_seq_length(self) -> int:
        """Tokens seen: new tokens continue at the prompt's absolute positions (rotary phases, masks)."""
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(keys the attention gets, offset): the stored tokens plus the new ones, placed so that the last
        key's position is the last query's (every kept key is in the past of every new query)."""
        stored = self.inner.get_seq_length() if self.seen else 0
        return stored + query_length, self.seen - stored

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.inner.reset()
        self.queries, self.seen, self.kept_tokens = None, 0, 0
        self.is_initialized = False


class EvictionCache(Cache):
    """A `transformers` cache whose layers keep only what an eviction method selects at the prefill.
    `generate` must run inside `watch(model)`, which gives the layers the window's queries."""

    def __init__(self, layers: list[EvictingLayer], window: int):
        super().__init__(layers=layers)
        self.window = window

    @contextlib.contextmanager
    def watch(self, model: torch.nn.Module) -> Iterator[None]:
        """Forward pre-hooks on the decoder's attention modules that hand each layer the queries of the
        prompt's last `window` tokens at its prefill (none for a method that reads no queries); removed
        on exit, however `generate` ends."""
        if not self.window:
            yield
            return
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        attentions = [layer.self_attn for layer in decoder.layers]
        if len(attentions) != len(self.layers):
            raise ValueError(f"the model has {len(attentions)} attention layers, the cache {len(self.layers)}")

        def stash(layer: EvictingLayer, module, args, kwargs) -> None:
            if layer.seen:
                return
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            cos, sin = kwargs["position_embeddings"]
            w = min(self.window, hidden.shape[1])
            layer.queries = window_queries(module, hidden[:, -w:], cos[:, -w:], sin[:, -w:])

        handles = [
            attn.register_forward_pre_hook(functools.partial(stash, layer), with_kwargs=True)
            for attn, layer in zip(attentions, self.layers, strict=True)
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def kept_tokens(self) -> list[int]:
        """Prompt tokens each layer kept (per KV head) at the last prefill."""
        return [layer.kept_tokens for layer in self.layers]


class Evictor:
    """An eviction method bound to its options, as the fast engine uses it."""

    def __init__(self, technique: EvictionTechnique, options: dict):
        self.technique, self.options = technique, dict(options)
        self.window = technique.window(self.options)

    def kept_counts(self, n: int, n_layers: int) -> list[int]:
        return self.technique.kept_counts(n, n_layers, self.options)

    def keep(self, queries: torch.Tensor | None, keys: torch.Tensor, layer: int, n_layers: int) -> torch.Tensor:
        return self.technique.keep(queries, keys, layer, n_layers, self.options)
