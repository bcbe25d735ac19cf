"""`fp8kv`: the KV cache stored as float8 (e4m3), one scale per layer and KV head, the format that
production engines (vLLM's and TensorRT-LLM's FP8 KV cache) use.

Each layer keeps its keys and values as `torch.float8_e4m3fn` codes plus a float32 scale per (batch
row, KV head), for keys and values apart. The scale is chosen once, on the prefill: the largest
magnitude of that head's prefill states (over tokens and channels) divided by 448, e4m3's largest
finite value, so the prefill uses the whole range. It is then frozen, as in transformers' own
per-tensor `Fp8QuantizedLayer` does: later tokens are divided by the same scale and
appended, so no stored code is ever re-quantized. A later value beyond the prefill's range saturates
at +-448 x scale (float8_e4m3fn has no infinity; a plain cast would give NaN); `saturated` counts such
values per layer. States are dequantized on every read (the pure-PyTorch reference path); the prefill's
own attention uses the exact states, later steps read the cache.

`FP8StaticCache` is the fast engine's cache of the same format (preallocated, one scale per layer and KV
head from the prefill); its decode attention is the shared dense kernel (`lcopt.decode_attention`),
which folds the scales into the scores and the output.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

from lcopt.static_cache import StaticCache
from lcopt.techniques import CacheTechnique, register

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448


class FP8HeadLayer(DynamicLayer):
    """One layer's cache in float8 e4m3 with a frozen scale per (batch row, KV head). Self-contained on
    `DynamicLayer` (transformers' own `Fp8QuantizedLayer`, per tensor, is newer than some installs)."""

    def __init__(self):
        super().__init__()
        self.saturated = 0  # values of later tokens clipped to the prefill's range

    def _quantize(self, tensor: torch.Tensor, scale: torch.Tensor | None = None):
        """(batch, heads, tokens, head_dim) -> (float8 codes, float32 scale of shape (batch, heads, 1, 1))."""
        x = tensor.float()
        if scale is None:  # the prefill: calibrate each head on its own states
            scale = (x.abs().amax(dim=(-2, -1), keepdim=True) / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
        scaled = x / scale
        self.saturated += int((scaled.abs() > FP8_MAX).sum())
        return scaled.clamp(-FP8_MAX, FP8_MAX).to(FP8), scale

    def _dequantize(self, quantized) -> torch.Tensor:
        codes, scale = quantized
        return (codes.float() * scale).to(self.dtype)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._quantized_keys = self._quantize(key_states)
        self._quantized_values = self._quantize(value_states)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """The prefill's own attention gets the exact states; later steps read the dequantized cache."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.cumulative_length = key_states.shape[-2]
            return key_states, value_states
        self.cumulative_length += key_states.shape[-2]
        (keys, key_scale), (values, value_scale) = self._quantized_keys, self._quantized_values
        new_keys, _ = self._quantize(key_states, key_scale)
        new_values, _ = self._quantize(value_states, value_scale)
        self._quantized_keys = (torch.cat([keys, new_keys], dim=-2), key_scale)
        self._quantized_values = (torch.cat([values, new_values], dim=-2), value_scale)
        return self._dequantize(self._quantized_keys), self._dequantize(self._quantized_values)

    def get_seq_length(self) -> int:
        return self.cumulative_length if self.is_initialized else 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: the per-row scales move with their rows."""
        if not self.is_initialized:
            return
        (keys, key_scale), (values, value_scale) = self._quantized_keys, self._quantized_values
        idx = beam_idx.to(keys.device)
        self._quantized_keys = (keys.index_select(0, idx), key_scale.index_select(0, idx))
        self._quantized_values = (values.index_select(0, idx), value_scale.index_select(0, idx))

    def reset(self) -> None:
        super().reset()
        self.cumulative_length = 0
        self.saturated = 0


class FP8KVCache(Cache):
    """A `transformers` cache for any decoder with full attention: `generate(past_key_values=FP8KVCache(config))`."""

    def __init__(self, config):
        config = config.get_text_config(decoder=True)
        super().__init__(layers=[FP8HeadLayer() for _ in range(config.num_hidden_layers)])


class FP8StaticCache(StaticCache):
    """float8 e4m3 keys and values, a scale per (layer, KV head) from the prefill's absolute maximum."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, block_n=128, **kwargs)  # tiles of as many bytes as the dense cache's
        shape = (self.layers, self.kv_heads, self.max_len, self.head_dim)
        self.k = torch.zeros(shape, device=self.device, dtype=FP8)
        self.v = torch.zeros(shape, device=self.device, dtype=FP8)
        self.k_scale = torch.ones(self.layers, self.kv_heads, device=self.device, dtype=torch.float32)
        self.v_scale = torch.ones(self.layers, self.kv_heads, device=self.device, dtype=torch.float32)

    def bytes_per_token(self) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim

    @staticmethod
    def _scale(x: torch.Tensor) -> torch.Tensor:
        amax = x.float().abs().amax(dim=(-2, -1))
        return torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))

    @staticmethod
    def _encode(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return (x.float() / scale[:, None, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)

    def prefill(self, layer, keys, values):
        self.k_scale[layer] = self._scale(keys)
        self.v_scale[layer] = self._scale(values)
        self.k[layer, :, : keys.shape[1]] = self._encode(keys, self.k_scale[layer])
        self.v[layer, :, : values.shape[1]] = self._encode(values, self.v_scale[layer])

    def append(self, layer, key, value, index):  # index_copy_ has no float8 kernel: copy the bytes
        for cache, scale, x in ((self.k, self.k_scale, key), (self.v, self.v_scale, value)):
            encoded = self._encode(x[:, None], scale[layer]).view(torch.uint8)
            cache[layer].view(torch.uint8).index_copy_(1, index, encoded)

    def read(self, layer, length):
        k = self.k[layer, :, :length].float() * self.k_scale[layer][:, None, None]
        v = self.v[layer, :, :length].float() * self.v_scale[layer][:, None, None]
        return k.to(self.dtype), v.to(self.dtype)

    def _attend_fused(self, layer, q, length):
        return self.attention.dense(q, length, self.k[layer], self.v[layer], self.k_scale[layer], self.v_scale[layer])


class FP8KV(CacheTechnique):
    summary = (
        "KV cache in float8 e4m3 with a scale per layer and KV head, set on the prefill (amax / 448); "
        "later tokens saturate beyond it"
    )

    def reference_cache(self, model_config, options: dict) -> FP8KVCache:
        return FP8KVCache(model_config)

    def static_cache(self, model_config, options: dict, **engine_args):
        """The fast engine's float8 cache: the same scales, codes and saturation, in preallocated buffers."""
        return FP8StaticCache(**engine_args)


register(FP8KV("fp8kv"))
