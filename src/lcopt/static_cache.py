"""Preallocated KV caches of the fast engine (`lcopt.engine`), one object for all layers, batch 1.

Each holds its tokens in the format a cache-side technique stores them in, sized once for the longest
sequence of a job, so that a decode step has static shapes and can be captured in a CUDA graph. This
module holds the interface (`StaticCache`) and the baseline's `DenseCache` (the model's own dtype);
a technique's own format lives beside it (`techniques/fp8kv.py`, `techniques/kivi/static.py`) and is
built through its `static_cache` hook.

`prefill` stores the exact states of the prompt (the prompt's own attention used them exactly);
`append` adds one token at the device cache index `index` (this layer's slot of the new token, which
need not equal its rotary position); `attend` is the decode attention over the first `length` tokens
of the layer (device tensors, so one captured graph serves every step). On a CPU, or with
`fused=False`, reads dequantize in torch (`decode_attention.attend_reference`).
"""

from __future__ import annotations

import torch


class StaticCache:
    """The interface the engine uses; subclasses hold the buffers of one format."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, max_len: int, q_heads: int, device, dtype,
                 fused: bool | None = None, block_n: int = 64):  # fmt: skip
        self.layers, self.kv_heads, self.head_dim, self.max_len = layers, kv_heads, head_dim, max_len
        self.device, self.dtype = torch.device(device), dtype
        # imported here: Triton loads when a cache is built, not when a technique module is
        from lcopt.decode_attention import triton

        self.fused = (triton is not None and self.device.type == "cuda") if fused is None else fused
        self.attention = None
        if self.fused:
            self.attention = self._attention(q_heads, block_n)

    def _attention(self, q_heads: int, block_n: int):
        """The fused decode attention's buffers and launch parameters (a format with its own kernel
        overrides this)."""
        from lcopt.decode_attention import DecodeAttention

        return DecodeAttention(q_heads, self.kv_heads, self.head_dim, self.max_len, self.device, self.dtype, block_n)

    def buffers(self) -> list[torch.Tensor]:
        return [v for v in vars(self).values() if isinstance(v, torch.Tensor)]

    @property
    def reserved_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def bytes_per_token(self) -> float:
        """Bytes the cache holds per token over all layers (quantized part; the residual window aside)."""
        raise NotImplementedError

    def bytes_for(self, length: int) -> int:
        """The bytes `length` tokens occupy (what a cache sized for exactly them would hold)."""
        return round(self.bytes_per_token() * length)

    def prefill(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        raise NotImplementedError

    def append(self, layer: int, key: torch.Tensor, value: torch.Tensor, index: torch.Tensor) -> None:
        """key, value [Hkv, D] of one new token into cache slot `index` (a device int64 tensor [1])."""
        raise NotImplementedError

    def read(self, layer: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `length` keys and values of a layer, dequantized: [Hkv, length, D]."""
        raise NotImplementedError

    def attend(self, layer: int, q: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """Decode attention of q [Hq, D] over the first `length` tokens -> [Hq, D]."""
        if not self.fused:
            from lcopt.decode_attention import attend_reference

            return attend_reference(q, *self.read(layer, int(length)))
        return self._attend_fused(layer, q, length)

    def _attend_fused(self, layer: int, q: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class DenseCache(StaticCache):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        shape = (self.layers, self.kv_heads, self.max_len, self.head_dim)
        self.k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v = torch.zeros(shape, device=self.device, dtype=self.dtype)

    def bytes_per_token(self) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.k.element_size()

    def prefill(self, layer, keys, values):
        self.k[layer, :, : keys.shape[1]] = keys
        self.v[layer, :, : values.shape[1]] = values

    def append(self, layer, key, value, index):
        self.k[layer].index_copy_(1, index, key[:, None])
        self.v[layer].index_copy_(1, index, value[:, None])

    def read(self, layer, length):
        return self.k[layer, :, :length], self.v[layer, :, :length]

    def _attend_fused(self, layer, q, length):
        return self.attention.dense(q, length, self.k[layer], self.v[layer])
